"""The pipeline that keeps the model fed: decode workers (threads or processes) ahead of the model
through a bounded, ordered prefetch queue; a bad file in the middle of a batch is a failed row; an
exception or a dead worker ends the run in one line, without a hang, keeping committed batches."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from indexer_fixtures import db_rows, draw_photo, fails_after

from indexer.errors import DecodeWorkerError
from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.pipeline import decode_pool, prefetch
from indexer.status import library_status
from siglip_search.cli import main


def _slower_for_earlier(i: int) -> int:
    time.sleep(0.002 * (10 - i % 10))  # later items finish first
    return i * i


def _fails_at_five(i: int) -> int:
    if i == 5:
        raise ValueError(f"bad item {i}")
    return i


def _dies_at_three(i: int) -> int:
    if i == 3:
        os._exit(1)  # a decoder that crashes takes its process with it
    time.sleep(0.05)
    return i


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_prefetch_keeps_the_order_and_never_runs_more_than_its_window_ahead(kind):
    started: list[int] = []
    consumed = 0
    with decode_pool(3, kind) as pool:

        def submitting(items):
            for i in items:
                started.append(i)
                yield i

        for i, result in enumerate(prefetch(pool, _slower_for_earlier, submitting(range(40)), 5)):
            assert result == i * i  # in order, though later items finish first
            consumed += 1
            assert len(started) - consumed <= 5  # bounded: memory stays flat
    assert consumed == 40


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_an_exception_in_a_worker_is_raised_at_its_item_and_nothing_hangs(kind):
    got: list[int] = []
    with fails_after(60), decode_pool(2, kind) as pool:
        with pytest.raises(ValueError, match="bad item 5"):
            for result in prefetch(pool, _fails_at_five, range(1000), window=4):
                got.append(result)
    assert got == [0, 1, 2, 3, 4]


def test_a_worker_process_that_dies_is_one_line_naming_the_item_not_a_hang():
    with fails_after(60), decode_pool(2, "processes") as pool:
        with pytest.raises(DecodeWorkerError) as info:
            list(prefetch(pool, _dies_at_three, range(20), window=4, describe=lambda i: f"#{i}"))
    message = str(info.value)
    assert "a decode worker process died while preparing #" in message and "\n" not in message


def _folder_with_a_bad_file_mid_batch(folder: Path) -> None:
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.jpg", "d.png", "e.webp", "f.png", "g.png", "h.jpg"]):
        draw_photo(i, (96, 72)).save(folder / name)
    (folder / "c.jpg").write_text("not a photo")  # sorted third: inside the first batch of 4


@pytest.mark.parametrize("kind, workers", [("threads", 1), ("threads", 2), ("processes", 2)])
def test_a_bad_file_in_the_middle_of_a_batch_is_a_failed_row_and_pools_agree_bit_for_bit(
    tmp_path, embedder, kind, workers
):
    photos = tmp_path / "photos"
    _folder_with_a_bad_file_mid_batch(photos)
    reference = tmp_path / "reference"
    with open_library(reference) as library, lock_library(library):
        index_paths(library, [photos], embedder, batch_size=4, workers=1, progress=False)
    with open_library(tmp_path / kind) as library, lock_library(library):
        summary = index_paths(
            library, [photos], embedder, batch_size=4, workers=workers, pool=kind, progress=False
        )
        assert (summary.added, summary.failed) == (7, 1)
        [failure] = library_status(library).failed
        assert failure.path.endswith("c.jpg") and failure.reason.startswith("not an image")
    assert db_rows(tmp_path / kind) == db_rows(reference)  # paths, statuses, vector bytes


def test_a_killed_decode_process_ends_the_run_in_one_line_and_the_rerun_resumes(
    tmp_path, tiny_checkpoint, embedder, capsys
):
    photos = tmp_path / "photos"
    photos.mkdir()
    # Enough photos that the decode window (batch + 2 x workers) is still full when a worker dies.
    for i in range(96):
        draw_photo(i, (96, 72)).save(photos / f"img_{i:03d}.png")
    library_dir = tmp_path / "library"
    killed = threading.Event()

    def kill_a_worker(done: int, total: int) -> None:
        if done and not killed.is_set():  # after the first batch is committed
            children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
            # A forked decode worker runs our own command line; other children (multiprocessing's
            # resource tracker, a server another test started) do not.
            ours = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
            workers = [c for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == ours]
            os.kill(int(workers[0]), signal.SIGKILL)
            killed.set()

    with fails_after(120), open_library(library_dir) as library, lock_library(library):
        with pytest.raises(DecodeWorkerError, match="a decode worker process died while preparing"):
            index_paths(
                library,
                [photos],
                embedder,
                batch_size=2,
                workers=2,
                pool="processes",
                progress=False,
                on_progress=kill_a_worker,
            )
        committed = library_status(library).images
    assert killed.is_set() and 2 <= committed < 96
    args = ["index", str(photos), "--library", str(library_dir), "--no-progress", "--pool"]
    assert main([*args, "processes", "--batch-size", "2"]) == 0
    assert f"added {96 - committed}, updated 0" in capsys.readouterr().out
