"""Scan, store and vectors on their own: folder walking, the database schema, the FAISS file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from indexer_fixtures import draw_photo, permissions_are_enforced
from layering import imported_roots

from indexer.errors import IndexFileError, SchemaError
from indexer.library import default_library_dir
from indexer.scan import fingerprint_file, scan_folder
from indexer.store import SCHEMA_VERSION, EmbeddedImage, FailedImage, FileUpdate, open_store
from indexer.vectors import VectorIndex, sidecar_path

# --- scan ---------------------------------------------------------------------------------------


def test_scan_finds_images_by_extension_and_skips_junk(tmp_path):
    for rel in [
        "a.jpg",
        "B.JPEG",
        "c.Png",
        "d.webp",
        "e.gif",
        "f.bmp",
        "g.tif",
        "h.TIFF",
        "deep/x/y/z.jpg",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    for rel in [
        "notes.txt",
        "movie.mp4",
        "._a.jpg",
        ".DS_Store",
        "Thumbs.db",
        "@eaDir/a.jpg/SYNOPHOTO.jpg",
        "#recycle/old.jpg",
        ".hidden/secret.jpg",
        "sub/@eaDir/t.jpg",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    result = scan_folder(str(tmp_path))
    assert [f.rel_path for f in result.files] == [
        "B.JPEG",
        "a.jpg",
        "c.Png",
        "d.webp",
        "deep/x/y/z.jpg",
        "e.gif",
        "f.bmp",
        "g.tif",
        "h.TIFF",
    ]
    assert all(f.error is None and f.size_bytes == 1 for f in result.files)
    assert all(os.path.isabs(f.path) for f in result.files)


def test_scan_does_not_follow_a_folder_link_that_leads_out_of_the_root(tmp_path):
    root, elsewhere = tmp_path / "photos", tmp_path / "home"
    (root / "trips").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "trips" / "a.jpg").write_bytes(b"x")
    (elsewhere / "secret.jpg").write_bytes(b"x")
    os.symlink(elsewhere, root / "home-link")  # e.g. a link to ~ or / left in a photo folder
    os.symlink(root / "trips", root / "trips-again")  # inside the root: followed (once)

    result = scan_folder(str(root))

    assert [f.rel_path for f in result.files] == ["trips/a.jpg"]
    assert result.outside_links == ["home-link"]


def test_scan_follows_folder_symlinks_once_and_reports_bad_file_links(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "p.jpg").write_bytes(b"x")
    os.symlink(root, root / "a" / "up")  # loop back to the root
    os.symlink(root / "a", root / "again")  # the same folder under a second name
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    os.symlink(root / "self.jpg", root / "self.jpg")
    files = {f.rel_path: f.error for f in scan_folder(str(root)).files}
    assert files == {"a/p.jpg": None, "broken.jpg": "broken symlink", "self.jpg": "symlink loop"}


def test_scan_reports_unreadable_folders_instead_of_failing(tmp_path):
    if not permissions_are_enforced(tmp_path):
        pytest.skip("root can list every folder")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "p.jpg").write_bytes(b"x")
    os.chmod(tmp_path / "locked", 0)
    try:
        result = scan_folder(str(tmp_path))
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert result.files == [] and result.unreadable_dirs == ["locked"]


def test_fingerprint_ignores_name_and_place_but_not_content(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "renamed.jpg").write_bytes(data)
    assert fingerprint_file(tmp_path / "a.jpg") == fingerprint_file(
        tmp_path / "sub" / "renamed.jpg"
    )
    (tmp_path / "b.jpg").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # last byte differs
    (tmp_path / "c.jpg").write_bytes(data + b"\0")  # longer
    fingerprints = {fingerprint_file(tmp_path / n) for n in ["a.jpg", "b.jpg", "c.jpg"]}
    assert len(fingerprints) == 3


# --- store --------------------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path, database_url) -> str:
    """Where a store test's database lives: an SQLite file, or a fresh database on the test server."""
    return database_url or str(tmp_path / "library.db")


def _execute(store, sql: str, params: list[dict] | dict | None = None) -> None:
    """Plain SQL on the store's database, past the Store (as another program would write)."""
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params or {})


def _embedded(root_id: int, rel: str, seed: int, dim: int = 4) -> EmbeddedImage:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return EmbeddedImage(
        root_id, rel, 10, 20, f"fp{seed}", 8, 6, None, None, "m", v / np.linalg.norm(v)
    )


def test_store_round_trips_images_embeddings_and_failures(tmp_path, database):
    store = open_store(database)
    root = store.add_root(str(tmp_path / "photos"))
    assert store.add_root(str(tmp_path / "photos")) == root  # registering twice is harmless
    store.write_batch(
        [_embedded(root.id, "a.jpg", 1), _embedded(root.id, "b/c.jpg", 2)],
        [FailedImage(root.id, "bad.jpg", 5, 6, "not an image")],
    )
    assert store.counts().images == 2 and store.counts().failed == 1
    ids, vectors = next(store.iter_embeddings())
    assert vectors.dtype == np.float32 and vectors.shape == (2, 4)
    np.testing.assert_array_equal(vectors[0], _embedded(root.id, "a.jpg", 1).embedding)
    rows = store.images_by_ids([int(ids[1]), 999, int(ids[0])])
    assert [r.rel_path for r in rows] == ["b/c.jpg", "a.jpg"]  # order kept, unknown id dropped
    assert rows[0].path == os.path.join(str(tmp_path / "photos"), "b", "c.jpg")
    [failure] = store.failures()
    assert (failure.rel_path, failure.status, failure.error) == (
        "bad.jpg",
        "failed",
        "not an image",
    )

    # Writing the same path again replaces the row: one row per (root, rel_path).
    before = store.vectors_generation()
    store.write_batch([_embedded(root.id, "a.jpg", 3)])
    assert store.counts().images == 2 and store.vectors_generation() == before + 1
    store.update_locations([FileUpdate(int(ids[0]), root.id, "moved/a.jpg", 10, 99)])
    assert store.image_by_id(int(ids[0])).rel_path == "moved/a.jpg"
    assert store.vectors_generation() == before + 1  # a move does not change any vector
    assert store.delete_images([int(ids[0])]) == 1
    assert store.image_by_id(int(ids[0])) is None and store.vectors_generation() == before + 2
    store.close()


def test_database_refuses_duplicate_paths_in_a_root(database):
    store = open_store(database)
    root = store.add_root("/photos")
    store.write_batch([_embedded(root.id, "a.jpg", 1)])
    with pytest.raises(sa.exc.IntegrityError):
        _execute(
            store,
            "INSERT INTO images (root_id, rel_path, size_bytes, mtime_ns, status, indexed_at) "
            "VALUES (:root, 'a.jpg', 1, 1, 'ok', '2024-01-01')",
            {"root": root.id},
        )
    store.close()


def test_database_uses_wal_so_readers_work_during_writes(tmp_path):
    store = open_store(tmp_path / "library.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


# The first released schema, frozen here as the SQL it created: no tags table yet.
SCHEMA_V1 = """
CREATE TABLE meta (key VARCHAR(64) NOT NULL PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE roots (id INTEGER NOT NULL PRIMARY KEY, path TEXT NOT NULL UNIQUE, added_at DATETIME NOT NULL);
CREATE TABLE images (
    id INTEGER NOT NULL PRIMARY KEY, root_id INTEGER NOT NULL REFERENCES roots (id) ON DELETE CASCADE,
    rel_path TEXT NOT NULL, size_bytes BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, fingerprint VARCHAR(64),
    width INTEGER, height INTEGER, taken_at VARCHAR(32), camera TEXT, status VARCHAR(16) NOT NULL,
    error TEXT, model_id TEXT, embedding BLOB, indexed_at DATETIME NOT NULL, UNIQUE (root_id, rel_path));
CREATE INDEX ix_images_fingerprint ON images (fingerprint);
CREATE TABLE runs (
    id INTEGER NOT NULL PRIMARY KEY, started_at DATETIME NOT NULL, finished_at DATETIME,
    status VARCHAR(16) NOT NULL, roots TEXT, added INTEGER NOT NULL, updated INTEGER NOT NULL,
    moved INTEGER NOT NULL, removed INTEGER NOT NULL, failed INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO roots VALUES (1, '/photos', '2024-01-01 00:00:00');
INSERT INTO images (id, root_id, rel_path, size_bytes, mtime_ns, status, embedding, indexed_at)
    VALUES (7, 1, 'a.jpg', 10, 20, 'ok', X'0000803F000000000000000000000000', '2024-01-01 00:00:00');
"""


def test_a_version_1_library_is_migrated_and_keeps_its_images(tmp_path):
    with sqlite3.connect(tmp_path / "library.db") as conn:
        conn.executescript(SCHEMA_V1)
    store = open_store(tmp_path / "library.db")
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "7"
    image = store.image_by_id(7)
    assert (
        image.rel_path == "a.jpg" and (image.lens, image.latitude, image.longitude) == (None,) * 3
    )
    (root,) = store.roots()
    assert (root.path, root.exclude, root.passed_over) == ("/photos", (), None)
    # Its photo's lens and position were never read: the next `index` run reads them (metadata.py).
    assert [r.id for r in store.images_missing_facts([root.id])] == [7]
    assert store.reject_tags([(7, "beach")]) == 1 and store.counts().rejected_tags == 1
    ids, vectors = next(store.iter_embeddings())
    assert ids.tolist() == [7] and vectors.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    with sqlite3.connect(tmp_path / "library.db") as conn:
        conn.execute(
            "INSERT INTO tags (image_id, tag, score, source) VALUES (7, 'beach', 0.9, 'auto')"
        )
    assert store.counts().tags == 1
    store.close()


# Version 2 added the tags table; its vectors generation was one counter row in meta.
SCHEMA_V2 = (
    SCHEMA_V1.replace("'schema_version', '1'", "'schema_version', '2'")
    + """
CREATE TABLE tags (
    id INTEGER NOT NULL PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    tag TEXT NOT NULL, score FLOAT, source VARCHAR(32) NOT NULL, model TEXT, vocabulary_version VARCHAR(64),
    UNIQUE (image_id, tag, source));
CREATE INDEX ix_images_indexed_at ON images (indexed_at, id);
INSERT INTO meta VALUES ('vectors_generation', '5');
INSERT INTO meta VALUES ('zero_shot_tagger', '{"key": "k", "after": ["2024-01-01T00:00:00", 7]}');
"""
)


def test_a_version_2_library_keeps_its_generation_and_its_readers_start_over_once(tmp_path):
    with sqlite3.connect(tmp_path / "library.db") as conn:
        conn.executescript(SCHEMA_V2)
    store = open_store(tmp_path / "library.db")
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert store.get_meta("vectors_generation") is None
    assert store.vectors_generation() == 5 and len(store.library_id() or "") == 32
    [chunk] = store.iter_embeddings_after(None)
    assert chunk.ids.tolist() == [7] and chunk.last == (5, 7)
    assert list(store.iter_embeddings_after(chunk.last)) == []
    store.write_batch([_embedded(1, "b.jpg", 2)])  # the next write comes after, in a new generation
    assert store.vectors_generation() == 6
    assert [c.ids.tolist() for c in store.iter_embeddings_after(chunk.last)] == [[8]]
    store.close()


def test_a_library_from_a_newer_version_or_a_foreign_database_is_refused(database):
    store = open_store(database)
    store.set_meta("schema_version", "99")
    store.close()
    with pytest.raises(SchemaError, match="newer than this siglip-search"):
        open_store(database)
    # Another program's tables in the database.
    engine = sa.create_engine(database if "://" in database else f"sqlite:///{database}")
    with engine.begin() as conn:
        for table in ("tags", "tag_rejections", "images", "runs", "generations", "roots", "meta"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text("CREATE TABLE notes (x TEXT)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="not a siglip-search library"):
        open_store(database)


# --- vectors ------------------------------------------------------------------------------------


def _ten_vectors() -> tuple[np.ndarray, np.ndarray]:
    """Ten unit vectors along the axes of R^10, with ids 100..109: known answers."""
    return np.arange(100, 110, dtype=np.int64), np.eye(10, dtype=np.float32)


def test_search_returns_ids_best_first_and_never_a_removed_one():
    ids, vectors = _ten_vectors()
    index = VectorIndex(10)
    index.add(ids, vectors)
    query = np.zeros((1, 10), np.float32)
    query[0, 3], query[0, 7] = 0.8, 0.6
    scores, found = index.search(query, 3)
    assert found[0, :2].tolist() == [103, 107]
    np.testing.assert_allclose(scores[0, :2], [0.8, 0.6], rtol=1e-6)
    assert index.remove([103]) == 1 and len(index) == 9
    scores, found = index.search(query, 20)  # k larger than the index: trimmed, no -1 ids
    assert found.shape == (1, 9) and 103 not in found and found[0, 0] == 107


def test_index_file_round_trips_and_detects_corruption(tmp_path):
    ids, vectors = _ten_vectors()
    index = VectorIndex(10, generation=5)
    index.add(ids, vectors)
    index.save(tmp_path / "vectors.faiss")
    loaded = VectorIndex.load(tmp_path / "vectors.faiss")
    assert loaded.generation == 5 and len(loaded) == 10
    assert sorted(loaded.ids().tolist()) == ids.tolist()
    assert not list(tmp_path.glob("*.tmp"))  # temp files renamed away
    data = bytearray((tmp_path / "vectors.faiss").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "vectors.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum"):
        VectorIndex.load(tmp_path / "vectors.faiss")
    sidecar_path(tmp_path / "vectors.faiss").unlink()
    with pytest.raises(IndexFileError):
        VectorIndex.load(tmp_path / "vectors.faiss")
    with pytest.raises(IndexFileError):
        VectorIndex.load(tmp_path / "missing.faiss")


def test_generated_photos_are_distinct():
    a, b = (np.asarray(draw_photo(s), dtype=np.float32) for s in (1, 2))
    assert np.abs(a - b).mean() > 10


def test_deleting_an_image_deletes_its_tags(database):
    store = open_store(database)
    root = store.add_root("/photos")
    store.write_batch([_embedded(root.id, "a.jpg", 1), _embedded(root.id, "b.jpg", 2)])
    a, b = (r.id for r in sorted(store.iter_images(), key=lambda r: r.rel_path))
    _execute(
        store,
        "INSERT INTO tags (image_id, tag, score, source) VALUES (:image, 'beach', 0.9, 'auto')",
        [{"image": a}, {"image": b}],
    )
    store.delete_images([a])
    assert store.counts().tags == 1
    store.close()


def test_the_default_library_lives_in_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SIGLIP_SEARCH_LIBRARY", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_library_dir() == tmp_path / ".local/share/siglip-search/library"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_library_dir() == tmp_path / "data/siglip-search/library"
    monkeypatch.setenv("SIGLIP_SEARCH_LIBRARY", str(tmp_path / "mine"))
    assert default_library_dir() == tmp_path / "mine"


# --- layering -----------------------------------------------------------------------------------


def test_indexer_layering_sqlalchemy_only_in_store_faiss_only_in_the_vector_indexes_never_ui():
    indexer = Path(__file__).parents[1] / "indexer"
    modules = {p.relative_to(indexer).as_posix(): imported_roots(p) for p in indexer.rglob("*.py")}
    assert {
        "store/store.py",
        "vectors.py",
        "jobs.py",
        "scan.py",
        "decode.py",
        "library.py",
        "cli.py",
    } <= set(modules)
    sqlalchemy = [name for name, imports in modules.items() if "sqlalchemy" in imports]
    # the store package only
    assert sqlalchemy and all(name.startswith("store/") for name in sqlalchemy)
    # vectors.py: the exact and approximate indexes; ivf.py: the on-disk index of `reindex`
    faiss = sorted(name for name, imports in modules.items() if "faiss" in imports)
    assert faiss == ["ivf.py", "vectors.py"]
    assert not any({"ui", "gradio"} & imports for imports in modules.values())
