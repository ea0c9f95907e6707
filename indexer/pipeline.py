"""The local indexing pipeline, which keeps the model fed: photos are prepared (fingerprinted,
decoded, reduced, preprocessed) by a pool of threads or processes, one per core, through a bounded
prefetch queue and in order; the main thread embeds each batch on the embedder's device; a writer
thread commits each batch while the next one embeds.

    decode pool --(prefetch: ordered, bounded)--> batches --> model (main thread) --> writer thread

An exception in a decode worker, the model or the writer ends the run with that exception after
the batches committed before it (a worker process that died is DecodeWorkerError, one line):
nothing waits for a worker that will not answer, and the photos still queued are not decoded.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from .batches import Batch, RunSummary, commit_batch, iter_batches
from .errors import DecodeWorkerError
from .prepare import Prepared, Preparer, Work
from .progress import progress_bar
from .store import Store

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder

T = TypeVar("T")
R = TypeVar("R")

POOLS = ("threads", "processes")


# Decode workers at most: a decode thread holds Python's lock for about 4 % of its time (12 MP
# JPEGs, py-spy), so threads stop scaling near 25; and each worker holds a decoded photo.
MAX_WORKERS = 32


def default_workers() -> int:
    """One decode worker per core this process may run on, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def decode_pool(workers: int, kind: str = "threads") -> Executor:
    """A pool of `workers` decode threads or processes. Processes are forked where the system
    can (Linux), as PyTorch's DataLoader forks its workers: a child starts in milliseconds with
    every module imported, and never runs torch. Elsewhere they are spawned."""
    if kind == "threads":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    if kind != "processes":
        raise ValueError(f"pool must be one of {POOLS}, got {kind!r}")
    fork = sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def prefetch(
    pool: Executor,
    fn: Callable[[T], R],
    items: Iterable[T],
    window: int,
    describe: Callable[[T], str] = str,
) -> Iterator[R]:
    """fn over items in the pool, results in order, at most `window` items in flight: memory
    stays flat however many items. fn's exception is raised here, at its item; a worker process
    that died is DecodeWorkerError naming describe(item). The items queued behind are cancelled."""
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            try:
                pending.append((item, pool.submit(fn, item)))
            except BrokenExecutor:
                pending.append((item, Future()))  # named below if nothing is before it
                raise
            if len(pending) >= window:
                yield _next_result(pending)
        while pending:
            yield _next_result(pending)
    except BrokenExecutor:
        raise DecodeWorkerError(describe(pending[0][0])) from None
    finally:
        for _, future in pending:
            future.cancel()


def _next_result(pending: deque[tuple[T, Future[R]]]) -> R:
    result = pending[0][1].result()
    pending.popleft()
    return result


class RemoteExecutor(Protocol):
    """Prepares and embeds a job's photos somewhere else (indexer.ray_executor.RayExecutor): it
    yields them in order with `vector` set, and they are committed as the local ones are."""

    def prepare(
        self, work: list[Work], embedder: Embedder, batch_size: int, max_pixels: int | None
    ) -> Iterator[Prepared]: ...


def embed_and_commit(
    store: Store,
    embedder: Embedder,
    work: list[Work],
    pool: Executor,
    *,
    batch_size: int,
    workers: int,
    max_pixels: int | None,
    summary: RunSummary,
    progress: bool,
    on_progress: Callable[[int, int], None] | None = None,
    remote: RemoteExecutor | None = None,
) -> None:
    """Prepare `work` in `pool`, embed it batch by batch and commit each batch, in order. With
    `remote`, it prepares and embeds instead, and only the commits run here."""
    prepared: Iterable[Prepared]
    if remote is None:
        preparer = Preparer(embedder.image_processor, embedder.image_size, max_pixels)
        # One batch ahead of the one embedding, and two photos a worker besides.
        window = batch_size + 2 * workers
        prepared = prefetch(pool, preparer, work, window, describe=lambda w: w.file.path)
    else:
        prepared = remote.prepare(work, embedder, batch_size, max_pixels)
    pixels = embedder.pixel_array(batch_size)  # reused: each batch is copied in before it embeds
    bar = _Progress(len(work), summary, progress, on_progress, f"indexing on {summary.device}")
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as writer:
        in_flight: tuple[Future[None], int] | None = None
        for batch in iter_batches(prepared, batch_size):
            vectors = _embed(embedder, batch, pixels)
            if in_flight is not None:
                bar.committed(*in_flight)
            commit = writer.submit(commit_batch, store, batch, vectors, embedder.model_id, summary)
            in_flight = commit, len(batch)
        if in_flight is not None:
            bar.committed(*in_flight)
        bar.finish()


def _embed(embedder: Embedder, batch: Batch, pixels: np.ndarray) -> np.ndarray:
    """(len(batch.ready), dim) vectors of the batch's photos, embedded as one full-size batch."""
    if not batch.ready:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    if batch.embedded_elsewhere:
        return batch.take_vectors()  # (B, dim): the local model does not run
    return embedder.embed_pixels(batch.take_pixels(pixels))[: len(batch.ready)]


class _Progress:
    """The progress bar (on a terminal only) and on_progress(done, total), after each commit."""

    def __init__(
        self,
        total: int,
        summary: RunSummary,
        progress: bool,
        on_progress: Callable[[int, int], None] | None,
        desc: str,
    ) -> None:
        self.total, self.done, self.summary, self.on_progress = total, 0, summary, on_progress
        self.bar = progress_bar(total, desc, "img", progress)
        if on_progress is not None:
            on_progress(0, total)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.bar.close()

    def committed(self, commit: Future[None], files: int) -> None:
        """Wait for a batch's commit (its error is raised here), then count its files."""
        commit.result()
        self.done += files
        self.bar.set_postfix(failed=self.summary.failed, refresh=False)
        self.bar.update(files)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def finish(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.total, self.total)
