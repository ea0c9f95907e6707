"""A library directory: its database, FAISS files and lock, and the model it was built with
(searching it is indexer.search's Searcher)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import (
    IndexFileError,
    LibraryLockedError,
    LibraryNotFoundError,
    LibraryReadOnlyError,
    ModelMismatchError,
    ModelNotRecordedError,
)
from .ivf import IvfIndex
from .reindex import INDEX_CHOICE_KEY, open_recorded, recorded_index
from .scan import check_utf8_path
from .store import Store, open_store
from .vectors import (
    ANN_MIN_TRAIN,
    ANN_TRAIN_SIZE,
    AnnIndex,
    VectorIndex,
    build_index,
)

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder

LIBRARY_ENV = "SIGLIP_SEARCH_LIBRARY"
DB_NAME, INDEX_NAME, LOCK_NAME = "library.db", "vectors.faiss", "library.lock"
ANN_INDEX_NAME = "vectors-ann.faiss"
# Exact search up to this many images, the approximate index above. Measured (768 dims, one query
# at a time): exact search takes ~1.6 ms at 10k, ~8.6 ms at 50k and ~19 ms at 100k images and grows
# linearly; the approximate index answers in ~1-2 ms at 100k (benchmarks/search_speed.py).
ANN_MIN_VECTORS = 50_000
# The approximate index keeps tombstones for deleted or re-embedded images; past this share of
# dead entries it is rebuilt from the database.
ANN_REBUILD_FRACTION = 0.25
IDENTITY_KEY, MODE_KEY = "model_identity", "model_mode"


def default_library_dir() -> Path:
    """$SIGLIP_SEARCH_LIBRARY, else $XDG_DATA_HOME/siglip-search/library (~/.local/share/...)."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "siglip-search" / "library"


@dataclass
class Library:
    """An open library. Cheap to open; the FAISS index is loaded on first use (vector_index)."""

    path: Path
    store: Store
    ann_min_vectors: int = ANN_MIN_VECTORS
    ann_rebuild_fraction: float = ANN_REBUILD_FRACTION
    # Why the recorded index (`reindex`) cannot be used, when it cannot: search goes on with the default.
    index_problem: str | None = None
    _index: VectorIndex | AnnIndex | IvfIndex | None = field(default=None, repr=False)
    _index_choice: str | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- model ------------------------------------------------------------------------------
    def model_identity(self) -> dict | None:
        text = self.store.get_meta(IDENTITY_KEY)
        return json.loads(text) if text else None

    def model_mode(self) -> str | None:
        return self.store.get_meta(MODE_KEY)

    def load_embedder(
        self,
        model: str | os.PathLike | None = None,
        *,
        mode: str | None = None,
        device: str = "cpu",
    ) -> Embedder:
        """The recorded model (or `model`, which must be the same one); imports torch."""
        from siglip_search.embedder import Embedder

        recorded = self.model_identity()
        if model is not None:
            name = model
        elif recorded is not None:
            name = recorded["model_id"]
        else:
            raise ModelNotRecordedError(
                f"library {self.path} has no model yet; index photos into it first: "
                f"siglip-search index FOLDER --library {self.path} --model ID_OR_PATH"
            )
        mode = mode or self.model_mode() or "fp32"
        embedder = Embedder.from_pretrained(name, mode=mode, device=device)
        if recorded is not None:
            self.check_model(embedder.identity(), mode)
        return embedder

    def check_model(self, identity: dict, mode: str = "fp32") -> None:
        """ModelMismatchError unless `identity` (and mode) produce the vectors already stored."""
        recorded = self.model_identity()
        if recorded is None:
            return
        differing = _identity_differences(recorded, identity)
        recorded_mode = self.model_mode() or "fp32"
        if _vector_mode(mode) != _vector_mode(recorded_mode):
            differing.append("mode")
        if differing:
            raise ModelMismatchError(
                f"library {self.path} was built with model {recorded.get('model_id')} "
                f"({_describe(recorded, recorded_mode)}), not {identity.get('model_id')} "
                f"({_describe(identity, mode)}); they differ in {', '.join(differing)}. "
                "Vectors of two models cannot be mixed: leave out --model to use the recorded one, "
                "or use another --library"
            )

    def ensure_model(self, embedder: Embedder, mode: str = "fp32") -> None:
        """Record the embedder as the library's model on first use; refuse another one later."""
        identity, recorded = embedder.identity(), self.model_identity()
        if recorded is not None:
            self.check_model(identity, mode)
        if recorded is None or recorded.get("model_id") != identity.get("model_id"):
            # New library, or the same weights found at a new place (the old one may be gone).
            self.store.set_meta(IDENTITY_KEY, json.dumps(identity, sort_keys=True))
        if recorded is None:
            self.store.set_meta(MODE_KEY, _vector_mode(mode))

    # --- vectors ----------------------------------------------------------------------------
    def vector_index(self) -> VectorIndex | AnnIndex | IvfIndex:
        """The FAISS index for the database as it is now: reuses, loads, or rebuilds and saves.
        The one `reindex` recorded, if any; else exact below `ann_min_vectors` images, approximate
        (kept in step incrementally) above."""
        with self._lock:
            generation = self.store.vectors_generation()
            choice = self.store.get_meta(INDEX_CHOICE_KEY) or ""
            if self._index is not None and (self._index.generation, self._index_choice) == (
                generation,
                choice,
            ):
                return self._index
            self._index_choice = choice
            if choice:
                try:
                    record = recorded_index(self)
                    if record is not None:
                        self._index = open_recorded(self, record, self._index, generation)
                        self.index_problem = None
                        return self._index
                except IndexFileError as exc:
                    self.index_problem = f"{exc}; run `siglip-search reindex` to build it again"
            if self.store.embedding_count() >= max(self.ann_min_vectors, ANN_MIN_TRAIN):
                self._index = self._ann_index(generation)
            else:
                self._index = self._flat_index(generation)
            return self._index

    def _flat_index(self, generation: int) -> VectorIndex:
        try:
            index = VectorIndex.load(self.index_path)
            if index.generation != generation or index.dim != self._dim():
                raise IndexFileError("out of date")
        except IndexFileError:
            index = self.rebuild_index()
        return index

    @property
    def ann_index_path(self) -> Path:
        return self.path / ANN_INDEX_NAME

    def _ann_index(self, generation: int) -> AnnIndex:
        """Bring the approximate index up to date: add vectors written since it was last synced,
        tombstone the ids gone from the database; rebuild when missing or too full of tombstones."""
        index = self._index if isinstance(self._index, AnnIndex) else None
        if index is None:
            try:
                index = AnnIndex.load(self.ann_index_path)
            except IndexFileError:
                index = None
        if index is None or index.dim != self._dim():
            return self.rebuild_ann_index()
        for chunk in self.store.iter_embeddings_after(index.synced_to):
            index.add(chunk.ids, chunk.vectors)
            index.synced_to = chunk.last
        index.remove(np.setdiff1d(index.ids(), self.store.embedding_ids()))
        if index.dead_fraction > self.ann_rebuild_fraction:
            return self.rebuild_ann_index()
        index.generation = generation
        self._save_quietly(index, self.ann_index_path)
        return index

    def rebuild_ann_index(self) -> AnnIndex:
        """Train on a random sample of the stored vectors, then add them all (streamed)."""
        generation = self.store.vectors_generation()
        ids = self.store.embedding_ids()
        chosen = np.sort(np.random.default_rng(0).permutation(ids)[:ANN_TRAIN_SIZE])
        sample = [
            self.store.embeddings_by_ids(chosen[i : i + 500].tolist())
            for i in range(0, len(chosen), 500)
        ]
        index = AnnIndex.train_new(
            np.stack([v for part in sample for v in part.values()]), self._dim(), generation
        )
        for chunk in self.store.iter_embeddings_after(None):
            index.add(chunk.ids, chunk.vectors)
            index.synced_to = chunk.last
        self._save_quietly(index, self.ann_index_path)
        return index

    @staticmethod
    def _save_quietly(index: VectorIndex | AnnIndex, path: Path) -> None:
        try:
            index.save(path)
        except OSError:
            pass  # a read-only library still searches, from the in-memory index

    def rebuild_index(self, save: bool = True) -> VectorIndex:
        """Build from the database (the source of truth), retrying if a writer commits meanwhile."""
        for _ in range(5):
            generation = self.store.vectors_generation()
            index = build_index(self.store.iter_embeddings(), self._dim(), generation)
            if self.store.vectors_generation() == generation:
                break
        if save:
            self._save_quietly(index, self.index_path)
        return index

    def _dim(self) -> int:
        identity = self.model_identity()
        if identity is None:
            raise ModelNotRecordedError(f"library {self.path} is empty: index some folders first")
        return int(identity["dim"])


def open_library(path: str | os.PathLike | None = None, *, create: bool = True) -> Library:
    """Open the library at `path` (default: default_library_dir()); create it when allowed."""
    folder = Path(path).expanduser() if path is not None else default_library_dir()
    folder = folder.resolve()
    # its path is stored, shown and handed to FAISS as text
    check_utf8_path(folder, "library folder")
    if not (folder / DB_NAME).is_file():
        if not create:
            raise LibraryNotFoundError(
                f"no library at {folder}; run `siglip-search index PATH --library {folder}`"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryNotFoundError(
                f"cannot create library folder {folder}: {exc.strerror}"
            ) from None
    return Library(folder, open_store(folder / DB_NAME))


@contextmanager
def lock_library(library: Library, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the library's writer lock. flock is released by the OS when the holder dies, so a
    crashed indexer never leaves a stale lock behind. Only writers lock: a library this process
    may not write raises LibraryReadOnlyError here, before any work starts."""
    if library.store.read_only:
        raise LibraryReadOnlyError(str(library.path), f"cannot write {DB_NAME}")
    try:
        fd = os.open(library.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise LibraryReadOnlyError(
            str(library.path), f"cannot open {LOCK_NAME}: {exc.strerror}"
        ) from None
    try:
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LibraryLockedError(str(library.path), _read_pid(fd)) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def indexer_running(library: Library) -> bool:
    """Whether a process holds the library's writer lock now (asks without taking it)."""
    try:
        fd = os.open(library.lock_path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody has ever indexed here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _vector_mode(mode: str) -> str:
    return "fp32" if mode == "compile" else mode  # torch.compile runs the same fp32 math


def _identity_differences(recorded: dict, current: dict) -> list[str]:
    current = json.loads(json.dumps(current))  # tuples -> lists, as stored
    keys = set(recorded) | set(current)
    if recorded.get("weights_sha256") and current.get("weights_sha256"):
        # Same weights and preprocessing give the same vectors wherever the checkpoint lives.
        keys.discard("model_id")
    return sorted(k for k in keys if recorded.get(k) != current.get(k))


def _describe(identity: dict, mode: str) -> str:
    sha = str(identity.get("weights_sha256") or "")[:12]
    return f"dim {identity.get('dim')}, mode {mode}" + (f", weights {sha}" if sha else "")
