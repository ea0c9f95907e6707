"""The demo library: the repository's sample photos indexed with its demo model, tagged, thumbnailed.

Everything is bundled (siglip_search.resources: data/samples, data/models/siglip-demo), so it works
offline, from a checkout or an installed wheel.
A second run only picks up what changed (the indexer is incremental).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from indexer.errors import ModelMismatchError
from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.tags import tag_library
from indexer.vocabulary import load_vocabulary
from siglip_search.errors import SiglipSearchError
from siglip_search.resources import DEMO_MODEL, SAMPLES

from .thumbnails import Thumbnails, thumbnail_dir


class DemoMissingError(SiglipSearchError):
    """The demo model or the sample photos are not where the repository keeps them."""


class DemoLibraryError(SiglipSearchError):
    """`--library` names a library that holds other photos or another model's vectors."""


def build_demo_library(
    library_dir: str | os.PathLike,
    *,
    samples: Path = SAMPLES,
    model: Path = DEMO_MODEL,
    vocabulary: str | os.PathLike | None = None,
    progress: bool = True,
    mode: str = "auto",
    device: str = "auto",
) -> str:
    """Index (or refresh) `samples` into `library_dir` with `model` on `device`, tag it with
    `vocabulary` (default: the bundled one), make thumbnails. Returns a one-line summary."""
    for needed, what in ((samples, "sample photos"), (model, "demo model")):
        if not needed.is_dir():
            raise DemoMissingError(
                f"the {what} are missing at {needed}; they ship with the repository checkout"
            )
    with open_library(library_dir, create=True) as library:
        with lock_library(library, wait_s=30), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            embedder = _demo_embedder(library, samples, model, mode, device)
            summary = index_paths(library, [samples], embedder, progress=progress)
            tagged = _tag(library, embedder, vocabulary, progress)
        _make_thumbnails(library)
        return f"demo library {library.path}: {summary.line()}" + (f"; {tagged}" if tagged else "")


def _demo_embedder(library, samples: Path, model: Path, mode: str = "auto", device: str = "auto"):
    """The demo model, for a library that holds only the sample photos and only its vectors. The demo
    adds the samples and re-tags every photo with its vocabulary: another library (`--library` naming
    the user's own) would gain 300 pictures of shapes and lose its tags."""
    others = [root.path for root in library.store.roots() if Path(root.path) != samples.resolve()]
    if others:
        raise DemoLibraryError(
            f"{library.path} is not a demo library: it holds {others[0]}"
            f"{f' and {len(others) - 1} more folders' if len(others) > 1 else ''}, which the demo "
            "would mix its sample photos into and re-tag; leave out --library or pick an empty folder"
        )
    try:
        return library.load_embedder(model, mode=mode, device=device)
    except ModelMismatchError:
        recorded = (library.model_identity() or {}).get("model_id")
        raise DemoLibraryError(
            f"{library.path} holds vectors of another model ({recorded}) than the demo model {model}; "
            "leave out --library (each demo model gets its own demo library) or pick an empty folder"
        ) from None


def _tag(library, embedder, vocabulary: str | os.PathLike | None, progress: bool) -> str:
    return tag_library(library, embedder, load_vocabulary(vocabulary), progress=progress).line()


def _make_thumbnails(library) -> None:
    thumbnails = Thumbnails(thumbnail_dir(library.path))
    try:
        rows = [(row.id, row.path) for row in library.store.iter_images()]
        thumbnails.get_many(rows)
    finally:
        thumbnails.close()
