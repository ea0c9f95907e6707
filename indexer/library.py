"""A library directory: its database, FAISS files and lock, and the model it was built with
(searching it is indexer.search's Searcher)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from siglip_search.modes import AUTO as AUTO_MODE
from siglip_search.modes import (
    INTERCHANGEABLE_COSINE,
    MODES,
    pick_modes,
    vector_family,
)
from siglip_search.resources import DEMO_MODEL

from .errors import (
    DatabaseUnsupportedError,
    IndexFileError,
    LibraryFolderError,
    LibraryNotFoundError,
    ModelMismatchError,
    ModelNotRecordedError,
)
from .ivf import IvfIndex
from .locks import lock_library as lock_library  # where callers have always found it
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
DATABASE_ENV = "SIGLIP_SEARCH_DATABASE_URL"
DB_NAME, INDEX_NAME, LOCK_NAME = "library.db", "vectors.faiss", "library.lock"
ANN_INDEX_NAME = "vectors-ann.faiss"
# Exact search up to this many images, the approximate index above. Measured (768 dims, one query
# at a time): exact search takes ~1.6 ms at 10k, ~8.6 ms at 50k and ~19 ms at 100k images and grows
# linearly; the approximate index answers in ~1-2 ms at 100k (benchmarks/search_speed.py).
ANN_MIN_VECTORS = 50_000
# The approximate index keeps tombstones for deleted or re-embedded images; past this share of
# dead entries it is rebuilt from the database.
ANN_REBUILD_FRACTION = 0.25
# The model, the mode the latest run embedded images in, and that mode's family (siglip_search.modes):
# any mode of the family may add to the library or search it.
IDENTITY_KEY, MODE_KEY, FAMILY_KEY = "model_identity", "model_mode", "model_mode_family"


# What a new library's --model can be, for the messages that ask for one.
MODEL_CHOICES = (
    f"{DEMO_MODEL} (the bundled demo model: it knows only the synthetic shapes of its sample "
    "photos) or a hub id such as google/siglip-base-patch16-224 (for real photos; downloaded once, "
    "about 800 MB)"
)


def require_model_for_new_library(
    path: str | os.PathLike | None, database: str | None = None
) -> None:
    """ModelNotRecordedError, creating nothing, unless the library at `path` (or in `database`)
    exists and records its model: a new library needs --model."""
    if database:  # the server's library, without making this machine's folder for it
        _check_server_url(database)
        try:
            store = open_store(database, create=False)
        except LibraryNotFoundError:
            raise ModelNotRecordedError(
                f"the --database holds no library yet, which needs --model: pass --model {MODEL_CHOICES}"
            ) from None
        try:
            if store.get_meta(IDENTITY_KEY) is None:
                raise ModelNotRecordedError(
                    f"the library in {store.name} has no model yet, so the first index needs "
                    f"--model: pass --model {MODEL_CHOICES}"
                )
        finally:
            store.close()
        return
    try:
        library = open_library(path, create=False)
    except LibraryNotFoundError:
        folder = Path(path).expanduser().resolve() if path is not None else default_library_dir()
        raise ModelNotRecordedError(
            f"{folder} is a new library, which needs --model: pass --model {MODEL_CHOICES}"
        ) from None
    with library:
        if library.model_identity() is None:
            raise ModelNotRecordedError(
                f"library {library.path} has no model yet, so the first index needs --model: "
                f"pass --model {MODEL_CHOICES}"
            )


def default_library_dir() -> Path:
    """$SIGLIP_SEARCH_LIBRARY, else $XDG_DATA_HOME/siglip-search/library (~/.local/share/...)."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]).expanduser()
    return _data_home() / "library"


def default_database() -> str | None:
    """$SIGLIP_SEARCH_DATABASE_URL, if set: the library's database on a server."""
    return os.environ.get(DATABASE_ENV) or None


def default_local_dir(library_id: str) -> Path:
    """Where this machine keeps its own files of a library on a server, without --library:
    $SIGLIP_SEARCH_LIBRARY, else $XDG_DATA_HOME/siglip-search/databases/<library id>."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]).expanduser()
    return _data_home() / "databases" / library_id[:16]


def _data_home() -> Path:
    return (
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "siglip-search"
    )


@dataclass
class Library:
    """An open library. Cheap to open; the FAISS index is loaded on first use (vector_index).

    `path` is the library folder: it holds the SQLite database, or, for a library on a database
    server, only what is this machine's own (the FAISS files, the export manifest)."""

    path: Path
    store: Store
    ann_min_vectors: int = ANN_MIN_VECTORS
    ann_rebuild_fraction: float = ANN_REBUILD_FRACTION
    # Why the recorded index (`reindex`) cannot be used, when it cannot: search goes on with the default.
    index_problem: str | None = None
    _index: VectorIndex | AnnIndex | IvfIndex | None = field(default=None, repr=False)
    _index_choice: str | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _library_id: str | None = field(default=None, repr=False)

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def close(self) -> None:
        self.store.close()

    @property
    def name(self) -> str:
        """How messages name the library: its folder, or its database on a server."""
        return self.store.name if self.store.on_server else str(self.path)

    @property
    def single_writer(self) -> bool:
        """One lock for the whole library (SQLite): a run marked running that is not ours is dead."""
        return not self.store.on_server

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- model ------------------------------------------------------------------------------
    def model_identity(self) -> dict | None:
        text = self.store.get_meta(IDENTITY_KEY)
        return json.loads(text) if text else None

    def model_mode(self) -> str | None:
        """The mode the library's latest images were embedded in (None before the first)."""
        return self.store.get_meta(MODE_KEY)

    def mode_family(self) -> str | None:
        """The family of the library's vectors; a library from before families were recorded has
        its mode's."""
        recorded = self.store.get_meta(FAMILY_KEY)
        mode = self.model_mode()
        return recorded or (vector_family(mode) if mode else None)

    def load_embedder(
        self,
        model: str | os.PathLike | None = None,
        *,
        mode: str | None = None,
        device: str | None = "auto",
    ) -> Embedder:
        """The recorded model (or `model`, which must be the same one) on `device` ('auto': CUDA,
        then MPS, then the CPU) in `mode`; imports torch.

        `mode` None or "auto" picks the device's fastest mode whose vectors are of the library's
        family (for a new library: interchangeable with fp32), else the mode the library's images
        were last embedded in; another mode must be of the library's family."""
        from siglip_search.devices import resolve_device
        from siglip_search.embedder import Embedder

        recorded = self.model_identity()
        if model is not None:
            name = model
        elif recorded is not None:
            name = recorded["model_id"]
        else:
            raise ModelNotRecordedError(
                f"library {self.path} has no model yet; index photos into it first: "
                f"siglip-search index FOLDER --library {self.path} --model ID_OR_PATH, with "
                f"{MODEL_CHOICES}"
            )
        target = resolve_device(device)  # before anything is read
        device_type = target.type if target is not None else "cpu"
        mode = mode or AUTO_MODE
        stored, recorded_mode = self.mode_family(), self.model_mode()
        if recorded is not None and mode == AUTO_MODE and stored and recorded_mode:
            if vector_family(pick_modes(AUTO_MODE, device_type).image_mode) != stored:
                mode = recorded_mode  # this device's pick makes other vectors: keep the library's
        if recorded is not None and mode != AUTO_MODE:
            self._check_mode(mode)
        embedder = Embedder.from_pretrained(name, mode=mode, device=device)
        if recorded is not None:
            self.check_model(
                embedder.identity(), embedder.image_mode, model_given=model is not None
            )
        return embedder

    def check_model(self, identity: dict, mode: str = "fp32", *, model_given: bool = True) -> None:
        """ModelMismatchError unless `identity` is the recorded model and `mode` (the mode images
        are embedded in) is of the library's vector family (siglip_search/modes.py). `model_given`:
        the user named the model (--model), rather than the library's record."""
        recorded = self.model_identity()
        if recorded is None:
            return
        differing = _identity_differences(recorded, identity)
        if differing:
            recorded_mode = self.model_mode() or "fp32"
            todo = (
                "leave out --model to use the recorded one, or use another --library"
                if model_given
                else "the files at the recorded model's place changed since: put the original "
                "model back there, or index into another --library with --model"
            )
            raise ModelMismatchError(
                f"library {self.path} was built with model {recorded.get('model_id')} "
                f"({_describe(recorded, recorded_mode)}), not {identity.get('model_id')} "
                f"({_describe(identity, mode)}); they differ in {', '.join(differing)}. "
                f"Vectors of two models cannot be mixed: {todo}"
            )
        self._check_mode(mode)

    def _check_mode(self, mode: str) -> None:
        """ModelMismatchError when `mode`'s vectors are not interchangeable with the library's."""
        built_in, stored = self.model_mode() or "fp32", self.mode_family() or "fp32"
        if vector_family(mode) != stored:
            takes = [m for m in MODES if vector_family(m) == stored] or [built_in]
            raise ModelMismatchError(
                f"library {self.path} was built in mode {built_in}, whose vectors differ from mode "
                f"{mode}'s by more than cosine {INTERCHANGEABLE_COSINE} allows; it takes modes "
                f"{', '.join(takes)} (leave out --mode), or use another --library"
            )

    def ensure_model(self, embedder: Embedder) -> None:
        """Record the embedder as the library's model, and the mode it embeds images in, on first
        use; refuse another model or an incompatible mode later (a compatible mode is recorded)."""
        identity, recorded = embedder.identity(), self.model_identity()
        if recorded is None:
            # A new library. Two indexers may start it at once (from two machines, on a server):
            # the first model and family recorded win, and the other is checked against them like
            # any later one.
            self.store.set_meta_once(FAMILY_KEY, embedder.family)
            self.store.set_meta_once(MODE_KEY, embedder.image_mode)
            text = self.store.set_meta_once(IDENTITY_KEY, json.dumps(identity, sort_keys=True))
            recorded = json.loads(text)
        self.check_model(identity, embedder.image_mode)
        if recorded.get("model_id") != identity.get("model_id"):
            # The same weights found at a new place (the old one may be gone).
            self.store.set_meta(IDENTITY_KEY, json.dumps(identity, sort_keys=True))
        if self.model_mode() != embedder.image_mode:
            self.store.set_meta(MODE_KEY, embedder.image_mode)  # the latest of its family

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
            if (
                index.generation != generation
                or index.dim != self._dim()
                or index.library_id != self.library_id
            ):
                raise IndexFileError("out of date, or built from another database")
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
        if index is None or index.dim != self._dim() or index.library_id != self.library_id:
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
        vectors = np.stack([v for part in sample for v in part.values()])
        index = AnnIndex.train_new(vectors, self._dim(), generation, self.library_id)
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
            index = build_index(
                self.store.iter_embeddings(), self._dim(), generation, self.library_id
            )
            if self.store.vectors_generation() == generation:
                break
        if save:
            self._save_quietly(index, self.index_path)
        return index

    @property
    def library_id(self) -> str | None:
        """The id made with the database: a FAISS file of this folder built from another database
        (the folder reused, a database restored or re-created) is never taken for this one's."""
        if self._library_id is None:
            self._library_id = self.store.library_id()
        return self._library_id

    def _dim(self) -> int:
        identity = self.model_identity()
        if identity is None:
            raise ModelNotRecordedError(f"library {self.path} is empty: index some folders first")
        return int(identity["dim"])


def open_library(
    path: str | os.PathLike | None = None, *, create: bool = True, database: str | None = None
) -> Library:
    """Open the library at `path` (default: default_library_dir()); create it when allowed.

    `database`, a URL such as postgresql://USER@HOST/DATABASE, puts the library on a database
    server (the command line's --database, default $SIGLIP_SEARCH_DATABASE_URL); `path` then only
    holds this machine's own files (default: default_local_dir())."""
    if database:
        return _open_server_library(path, database, create)
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


def _check_server_url(database: str) -> None:
    if "://" not in database or database.startswith("sqlite"):
        raise DatabaseUnsupportedError(
            f"--database takes a server's URL (postgresql://USER@HOST/DATABASE), not {database!r}; "
            "an SQLite library is a folder: give it with --library DIR"
        )


def _open_server_library(path: str | os.PathLike | None, database: str, create: bool) -> Library:
    _check_server_url(database)
    store = open_store(database, create=create)
    try:
        library_id = store.library_id() or "library"
        folder = (
            Path(path).expanduser() if path is not None else default_local_dir(library_id)
        ).resolve()
        check_utf8_path(folder, "library folder")
        if (folder / DB_NAME).is_file():
            raise LibraryFolderError(
                f"{folder} holds an SQLite library ({DB_NAME}); the library in {store.name} keeps this "
                "machine's files in a folder of its own: give --library another folder"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryFolderError(
                f"cannot create library folder {folder}: {exc.strerror}"
            ) from None
    except BaseException:
        store.close()
        raise
    return Library(folder, store)


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
