"""The indexing job: scan the targets (targets.py), diff against the store (failures, moves and
removals applied at once), then embed what is new or changed. Embedding runs in the local
pipeline (pipeline.py), and every batch is committed by batches.commit_batch."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from .batches import RunCounts, RunSummary
from .decode import DEFAULT_MAX_PIXELS, refused_pixel_count
from .library import Library
from .metadata import refresh_photo_facts
from .pipeline import RemoteExecutor, decode_pool, default_workers, embed_and_commit
from .prepare import Work
from .scan import ScanResult, check_utf8_path, fingerprint_file, is_root_online, scan_folder
from .store import ANALYZE_MIN_ROWS, FailedImage, FileState, FileUpdate, PassedOver, Store
from .targets import (
    Target,
    change_excludes,
    drop_vanished_empty_roots,
    nested_prefixes,
    resolve_targets,
    within,
)

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder

__all__ = ["RunCounts", "RunSummary", "index_paths"]


def index_paths(
    library: Library,
    paths: Iterable[str | os.PathLike],
    embedder: Embedder,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    pool: str = "threads",
    progress: bool = True,
    max_pixels: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    exclude: Sequence[str] = (),
    no_exclude: Sequence[str] = (),
    executor: RemoteExecutor | None = None,
) -> RunSummary:
    """Bring the library up to date with `paths` (all registered roots when empty).

    `batch_size` None takes the embedder's (32 on the CPU, measured on a GPU); `workers` decode
    threads (or processes, with pool="processes"), None: one per core. The caller holds
    lock_library(). Each batch is its own transaction, so a killed job loses at most the batch in
    flight and the next run picks up where it stopped. `on_progress(done, total)` is called after
    each committed batch (files to embed only; the web UI's progress bar).

    `exclude` / `no_exclude`: patterns added to / removed from the scanned roots' stored exclude
    patterns before the scan (scan.normalized_pattern); photos they now exclude leave the library
    (the files stay). `executor` prepares and embeds elsewhere (a Ray cluster, which sets each
    Prepared's vector); by default this process does, in the local pipeline.
    """
    started = time.monotonic()
    paths = list(paths)
    for path in paths:
        check_utf8_path(path)  # before anything is written
    library.ensure_model(embedder)
    store = library.store
    targets = change_excludes(store, resolve_targets(store, paths), exclude, no_exclude)
    # Without folders the caller locked the whole library (every root is scanned).
    run_id = store.start_run(
        sorted({t.folder for t in targets}), whole_library=library.single_writer or not paths
    )
    summary = RunSummary(device=embedder.describe())
    workers = workers or default_workers()
    try:
        with decode_pool(workers, pool) as decoders:
            work = _diff(store, targets, summary, decoders, max_pixels)
            embed_and_commit(
                store,
                embedder,
                work,
                decoders,
                batch_size=batch_size or embedder.batch_size,
                workers=workers,
                max_pixels=max_pixels,
                summary=summary,
                progress=progress,
                on_progress=on_progress,
                remote=executor,
            )
            online = {t.root.id for t in targets if t.root.path not in summary.offline_roots}
            summary.facts_read = refresh_photo_facts(store, online, decoders, progress)
    except KeyboardInterrupt:
        # the counts of what was committed so far
        store.finish_run(run_id, **summary.counts(), status="interrupted")
        raise
    store.finish_run(run_id, **summary.counts())
    if summary.written >= ANALYZE_MIN_ROWS:
        store.analyze()  # the planner's statistics of the rows just written (store.py)
    drop_vanished_empty_roots(store)
    library.vector_index()  # rebuilds and saves vectors.faiss if the vectors changed
    summary.seconds = time.monotonic() - started
    return summary


def _diff(
    store: Store,
    targets: list[Target],
    summary: RunSummary,
    pool: Executor,
    max_pixels: int | None = None,
) -> list[Work]:
    """Classify every file; apply failures, moves and removals now; return what to embed."""
    new: list[Work] = []
    changed: list[Work] = []
    failed: list[FailedImage] = []
    vanished: list[tuple[int, FileState]] = []
    elsewhere: list[Work] = []  # move candidates only: see _moved_out_of
    per_root = store.images_per_root()
    roots = store.roots()
    for target in targets:
        if not is_root_online(target.root.path, per_root.get(target.root.id, 0)):
            summary.offline_roots.append(target.root.path)
            continue
        states = store.file_states(target.root.id, target.prefix)
        scan = scan_folder(target.root.path, target.folder, target.root.exclude)
        _count_passed_over(store, target, scan, summary)
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
                    changed.append(Work(target.root.id, f, old))
                    continue
                if f.error is None or old.error == f.error:
                    summary.unchanged += 1
                    continue
            if f.error is not None:
                failed.append(
                    FailedImage(target.root.id, f.rel_path, f.size_bytes, f.mtime_ns, f.error)
                )
            elif old is None:
                new.append(Work(target.root.id, f))
            else:
                changed.append(Work(target.root.id, f, old))
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


def _count_passed_over(store: Store, target: Target, scan: ScanResult, summary: RunSummary) -> None:
    """Count what the scan left out; a scan of a whole root also stores it for `status`."""
    other = scan.other + scan.undecodable
    summary.passed_over += scan.other
    summary.hidden += scan.skipped
    summary.excluded += scan.excluded
    if not target.prefix:
        store.set_passed_over(
            target.root.id, PassedOver(dict(sorted(other.items())), scan.skipped, scan.excluded)
        )


def _moved_out_of(
    store: Store, target: Target, gone: list[FileState], nested: list[str]
) -> list[Work]:
    """A folder indexed on its own, inside a root, lost photos: they may have moved elsewhere in the
    root (a photo refiled from `inbox/` to `2024/`), where this run does not look. The files of the
    rest of the root that are not indexed and have the size of a lost photo are offered as move
    candidates, so a move keeps its row, vector and tags; unmatched, they are left for a run of the
    whole root."""
    sizes = {s.size_bytes for s in gone if s.status == "ok"}
    known = store.file_states(target.root.id, "")
    return [
        Work(target.root.id, f)
        for f in scan_folder(target.root.path, exclude=target.root.exclude).files
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
    new: list[Work],
    vanished: list[tuple[int, FileState]],
    summary: RunSummary,
    pool: Executor,
    adoptable: Sequence[tuple[int, FileState]] = (),
) -> list[Work]:
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
