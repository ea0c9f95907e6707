"""Which vector index a library searches with, and `reindex`: building the on-disk IVF index of
indexer/ivf.py from the stored embeddings, its shards filled by worker processes or Ray tasks.

The choice is recorded in the library's database (meta key `vector_index`), so it survives a
restart and every process that searches the library uses it. `auto`, the default (no record), is
the exact index below ANN_MIN_VECTORS photos and the approximate one above (library.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import ivf
from .errors import IndexFileError, ModelNotRecordedError, ReindexError
from .store import open_store

if TYPE_CHECKING:
    from .library import Library
    from .ray_executor import RayExecutor

INDEX_CHOICE_KEY = "vector_index"
KINDS = ("ivfpq", "auto")
FOLDER_PREFIX = "ivfpq-"
TRAIN_PER_LIST = 40  # training vectors per inverted list (FAISS warns below 39)
MIN_TRAIN, MAX_TRAIN = 32_768, 262_144  # 262,144 x 768 float32 is 0.8 GB in the building process


@dataclass(frozen=True)
class IvfRecord:
    """The on-disk index a library searches with, as its database records it."""

    folder: str  # inside the library folder
    factory: str  # FAISS index_factory string, e.g. IVF2048,PQ192x4
    nprobe: int
    dim: int
    count: int  # photos in it when it was built
    shards: int
    built_to: tuple[int, int] | None  # the newest embedding in it (Store.latest_embedding_position)
    sha256: str  # ivf.index_sha256 of its folder
    lists_bytes: int  # size of its lists file
    built_at: str  # ISO 8601, UTC

    @classmethod
    def from_json(cls, text: str) -> IvfRecord:
        try:
            fields = json.loads(text)
            fields.pop("kind")
            built_to = fields["built_to"]
            if built_to and not all(type(part) is int for part in built_to):
                # (indexed_at, id), recorded before positions were (generation, id)
                raise ValueError("it was built by an older version")
            fields["built_to"] = (built_to[0], built_to[1]) if built_to else None
            return cls(**fields)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise IndexFileError(f"the recorded index cannot be read: {exc}") from None

    def to_json(self) -> str:
        return json.dumps({"kind": "ivfpq", **asdict(self)}, sort_keys=True)


@dataclass
class ReindexSummary:
    kind: str
    count: int = 0
    shards: int = 0
    factory: str = ""
    train_s: float = 0.0
    fill_s: float = 0.0
    merge_s: float = 0.0
    disk_bytes: int = 0

    def line(self) -> str:
        if self.kind == "auto":
            return "the library searches with its default index again (exact, approximate above 50,000)"
        return (
            f"ivfpq index of {self.count} photos ({self.factory}, {self.shards} shards): train "
            f"{self.train_s:.1f} s, fill {self.fill_s:.1f} s, merge {self.merge_s:.1f} s; "
            f"{self.disk_bytes / 2**20:.1f} MB on disk, searched memory-mapped"
        )


def recorded_index(library: Library) -> IvfRecord | None:
    """The index the library records, None for the default (IndexFileError when unreadable)."""
    text = library.store.get_meta(INDEX_CHOICE_KEY)
    return IvfRecord.from_json(text) if text else None


def reindex_library(
    library: Library,
    kind: str,
    *,
    shards: int = 2,
    executor: RayExecutor | None = None,
    factory: str | None = None,
    nprobe: int = ivf.DEFAULT_NPROBE,
) -> ReindexSummary:
    """Make `kind` the library's index, building it for ivfpq. The caller holds lock_library(), so
    no indexer writes meanwhile; searches go on with the previous index until the new one is
    recorded."""
    if kind not in KINDS:
        raise ReindexError(f"unknown index {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        library.store.set_meta(INDEX_CHOICE_KEY, "")
        _remove_folders(library.path, keep=None)
        return ReindexSummary("auto")
    dim, ids = _dim(library), np.sort(library.store.embedding_ids())
    factory = factory or ivf.default_factory(len(ids), dim)
    summary = ReindexSummary("ivfpq", len(ids), max(1, min(shards, len(ids))), factory)
    started = time.monotonic()
    trained = _train(library, ids, factory, dim)
    summary.train_s = time.monotonic() - started
    _remove_folders(library.path, keep=None, unfinished_only=True)
    folder = _build(library, trained, ids, summary, executor)
    record = IvfRecord(
        folder.name,
        factory,
        nprobe,
        dim,
        len(ids),
        summary.shards,
        library.store.latest_embedding_position(),
        ivf.index_sha256(folder),
        (folder / ivf.LISTS_FILE).stat().st_size,
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    library.store.set_meta(INDEX_CHOICE_KEY, record.to_json())
    _remove_folders(library.path, keep=folder.name)  # a search still mapping one keeps its files
    summary.disk_bytes = sum(f.stat().st_size for f in folder.iterdir())
    return summary


def _build(
    library: Library,
    trained: bytes,
    ids: np.ndarray,
    summary: ReindexSummary,
    executor: RayExecutor | None,
) -> Path:
    """Fill the shards and merge them in a folder of its own, renamed into place when complete."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    building = library.path / f"{FOLDER_PREFIX}{stamp}.building"
    building.mkdir()
    try:
        started = time.monotonic()
        parts = [part for part in np.array_split(ids, summary.shards) if len(part)]
        ranges = [(int(part[0]), int(part[-1])) for part in parts]
        shard_files = _fill_shards(library, trained, ranges, building, executor)
        summary.fill_s, started = time.monotonic() - started, time.monotonic()
        count = ivf.merge_shards(trained, shard_files, ids, building)
        for file in shard_files:
            file.unlink()
        summary.merge_s = time.monotonic() - started
        if count != len(ids):
            raise ReindexError(
                f"the shards hold {count} photos, the library {len(ids)}; was it written meanwhile?"
            )
        folder = building.with_suffix("")
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def _train(library: Library, ids: np.ndarray, factory: str, dim: int) -> bytes:
    """Train on a random sample of the stored vectors: TRAIN_PER_LIST a list, within bounds."""
    try:
        lists = ivf.list_count(factory, dim)
    except ValueError as exc:
        raise ReindexError(str(exc)) from None
    size = min(len(ids), max(MIN_TRAIN, TRAIN_PER_LIST * lists), MAX_TRAIN)
    chosen = np.sort(np.random.default_rng(0).permutation(ids)[:size]).tolist()
    vectors: list[np.ndarray] = []
    for start in range(0, len(chosen), 500):
        found = library.store.embeddings_by_ids(chosen[start : start + 500])
        vectors += [found[i] for i in chosen[start : start + 500] if i in found]
    if not vectors:
        raise ReindexError(f"library {library.path} has no photos to build an index of")
    try:
        return ivf.train_empty(np.stack(vectors), factory)
    except ValueError as exc:
        raise ReindexError(str(exc)) from None


def _fill_shards(
    library: Library,
    trained: bytes,
    ranges: list[tuple[int, int]],
    folder: Path,
    executor: RayExecutor | None,
) -> list[Path]:
    """Each shard: the photos with ids in its range, read from the database by its own worker."""
    url = library.store.engine.url.render_as_string(hide_password=False)
    if executor is not None:
        calls = [(url, trained, first, last, 1) for first, last in ranges]
        blobs = executor.map_tasks(fill_shard_from_store, calls)
    else:
        threads = max(1, (os.cpu_count() or 1) // len(ranges))
        with ProcessPoolExecutor(len(ranges), mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(fill_shard_from_store, url, trained, first, last, threads)
                for first, last in ranges
            ]
            blobs = [future.result() for future in futures]
    files = []
    for number, blob in enumerate(blobs):
        files.append(folder / f"shard-{number:04d}.faiss")
        files[-1].write_bytes(blob)
    return files


def fill_shard_from_store(
    database_url: str, trained: bytes, first_id: int, last_id: int, threads: int
) -> bytes:
    """One shard, in a worker process or a Ray task: the embeddings with ids in [first_id, last_id]
    read in id order from the library's database, added to the trained index, serialized."""
    store = open_store(database_url)
    try:
        chunks = store.iter_embeddings(first_id=first_id, last_id=last_id)
        return ivf.fill_shard(trained, chunks, threads)
    finally:
        store.close()


def open_recorded(
    library: Library, record: IvfRecord, current: object, generation: int
) -> ivf.IvfIndex:
    """The recorded index, mapped and brought up to date with the database: photos deleted or
    re-embedded since the build are tombstones, photos written since are searched from memory."""
    index = (
        current if isinstance(current, ivf.IvfIndex) and current.folder == record.folder else None
    )
    if index is None:
        folder = library.path / record.folder
        index = ivf.IvfIndex.load(folder, record.nprobe, record.sha256, record.lists_bytes)
    if index.dim != _dim(library):
        raise IndexFileError(
            f"{record.folder} holds {index.dim}-d vectors, the library's model makes {_dim(library)}"
        )
    store = library.store
    added = [(chunk.ids, chunk.vectors) for chunk in store.iter_embeddings_after(record.built_to)]
    index.set_changes(np.setdiff1d(index.main_ids(), store.embedding_ids()), added)
    index.generation = generation
    return index


def _dim(library: Library) -> int:
    identity = library.model_identity()
    if identity is None:
        raise ModelNotRecordedError(f"library {library.path} is empty: index some folders first")
    return int(identity["dim"])


def _remove_folders(library_folder: Path, keep: str | None, unfinished_only: bool = False) -> None:
    """Built index folders other than `keep` (only unfinished builds, with unfinished_only)."""
    for folder in library_folder.glob(f"{FOLDER_PREFIX}*"):
        if (
            folder.name != keep
            and folder.is_dir()
            and (folder.suffix == ".building" or not unfinished_only)
        ):
            shutil.rmtree(folder, ignore_errors=True)
