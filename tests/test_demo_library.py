"""`siglip-search demo --library DIR` on a folder that is not a demo library: refused, left as it was."""

from __future__ import annotations

import pytest
from indexer_fixtures import make_photo_folder

from indexer.jobs import index_paths
from indexer.library import open_library
from siglip_search.embedder import Embedder
from ui.demo import DemoLibraryError, build_demo_library


@pytest.fixture
def vocabulary(tmp_path):
    path = tmp_path / "vocabulary.txt"
    path.write_text("colour|red|a red photo\ncolour|blue|a blue photo\n")
    return path


def _roots(library_dir):
    with open_library(library_dir) as library:
        return sorted(root.path for root in library.store.roots()), library.store.counts()


def test_the_demo_refuses_the_users_own_library_and_leaves_it_as_it_was(
    tmp_path, tiny_checkpoint, vocabulary
):
    pictures, samples = tmp_path / "Pictures", tmp_path / "samples"
    make_photo_folder(pictures, n=4)
    make_photo_folder(samples, n=3)
    library_dir = tmp_path / "my library"
    # the user's library, the same model even
    with open_library(library_dir, create=True) as library:
        index_paths(library, [pictures], Embedder.from_pretrained(tiny_checkpoint), progress=False)
    before = _roots(library_dir)
    with pytest.raises(DemoLibraryError, match=f"not a demo library: it holds {pictures}"):
        build_demo_library(
            library_dir,
            samples=samples,
            model=tiny_checkpoint,
            vocabulary=vocabulary,
            progress=False,
        )
    assert _roots(library_dir) == before, "no sample photos may be mixed into the user's library"


def test_the_demo_refuses_a_library_of_another_models_vectors(
    tmp_path, tiny_checkpoint, other_tiny_checkpoint, vocabulary
):
    samples = tmp_path / "samples"
    make_photo_folder(samples, n=3)
    library_dir = tmp_path / "library"
    with open_library(library_dir, create=True) as library:
        index_paths(
            library, [samples], Embedder.from_pretrained(other_tiny_checkpoint), progress=False
        )
    with pytest.raises(DemoLibraryError, match="another model .* than the demo model"):
        build_demo_library(
            library_dir,
            samples=samples,
            model=tiny_checkpoint,
            vocabulary=vocabulary,
            progress=False,
        )
    # The refused library still is the other model's, and a demo library of the demo model still builds.
    with open_library(library_dir) as library:
        assert library.model_identity()["model_id"] == str(other_tiny_checkpoint)
    line = build_demo_library(
        tmp_path / "demo",
        samples=samples,
        model=tiny_checkpoint,
        vocabulary=vocabulary,
        progress=False,
    )
    assert "added" in line
