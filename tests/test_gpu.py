"""The CUDA paths on a real GPU: skipped without one, and in the normal suite, which hides GPUs
(tests/conftest.py). benchmarks/gpu_check.sh runs them with SIGLIP_SEARCH_TEST_GPU=1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from indexer_fixtures import draw_photo, make_photo_folder

from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.search import Searcher
from siglip_search.embedder import Embedder
from siglip_search.modes import INTERCHANGEABLE_COSINE
from siglip_search.resources import DEMO_MODEL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")

TEXTS = ["a red circle", "two small blue squares", "a yellow star on a striped background", ""]


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_fp16_and_bf16_on_the_gpu_stay_within_the_family_cosine_of_fp32_on_the_cpu(
    tiny_checkpoint, which
):
    model = tiny_checkpoint if which == "tiny" else DEMO_MODEL
    cpu = Embedder.from_pretrained(model, mode="fp32", device="cpu")
    images = [draw_photo(seed, (320, 240)) for seed in range(16)]
    reference = (cpu.embed_images(images), cpu.embed_texts(TEXTS))
    modes = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    for mode in modes:
        gpu = Embedder.from_pretrained(model, mode=mode, device="cuda")
        assert gpu.device.type == "cuda" and gpu.describe().startswith("cuda:")
        computed = (gpu.embed_images(images), gpu.embed_texts(TEXTS))
        for ours, theirs in zip(computed, reference, strict=True):
            assert (ours * theirs).sum(axis=1).min() >= INTERCHANGEABLE_COSINE, mode


def test_the_gpu_gets_pinned_batches_and_a_batch_size_it_measured(tiny_checkpoint):
    gpu = Embedder.from_pretrained(tiny_checkpoint, device="cuda")
    assert gpu.mode == "fp16"
    pixels = gpu.pixel_array(8)
    assert torch.from_numpy(pixels).is_pinned()
    pixels[:] = np.stack([gpu.preprocess_image(draw_photo(i)) for i in range(8)])
    vectors = gpu.embed_pixels(pixels)
    assert vectors.shape == (8, gpu.dim) and np.isfinite(vectors).all()
    assert gpu.batch_size >= 32 and gpu.batch_size & (gpu.batch_size - 1) == 0  # a power of two


def test_a_library_indexed_on_the_gpu_is_searched_on_the_cpu(tmp_path, tiny_checkpoint):
    photos = make_photo_folder(tmp_path / "photos")
    with open_library(tmp_path / "library") as library, lock_library(library):
        gpu = library.load_embedder(tiny_checkpoint, device="cuda")
        summary = index_paths(library, [tmp_path / "photos"], gpu, progress=False)
        assert summary.added == len(photos) and "; cuda:" in summary.line()
    with open_library(tmp_path / "library", create=False) as library:
        searcher = Searcher(library, device="cpu")
        for rel, path in photos.items():
            best = searcher.search_image(path, k=1).hits[0]
            assert best.rel_path == rel and best.cosine >= INTERCHANGEABLE_COSINE
        assert searcher.embedder.device.type == "cpu" and searcher.embedder.mode == "fp32"
