"""The indexing job: scan the targets (targets.py), diff against the store, embed what is new or
changed, write per batch.

Above ~400 lines, kept whole: the run's stages (diff, moves, decode threads, embed and write) share
the private _Work and _Prepared and count into one RunSummary; which folders a run scans already
lives in targets.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar

import numpy as np
from tqdm import tqdm

from siglip_search.errors import InputError

from .decode import DEFAULT_MAX_PIXELS, decode_image, refused_pixel_count
from .errors import DecodeError, NotRegularFileError
from .library import Library
from .scan import (
    ScannedFile,
    check_utf8_path,
    fingerprint_file,
    is_root_online,
    scan_folder,
)
from .store import EmbeddedImage, FailedImage, FileState, FileUpdate, Store
from .targets import Target, drop_vanished_empty_roots, nested_prefixes, resolve_targets, within

if TYPE_CHECKING:
    from PIL import Image

    from siglip_search.embedder import Embedder

T = TypeVar("T")
R = TypeVar("R")


class RunCounts(TypedDict):
    """A run's counts as the runs table keeps them (Store.finish_run's keyword arguments)."""

    added: int
    updated: int
    moved: int
    removed: int
    failed: int


@dataclass
class RunSummary:
    added: int = 0
    updated: int = 0  # changed files, re-embedded
    moved: int = 0  # moved or renamed: vector kept
    removed: int = 0
    failed: int = 0  # files that failed in this run
    unchanged: int = 0
    offline_roots: list[str] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)  # absolute; their rows are kept
    # suffix -> photos this Python cannot read
    undecodable: Counter[str] = field(default_factory=Counter)
    # absolute; folder links leaving their root
    outside_links: list[str] = field(default_factory=list)
    seconds: float = 0.0
    nodes: Counter[str] = field(default_factory=Counter)  # photos embedded per node (Ray jobs)

    def counts(self) -> RunCounts:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "failed": self.failed,
        }

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        line = (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, removed {self.removed}, "
            f"failed {self.failed} ({self.seconds:.1f} s, {self.images_per_s:.1f} img/s)"
        )
        if self.nodes:
            line += "; embedded on " + ", ".join(f"{n} {c}" for n, c in sorted(self.nodes.items()))
        return line


@dataclass
class _Work:
    root_id: int
    file: ScannedFile
    old: FileState | None = None  # the stored row at the same path, for changed files
    fingerprint: str | None = None


@dataclass
class _Prepared:
    work: _Work
    fingerprint: str | None = None
    pixels: np.ndarray | None = None  # (3, H, W) float32
    # width, height, taken_at, camera
    decoded: tuple[int, int, str | None, str | None] | None = None
    error: str | None = None
    # The stored row whose content this file still has: only the stat changed (touched, copied
    # back), so the row keeps its vector.
    same_row: FileState | None = None
    vector: np.ndarray | None = None  # (dim,): embedded already, by another executor
    node: str | None = None  # where that executor embedded it (a Ray node's address)

    def decoded_parts(self) -> tuple[str, np.ndarray, tuple[int, int, str | None, str | None]]:
        """(fingerprint, pixels or vector, decoded) of a file that decoded: what the write step
        embeds, or the vector another executor embedded."""
        embeddable = self.pixels if self.vector is None else self.vector
        if self.fingerprint is None or embeddable is None or self.decoded is None:
            raise AssertionError(f"{self.work.file.rel_path} has no decoded pixels to embed")
        return self.fingerprint, embeddable, self.decoded


class Executor(Protocol):
    """Prepares and embeds a job's files somewhere else (indexer.ray_executor.RayExecutor): it
    yields them in order with `vector` set, and this module commits them as it commits its own."""

    def prepare(
        self, work: list[_Work], embedder: Embedder, batch_size: int, max_pixels: int | None
    ) -> Iterator[_Prepared]: ...


def index_paths(
    library: Library,
    paths: Iterable[str | os.PathLike],
    embedder: Embedder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Bring the library up to date with `paths` (all registered roots when empty).

    The caller holds lock_library(). Each batch is its own transaction, so a killed job loses at
    most the batch in flight and the next run picks up where it stopped. `on_progress(done, total)`
    is called after each committed batch (files to embed only; the web UI's progress bar).
    `executor` prepares and embeds elsewhere (a Ray cluster); by default this process does.
    """
    started = time.monotonic()
    paths = list(paths)
    for path in paths:
        check_utf8_path(path)  # before anything is written
    library.ensure_model(embedder, getattr(embedder, "mode", "fp32"))
    store = library.store
    targets = resolve_targets(store, paths)
    run_id = store.start_run(sorted({t.folder for t in targets}))
    summary = RunSummary()
    workers = workers or min(8, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            work = _diff(store, targets, summary, pool, max_pixels)
            if executor is None:
                prepare = _Preparer(embedder, max_pixels)
                results = _bounded_map(pool, prepare, work, window=batch_size + 2 * workers)
            else:
                results = executor.prepare(work, embedder, batch_size, max_pixels)
            _embed_and_write(
                store, embedder, results, len(work), batch_size, summary, progress, on_progress
            )
    except KeyboardInterrupt:
        # the counts of what was committed so far
        store.finish_run(run_id, **summary.counts(), status="interrupted")
        raise
    store.finish_run(run_id, **summary.counts())
    drop_vanished_empty_roots(store)
    library.vector_index()  # rebuilds and saves vectors.faiss if the vectors changed
    summary.seconds = time.monotonic() - started
    return summary


def _diff(
    store: Store,
    targets: list[Target],
    summary: RunSummary,
    pool: ThreadPoolExecutor,
    max_pixels: int | None = None,
) -> list[_Work]:
    """Classify every file; apply failures, moves and removals now; return what to embed."""
    new: list[_Work] = []
    changed: list[_Work] = []
    failed: list[FailedImage] = []
    vanished: list[tuple[int, FileState]] = []
    elsewhere: list[_Work] = []  # move candidates only: see _moved_out_of
    per_root = store.images_per_root()
    roots = store.roots()
    for target in targets:
        if not is_root_online(target.root.path, per_root.get(target.root.id, 0)):
            summary.offline_roots.append(target.root.path)
            continue
        states = store.file_states(target.root.id, target.prefix)
        scan = scan_folder(target.root.path, target.folder)
        summary.unreadable_dirs += [
            os.path.normpath(os.path.join(target.root.path, d)) for d in scan.unreadable_dirs
        ]
        summary.undecodable += scan.undecodable
        summary.outside_links += [
            os.path.join(target.root.path, link) for link in scan.outside_links
        ]
        nested = nested_prefixes(target.root, roots)
        for f in scan.files:
            if any(within(f.rel_path, prefix) for prefix in nested):
                continue  # a registered root of its own: scanned as itself
            old = states.pop(f.rel_path, None)
            if old is not None and (old.size_bytes, old.mtime_ns) == (f.size_bytes, f.mtime_ns):
                if (
                    f.error is None
                    and old.status == "failed"
                    and _may_pass_now(old.error, max_pixels)
                ):
                    changed.append(_Work(target.root.id, f, old))
                    continue
                if f.error is None or old.error == f.error:
                    summary.unchanged += 1
                    continue
            if f.error is not None:
                failed.append(
                    FailedImage(target.root.id, f.rel_path, f.size_bytes, f.mtime_ns, f.error)
                )
            elif old is None:
                new.append(_Work(target.root.id, f))
            else:
                changed.append(_Work(target.root.id, f, old))
        gone = [s for s in states.values() if not _protected(s.rel_path, scan.unreadable_dirs)]
        vanished += [(target.root.id, s) for s in gone]
        if target.prefix and any(s.status == "ok" for s in gone):
            elsewhere += _moved_out_of(store, target, gone, nested)
    store.write_batch([], failed)
    summary.failed += len(failed)
    # The photos of offline roots may be among the new files (a renamed or moved photo folder, a disk
    # mounted elsewhere): they are paired like moves, but never removed when unmatched.
    adoptable = [
        (r.id, st)
        for r in roots
        if new and not is_root_online(r.path, per_root.get(r.id, 0))
        for st in store.file_states(r.id, "").values()
    ]
    unmatched = _apply_moves(store, new + elsewhere, vanished, summary, pool, adoptable)
    candidates_only = {id(w) for w in elsewhere}
    new = [w for w in unmatched if id(w) not in candidates_only]
    return sorted(new + changed, key=lambda w: (w.root_id, w.file.rel_path))


def _moved_out_of(
    store: Store, target: Target, gone: list[FileState], nested: list[str]
) -> list[_Work]:
    """A folder indexed on its own, inside a root, lost photos: they may have moved elsewhere in the
    root (a photo refiled from `inbox/` to `2024/`), where this run does not look. The files of the
    rest of the root that are not indexed and have the size of a lost photo are offered as move
    candidates, so a move keeps its row, vector and tags; unmatched, they are left for a run of the
    whole root."""
    sizes = {s.size_bytes for s in gone if s.status == "ok"}
    known = store.file_states(target.root.id, "")
    return [
        _Work(target.root.id, f)
        for f in scan_folder(target.root.path).files
        if f.error is None
        and f.size_bytes in sizes
        and f.rel_path not in known
        and not within(f.rel_path, target.prefix)
        and not any(within(f.rel_path, p) for p in nested)
    ]


# Failures whose cause can go away while the file stays as it is (permissions, a decoder installed
# since): such photos are tried again at each run. Corrupt data is not retried.
_RETRIED_FAILURES = ("permission denied", "cannot read file", "unsupported")


def _may_pass_now(error: str | None, max_pixels: int | None) -> bool:
    """Whether a failed, unchanged photo is worth another try; too many pixels: under a higher cap."""
    pixels = refused_pixel_count(error)
    if pixels is not None:
        return pixels <= (max_pixels or DEFAULT_MAX_PIXELS)
    return (error or "").startswith(_RETRIED_FAILURES)


def _protected(rel_path: str, unreadable_dirs: list[str]) -> bool:
    """Rows under a folder we could not list are kept: unreadable is not deleted."""
    return any(d == "." or rel_path.startswith(d + "/") for d in unreadable_dirs)


def _apply_moves(
    store: Store,
    new: list[_Work],
    vanished: list[tuple[int, FileState]],
    summary: RunSummary,
    pool: ThreadPoolExecutor,
    adoptable: Sequence[tuple[int, FileState]] = (),
) -> list[_Work]:
    """Pair vanished rows, then `adoptable` ones (kept when unmatched), with new files of equal
    fingerprint: a move keeps its row, vector and tags. Only new files whose size matches such a row
    are fingerprinted here (size is cheap)."""
    by_key: dict[tuple[int, str], list[FileState]] = defaultdict(list)
    for _, state in [*vanished, *adoptable]:
        if state.status == "ok" and state.fingerprint:
            by_key[(state.size_bytes, state.fingerprint)].append(state)
    sizes = {size for size, _ in by_key}
    candidates = [w for w in new if w.file.size_bytes in sizes]
    moves: list[FileUpdate] = []
    moved_ids: set[int] = set()
    for work, fingerprint in zip(
        candidates, pool.map(_try_fingerprint, [w.file.path for w in candidates]), strict=True
    ):
        work.fingerprint = fingerprint
        matches = by_key.get((work.file.size_bytes, fingerprint or ""))
        if matches:
            state = matches.pop(0)
            moves.append(
                FileUpdate(
                    state.id,
                    work.root_id,
                    work.file.rel_path,
                    work.file.size_bytes,
                    work.file.mtime_ns,
                )
            )
            moved_ids.add(state.id)
    store.update_locations(moves)
    summary.moved += len(moves)
    summary.removed += store.delete_images([s.id for _, s in vanished if s.id not in moved_ids])
    moved_paths = {(m.root_id, m.rel_path) for m in moves}
    return [w for w in new if (w.root_id, w.file.rel_path) not in moved_paths]


def _try_fingerprint(path: str) -> str | None:
    try:
        return fingerprint_file(path)
    except OSError:
        return None  # the decode step records why it cannot be read


class ImagePreprocessing(Protocol):
    """What preparing a photo needs of the model: an Embedder, or only its image processor."""

    @property
    def image_size(self) -> tuple[int, int]: ...

    def preprocess_image(self, image: Image.Image) -> np.ndarray: ...


class _Preparer:
    """Runs in decode threads: fingerprint, decode, preprocess. Bad files become reasons."""

    def __init__(self, embedder: ImagePreprocessing, max_pixels: int | None) -> None:
        self.embedder = embedder
        self.max_pixels = max_pixels

    def __call__(self, work: _Work) -> _Prepared:
        result = _Prepared(work)
        try:
            result.fingerprint = work.fingerprint or fingerprint_file(work.file.path)
        except PermissionError:
            result.error = "permission denied"
            return result
        except NotRegularFileError as exc:  # replaced by a FIFO or a folder since the scan
            result.error = exc.reason
            return result
        except OSError as exc:
            result.error = f"cannot read file ({exc.strerror or exc})"
            return result
        if (
            work.old is not None
            and work.old.status == "ok"
            and work.old.fingerprint == result.fingerprint
        ):
            result.same_row = work.old
            return result
        try:
            decoded = decode_image(
                work.file.path, target_size=self.embedder.image_size, max_pixels=self.max_pixels
            )
            result.pixels = self.embedder.preprocess_image(decoded.image)
        except DecodeError as exc:
            result.error = exc.reason
            return result
        except InputError as exc:
            result.error = f"cannot preprocess ({exc})"
            return result
        result.decoded = (decoded.width, decoded.height, decoded.taken_at, decoded.camera)
        return result


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[R]:
    """pool.map in order, with at most `window` items in flight: memory stays flat however many."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _embed_and_write(
    store: Store,
    embedder: Embedder,
    results: Iterator[_Prepared],
    total: int,
    batch_size: int,
    summary: RunSummary,
    progress: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    show = progress and sys.stderr.isatty()
    done = 0
    if on_progress is not None:
        on_progress(done, total)
    with tqdm(
        total=total, unit="img", desc="indexing", file=sys.stderr, disable=not show, smoothing=0.1
    ) as bar:
        ready: list[_Prepared] = []
        failed: list[FailedImage] = []
        touched: list[FileUpdate] = []
        for item in results:
            w, f = item.work, item.work.file
            if item.error is not None:
                failed.append(
                    FailedImage(
                        w.root_id,
                        f.rel_path,
                        f.size_bytes,
                        f.mtime_ns,
                        item.error,
                        item.fingerprint,
                    )
                )
            elif item.same_row is not None:
                touched.append(
                    FileUpdate(item.same_row.id, w.root_id, f.rel_path, f.size_bytes, f.mtime_ns)
                )
            else:
                ready.append(item)
            if len(ready) >= batch_size or len(failed) + len(touched) >= batch_size:
                _write_batch(store, embedder, ready, failed, touched, batch_size, summary)
                _advance(bar, len(ready) + len(failed) + len(touched), summary.failed)
                done += len(ready) + len(failed) + len(touched)
                ready, failed, touched = [], [], []
                if on_progress is not None:
                    on_progress(done, total)
        _write_batch(store, embedder, ready, failed, touched, batch_size, summary)
        _advance(bar, len(ready) + len(failed) + len(touched), summary.failed)
        if on_progress is not None:
            on_progress(total, total)


def _advance(bar: tqdm, files_done: int, failed: int) -> None:
    bar.set_postfix(failed=failed, refresh=False)
    bar.update(files_done)


def _write_batch(
    store: Store,
    embedder: Embedder,
    ready: list[_Prepared],
    failed: list[FailedImage],
    touched: list[FileUpdate],
    batch_size: int,
    summary: RunSummary,
) -> None:
    """Embed one batch (unless an executor did) and commit it with the batch's failures in one
    transaction."""
    embedded = []
    if ready:
        parts = [r.decoded_parts() for r in ready]
        if all(r.vector is not None for r in ready):
            vectors = np.stack([v for _, v, _ in parts])  # (B, dim)
        else:
            pixels = np.stack([p for _, p, _ in parts])  # (B, 3, H, W)
            if len(ready) < batch_size:
                # Pad the last batch to the usual shape: the same file then gets bit-identical
                # vectors however a run was cut into batches (kill -9 and resume = one clean run).
                padding = np.zeros((batch_size - len(ready), *pixels.shape[1:]), pixels.dtype)
                pixels = np.concatenate([pixels, padding])
            vectors = embedder.embed_pixels(pixels)[: len(ready)]  # (B, dim)
        for r, (fingerprint, _, decoded), vector in zip(ready, parts, vectors, strict=True):
            if r.node is not None:
                summary.nodes[r.node] += 1
            w, f = r.work, r.work.file
            width, height, taken_at, camera = decoded
            embedded.append(
                EmbeddedImage(
                    w.root_id,
                    f.rel_path,
                    f.size_bytes,
                    f.mtime_ns,
                    fingerprint,
                    width,
                    height,
                    taken_at,
                    camera,
                    embedder.model_id,
                    vector,
                )
            )
            if w.old is None:
                summary.added += 1
            else:
                summary.updated += 1
    if embedded or failed:
        store.write_batch(embedded, failed)
    if touched:
        store.update_locations(touched)
    summary.failed += len(failed)
    summary.unchanged += len(touched)
