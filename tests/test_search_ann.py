"""The approximate index for large libraries, forced on for a small one: deletions, re-embedded
photos and filters must give the same answers as exact search."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import vectors as vectors_module
from indexer.library import open_library
from indexer.search import Searcher
from indexer.store import EmbeddedImage
from indexer.vectors import AnnIndex, VectorIndex

N = 300


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def big_library(tmp_path, embedder, database_url):
    """N stored embeddings with known values (no files needed to search), ANN forced on."""
    library = open_library(tmp_path / "library", database=database_url)
    library.ensure_model(embedder)
    root = library.store.add_root(str(tmp_path / "photos"))
    vectors = unit(np.random.default_rng(0).standard_normal((N, embedder.dim)))
    library.store.write_batch(
        [
            EmbeddedImage(
                root.id,
                f"{i // 100}/img_{i:04d}.jpg",
                1000 + i,
                i,
                f"fp{i}",
                64,
                48,
                f"2020-01-{1 + i % 28:02d}T12:00:00",
                None,
                embedder.model_id,
                vectors[i],
            )
            for i in range(N)
        ]
    )
    library.ann_min_vectors = 100
    yield library, vectors
    library.close()


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return ids[order].tolist()


def test_the_approximate_index_answers_like_exact_search(big_library, embedder, monkeypatch):
    library, vectors = big_library
    assert isinstance(library.vector_index(), AnnIndex)
    searcher = Searcher(library, embedder)
    ids = np.arange(1, N + 1)
    for row in (0, 17, 150, 299):
        query = unit(
            vectors[row] + 0.3 * unit(np.random.default_rng(row).standard_normal(embedder.dim))
        )
        page = searcher.search_vector(query, k=10)
        assert [h.id for h in page.hits] == exact_top(vectors, ids, query, 10)
        assert page.hits[0].cosine == pytest.approx(
            float(vectors[page.hits[0].id - 1] @ query), abs=1e-6
        )  # exact
    for subset_limit in (50_000, 10):  # a filter scored whole, or one the scan must dig deeper for
        monkeypatch.setattr(vectors_module, "ANN_SUBSET_LIMIT", subset_limit)
        hits = searcher.search_vector(vectors[5], k=5, folder="2").hits  # only ids 201..300
        assert [h.id for h in hits] == exact_top(vectors[200:], ids[200:], vectors[5], 5)


def test_deleted_and_re_embedded_photos_never_come_back(big_library, embedder):
    library, vectors = big_library
    library.ann_rebuild_fraction = 0.5
    searcher = Searcher(library, embedder)
    index = library.vector_index()
    deleted = list(range(1, 61))  # 20 %: tombstones, no rebuild yet
    library.store.delete_images(deleted)
    assert library.vector_index() is index and index.dead_fraction == pytest.approx(0.2)
    for row in range(0, 60, 7):
        hits = searcher.search_vector(vectors[row], k=20).hits
        assert not {h.id for h in hits} & set(deleted)
        assert len(hits) == 20
    # A changed photo is re-embedded under the same id: its old vector must not answer for it.
    root_id = library.store.roots()[0].id
    moved_vector = unit(-vectors[100])
    library.store.write_batch(
        [
            EmbeddedImage(
                root_id,
                "1/img_0100.jpg",
                5,
                5,
                "new",
                64,
                48,
                None,
                None,
                embedder.model_id,
                moved_vector,
            )
        ]
    )
    top = searcher.search_vector(vectors[100], k=3).hits
    assert 101 not in [h.id for h in top]
    again = searcher.search_vector(moved_vector, k=1).hits[0]
    assert again.id == 101 and again.cosine == pytest.approx(1.0, abs=1e-5)
    # More deletions cross the rebuild fraction: a fresh index without tombstones.
    library.store.delete_images(range(61, 201))
    rebuilt = library.vector_index()
    assert rebuilt is not index and rebuilt.dead_fraction == 0.0 and len(rebuilt) == N - 200
    assert min(h.id for h in searcher.search_vector(vectors[150], k=100).hits) > 200


def test_the_approximate_index_survives_a_restart_and_catches_up(
    big_library, embedder, tmp_path, database_url
):
    library, vectors = big_library
    library.vector_index()
    library.store.delete_images([3])
    reopened = open_library(library.path, database=database_url)
    reopened.ann_min_vectors = 100
    try:
        index = reopened.vector_index()
        assert isinstance(index, AnnIndex) and 3 not in index.ids().tolist() and len(index) == N - 1
        reopened.ann_min_vectors = 10_000  # a library below the limit searches exactly
        reopened.store.delete_images([4])
        assert isinstance(reopened.vector_index(), VectorIndex)
    finally:
        reopened.close()
