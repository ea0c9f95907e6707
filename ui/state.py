"""What a running server holds: the library, the model loaded once, the searcher and the thumbnails."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.errors import LibraryNotFoundError, ModelNotRecordedError
from indexer.library import DB_NAME, Library, default_library_dir, open_library
from indexer.search import Searcher

from .thumbnails import Thumbnails, thumbnail_dir

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder


@dataclass
class AppState:
    """Shared by every browser session. Searches run concurrently; jobs that write the library
    (index, tag, export) run one at a time, and also take the library's own lock."""

    library_dir: Path
    thumbnails: Thumbnails
    library: Library | None = None
    embedder: Embedder | None = None
    searcher: Searcher | None = None
    model: str | None = None  # the model for a library that has none yet
    mode: str = "auto"  # what the model runs in (siglip_search.modes)
    max_pixels: int | None = None
    vocabulary: str | None = None  # a vocabulary file; None: the bundled one
    device: str = "auto"  # where the model runs (siglip_search.devices)
    # no indexing, tagging or export from the page (search and tag-an-image only)
    read_only: bool = False
    database: str | None = None  # the library's database on a server, if it is on one
    job_lock: threading.Lock = field(default_factory=threading.Lock)
    _open_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.thumbnails.close()
        if self.library is not None:
            self.library.close()


def load_state(
    library_dir: str | os.PathLike | None,
    *,
    model: str | os.PathLike | None = None,
    max_pixels: int | None = None,
    vocabulary: str | None = None,
    read_only: bool = False,
    mode: str = "auto",
    device: str = "auto",
    database: str | None = None,
) -> AppState:
    """Open the library (if there is one yet) and load its model now, on `device`, so the first
    query is fast.

    Without a library, the page still opens: its Library tab indexes a first folder with `model`.
    A library on a database server (`database`) must exist already, unless `model` is given for
    indexing from the page; `library_dir` is then the folder of this machine's own files.
    """
    from siglip_search.devices import resolve_device

    resolve_device(device)  # a device this machine lacks is refused now, not at the first query
    library = None
    if database:
        # Only with a model to index with may the page set up a library in an empty database.
        library = open_library(
            library_dir, create=model is not None and not read_only, database=database
        )
        folder = library.path
    else:
        folder = Path(library_dir or default_library_dir()).expanduser().resolve()
        if (folder / DB_NAME).is_file():
            library = open_library(folder, create=False)
    state = AppState(
        folder,
        Thumbnails(thumbnail_dir(folder), max_pixels=max_pixels),
        model=str(model) if model else None,
        max_pixels=max_pixels,
        vocabulary=vocabulary,
        read_only=read_only,
        mode=mode,
        device=device,
        library=library,
        database=database,
    )
    if state.library is not None:
        if state.library.model_identity() is not None:
            load_model(state)
    elif model is not None:
        load_model(state)
    return state


def load_model(state: AppState) -> None:
    """Load the model once: the library's recorded one, or `state.model` for a library that has
    none yet; then a searcher over the library once it holds vectors."""
    library = state.library
    recorded = library if library is not None and library.model_identity() is not None else None
    if state.embedder is None:
        if recorded is not None:
            state.embedder = recorded.load_embedder(mode=state.mode, device=state.device)
        elif state.model is not None:
            from siglip_search.embedder import Embedder  # imports torch: only to load a model

            state.embedder = Embedder.from_pretrained(
                state.model, mode=state.mode, device=state.device
            )
        else:
            raise ModelNotRecordedError(
                f"the library at {state.library_dir} has no model yet; start the server with "
                "--model ID_OR_PATH"
            )
    if recorded is not None and state.searcher is None:
        state.searcher = Searcher(recorded, state.embedder)  # checks it is the library's model


def require_library(state: AppState, *, create: bool = False) -> Library:
    """The open library; LibraryNotFoundError (a message for the page) when there is none yet."""
    with state._open_lock:
        if state.library is None:
            if not create:
                raise LibraryNotFoundError(
                    f"No library at {state.library_dir} yet. Index a folder in the Library tab first."
                )
            state.library = open_library(state.library_dir, create=True, database=state.database)
        return state.library


def require_searcher(state: AppState) -> Searcher:
    library = require_library(state)
    if state.searcher is None:
        if library.model_identity() is None:
            raise LibraryNotFoundError(
                "The library has no photos yet. Index a folder in the Library tab first."
            )
        with state._open_lock:
            if state.searcher is None:
                load_model(state)
    assert state.searcher is not None  # load_model makes one for a library that holds vectors
    return state.searcher
