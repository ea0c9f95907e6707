"""Batches split across cores: same vectors, single-threaded workers, the caller's threading untouched."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import torch
from PIL import Image

from siglip_search.embedder import Embedder
from siglip_search.parallel import RowParallel

TEXTS = [
    "a red circle",
    "two small blue squares",
    "a photo of a yellow star",
    "",
    "a green heart",
    "x",
]


def test_a_split_batch_gives_the_rows_of_the_whole_batch_in_order():
    rows = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)
    seen = []

    def double(chunk):
        seen.append(len(chunk))
        return chunk * 2

    out = RowParallel(3)(double, rows)
    assert torch.equal(out, rows * 2)
    assert sorted(seen) == [2, 2, 3]
    assert torch.equal(RowParallel(3)(lambda c: c + 1, rows[:1]), rows[:1] + 1)  # one row: no split


def test_workers_run_single_threaded_and_leave_the_callers_threading_as_it_was():
    before = torch.get_num_threads()
    inside = RowParallel(2)(
        lambda chunk: torch.full((len(chunk),), float(torch.get_num_threads())), torch.zeros(4, 1)
    )
    assert inside.tolist() == [1.0] * 4
    assert torch.get_num_threads() == before
    later = []  # a thread started afterwards takes the process default, not the workers' 1
    thread = threading.Thread(
        target=lambda: (torch.zeros(2).add_(1), later.append(torch.get_num_threads()))
    )
    thread.start()
    thread.join()
    assert later == [before]


def test_embedder_vectors_are_the_same_split_across_cores_or_not(tiny_checkpoint):
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(5)]
    split = Embedder.from_pretrained(tiny_checkpoint)
    split._rows = RowParallel(3)
    whole = Embedder.from_pretrained(tiny_checkpoint)
    whole._rows = RowParallel(1)
    np.testing.assert_allclose(split.embed_images(images), whole.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(split.embed_texts(TEXTS), whole.embed_texts(TEXTS), atol=1e-6)
    bf16 = Embedder.from_pretrained(tiny_checkpoint, mode="bf16")  # autocast reaches the workers
    bf16._rows = RowParallel(3)
    assert not np.array_equal(bf16.embed_texts(TEXTS), split.embed_texts(TEXTS))
    assert ((bf16.embed_texts(TEXTS) * split.embed_texts(TEXTS)).sum(1) > 0.99).all()


def test_a_forked_child_gets_workers_of_its_own():
    split = RowParallel(2)
    rows = torch.arange(6, dtype=torch.float32)
    assert torch.equal(split(lambda c: c * 3, rows), rows * 3)  # the parent's workers now exist
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=lambda: results.put(split(lambda c: c * 3, rows).tolist()))
    child.start()
    try:
        # the parent's threads do not exist here
        assert results.get(timeout=60) == (rows * 3).tolist()
    finally:
        child.join(timeout=10)
        child.kill()
