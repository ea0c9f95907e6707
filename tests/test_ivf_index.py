"""The sharded on-disk IVF index (`reindex --index ivfpq`): a sharded build answers as a one-process
build of the same trained index; deleted photos never come back, re-embedded ones answer with their
new vector; the choice is recorded and survives a restart; search, duplicates and status use it.

Cheap quantizers (Flat, 4-bit PQ) on a few hundred vectors: 8-bit PQ takes minutes to train."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import make_photo_folder

from indexer import ivf
from indexer.duplicates import find_duplicates
from indexer.ivf import IvfIndex
from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.reindex import reindex_library
from indexer.search import Searcher
from indexer.status import library_status
from indexer.store import EmbeddedImage
from indexer.vectors import VectorIndex

REPO = Path(__file__).resolve().parents[1]
N = 600


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around n / 20 centres, as photo embeddings cluster."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n // 20, dim)))
    return unit(
        centres[rng.integers(0, len(centres), n)]
        + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    )


def stored(root_id: int, i: int, vector: np.ndarray, model_id: str) -> EmbeddedImage:
    return EmbeddedImage(
        root_id,
        f"{i // 100}/img_{i:04d}.jpg",
        1000 + i,
        i,
        f"fp{i}",
        64,
        48,
        None,
        None,
        model_id,
        vector,
    )


@pytest.fixture
def big_library(tmp_path, embedder):
    """N stored embeddings with known values (no files needed to search)."""
    library = open_library(tmp_path / "library")
    library.ensure_model(embedder)
    root = library.store.add_root(str(tmp_path / "photos"))
    vectors = clustered(N, embedder.dim)
    library.store.write_batch([stored(root.id, i, vectors[i], embedder.model_id) for i in range(N)])
    yield library, vectors
    library.close()


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return ids[order].tolist()


def test_a_sharded_build_answers_with_the_ids_and_scores_of_a_one_process_build(tmp_path, embedder):
    vectors = clustered(2_000, embedder.dim)
    ids = np.arange(1, 2_001, dtype=np.int64) * 7  # ids are the library's, not positions
    queries = unit(
        vectors[:40] + 0.3 * unit(np.random.default_rng(1).standard_normal((40, embedder.dim)))
    )
    for factory in ("IVF16,Flat", f"IVF16,PQ{embedder.dim // 4}x4"):
        trained = ivf.train_empty(vectors[::2], factory)
        answers = []
        for shards in (1, 3, 7):
            folder = tmp_path / f"{factory}-{shards}"
            folder.mkdir()
            files = []
            for number, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
                files.append(folder / f"shard-{number}.faiss")
                files[-1].write_bytes(ivf.fill_shard(trained, [(ids[part], vectors[part])]))
            assert ivf.merge_shards(trained, files, ids, folder) == len(ids)
            answers.append(IvfIndex.load(folder, nprobe=4).search(queries, 10))
        for cosines, found in answers[1:]:
            np.testing.assert_array_equal(found, answers[0][1])  # the same ids, in the same order
            np.testing.assert_array_equal(cosines, answers[0][0])  # and bit-identical scores
        assert (answers[0][1] >= 0).all()


def test_reindex_in_processes_answers_as_one_shard_and_search_finds_the_exact_neighbours(
    big_library, embedder
):
    library, vectors = big_library
    ids = np.arange(1, N + 1)
    queries = unit(
        vectors[::37] + 0.2 * unit(np.random.default_rng(2).standard_normal((17, embedder.dim)))
    )
    answers = []
    for shards in (2, 1):
        summary = reindex_library(
            library, "ivfpq", shards=shards, factory=f"IVF8,PQ{embedder.dim // 4}x4", nprobe=8
        )
        assert (summary.count, summary.shards) == (N, shards)
        index = library.vector_index()
        assert isinstance(index, IvfIndex) and len(index) == N
        answers.append(index.search(queries, 20))
        assert len(list(library.path.glob("ivfpq-*"))) == 1  # the previous build is gone
    np.testing.assert_array_equal(answers[0][1], answers[1][1])
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
    searcher = Searcher(library, embedder)
    for query in queries:
        hits = searcher.search_vector(query, k=10).hits
        assert [h.id for h in hits] == exact_top(vectors, ids, query, 10)  # re-ranked exactly
        assert hits[0].cosine == pytest.approx(float(vectors[hits[0].id - 1] @ query), abs=1e-6)


def test_a_deleted_photo_never_comes_back_and_a_re_embedded_one_answers_with_its_new_vector(
    big_library, embedder
):
    library, vectors = big_library
    reindex_library(library, "ivfpq", shards=2, factory="IVF8,Flat", nprobe=2)
    searcher = Searcher(library, embedder)
    deleted = list(range(1, 151))
    library.store.delete_images(deleted)
    root_id = library.store.roots()[0].id
    moved_vector = unit(-vectors[300])  # photo 301 changed: same id, new vector
    added = unit(np.random.default_rng(9).standard_normal((5, embedder.dim)))
    library.store.write_batch(
        [stored(root_id, 300, moved_vector, embedder.model_id)]
        + [stored(root_id, N + i, added[i], embedder.model_id) for i in range(5)]
    )
    for reopened in (False, True):  # tombstones come from the database, so a restart keeps them
        if reopened:
            library.close()
            library = open_library(library.path, create=False)
            searcher = Searcher(library, embedder)
        index = library.vector_index()
        assert isinstance(index, IvfIndex) and len(index) == N - 150 + 5
        assert index.changes() == (6, 151)  # photo 301 re-embedded: in memory, tombstoned on disk
        for row in range(0, 150, 11):
            hits = searcher.search_vector(vectors[row], k=30).hits
            assert len(hits) == 30 and not {h.id for h in hits} & set(deleted)
        assert 301 not in [h.id for h in searcher.search_vector(vectors[300], k=5).hits]
        again = searcher.search_vector(moved_vector, k=1).hits[0]
        assert again.id == 301 and again.cosine == pytest.approx(1.0, abs=1e-5)
        assert searcher.search_vector(added[2], k=1).hits[0].id == N + 3
        hits = searcher.search_vector(vectors[5], k=5, folder="4").hits  # a narrow filter: 400..499
        assert [h.id for h in hits] == exact_top(
            vectors[400:500], np.arange(401, 501), vectors[5], 5
        )
    library.close()


def test_the_choice_survives_a_restart_until_auto_and_a_missing_index_falls_back(
    big_library, embedder
):
    library, vectors = big_library
    reindex_library(library, "ivfpq", shards=2, factory="IVF8,Flat", nprobe=8)
    folder = next(library.path.glob("ivfpq-*"))
    reopened = open_library(library.path, create=False)
    assert isinstance(reopened.vector_index(), IvfIndex)
    report = library_status(reopened).index
    assert report is not None and (report.factory, report.photos, report.problem) == (
        "IVF8,Flat",
        N,
        None,
    )
    shutil.rmtree(folder)  # lost: search goes on with the default index, status says why
    reopened.close()
    reopened = open_library(library.path, create=False)
    assert isinstance(reopened.vector_index(), VectorIndex)
    assert "missing" in (reopened.index_problem or "")
    report = library_status(reopened).index
    assert report is not None and "missing" in (report.problem or "")
    top = Searcher(reopened, embedder).search_vector(vectors[7], k=3).hits
    assert top[0].id == 8
    reindex_library(reopened, "auto")
    assert library_status(reopened).index is None and not list(library.path.glob("ivfpq-*"))
    assert isinstance(reopened.vector_index(), VectorIndex)
    reopened.close()


def test_duplicates_are_found_through_the_on_disk_index(big_library, embedder):
    library, vectors = big_library
    root_id = library.store.roots()[0].id
    near = unit(
        vectors[:20] + 0.02 * unit(np.random.default_rng(4).standard_normal((20, embedder.dim)))
    )
    library.store.write_batch(
        [stored(root_id, 1000 + i, near[i], embedder.model_id) for i in range(20)]
    )
    default = find_duplicates(library, 0.97)
    reindex_library(library, "ivfpq", shards=2, factory=f"IVF8,PQ{embedder.dim // 4}x4", nprobe=2)
    assert isinstance(library.vector_index(), IvfIndex)
    through_ivf = find_duplicates(library, 0.97)
    assert len(default.groups) >= 18
    assert [[r.id for r in g.images] for g in through_ivf.groups] == [
        [r.id for r in g.images] for g in default.groups
    ]


def test_reindex_from_the_command_line_keeps_search_output_clean(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 40)
    library_dir = tmp_path / "library"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "siglip_search", *args, "--library", str(library_dir)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    from siglip_search.embedder import Embedder

    library = open_library(library_dir)
    with lock_library(library):
        index_paths(library, [photos], Embedder.from_pretrained(tiny_checkpoint), progress=False)
    library.close()
    before = json.loads(cli("search", "a red circle", "--json", "-k", "10").stdout)
    done = cli(
        "reindex", "--index", "ivfpq", "--shards", "2", "--factory", "IVF4,Flat", "--nprobe", "4"
    )
    assert done.stdout.startswith("ivfpq index of 40 photos (IVF4,Flat, 2 shards): train ")
    assert "index     ivfpq IVF4,Flat of 40 photos, built " in cli("status").stdout
    after = json.loads(
        cli("search", "a red circle", "--json", "-k", "10").stdout
    )  # FAISS printed nothing in it
    assert [hit["id"] for hit in after] == [hit["id"] for hit in before]
    assert [hit["cosine"] for hit in after] == pytest.approx(
        [hit["cosine"] for hit in before], abs=1e-6
    )
    assert cli("reindex", "--index", "auto").stdout.startswith(
        "the library searches with its default index"
    )
