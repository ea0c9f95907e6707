"""The demo library: the repository's sample photos indexed with its demo model, tagged, thumbnailed.

Everything comes from the checkout (data/samples, data/models/siglip-demo), so it works offline.
A second run only picks up what changed (the indexer is incremental).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from siglip_search.cli import DEMO_MODEL, SAMPLES
from siglip_search.errors import SiglipSearchError

from .thumbnails import Thumbnails, thumbnail_dir


class DemoMissingError(SiglipSearchError):
    """The demo model or the sample photos are not where the repository keeps them."""


def build_demo_library(library_dir: str | os.PathLike, *, samples: Path = SAMPLES, model: Path = DEMO_MODEL,
                       vocabulary: str | os.PathLike | None = None, progress: bool = True) -> str:  # fmt: skip
    """Index (or refresh) `samples` into `library_dir` with `model`, tag it with `vocabulary`
    (default: the bundled one), make thumbnails. Returns a one-line summary."""
    for needed, what in ((samples, "sample photos"), (model, "demo model")):
        if not needed.is_dir():
            raise DemoMissingError(
                f"the {what} are missing at {needed}; they ship with the repository checkout"
            )
    with open_library(library_dir, create=True) as library:
        with lock_library(library, wait_s=30), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            embedder = library.load_embedder(None if library.model_identity() else model)
            summary = index_paths(library, [samples], embedder, progress=progress)
            tagged = _tag(library, embedder, vocabulary, progress)
        _make_thumbnails(library)
        return f"demo library {library.path}: {summary.line()}" + (f"; {tagged}" if tagged else "")


def _tag(library, embedder, vocabulary: str | os.PathLike | None, progress: bool) -> str:
    from indexer.tags import tag_library
    from indexer.vocabulary import load_vocabulary

    return tag_library(library, embedder, load_vocabulary(vocabulary), progress=progress).line()


def _make_thumbnails(library) -> None:
    thumbnails = Thumbnails(thumbnail_dir(library.path))
    try:
        rows = [(row.id, row.path) for row in library.store.iter_images()]
        thumbnails.get_many(rows)
    finally:
        thumbnails.close()
