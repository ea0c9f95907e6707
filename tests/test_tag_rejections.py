"""Tags the user rejected, in the library: recorded once per photo and tag, never proposed or written
again, the photo's other tags left alone, forgotten on request; on real SQLite."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from indexer.store import SCHEMA_VERSION, EmbeddedImage, open_store


def _store_with_photos(tmp_path, n: int = 3):
    store = open_store(tmp_path / "library.db")
    root = store.add_root("/photos")
    vectors = np.eye(n, 4, dtype=np.float32)
    store.write_batch(
        [
            EmbeddedImage(root.id, f"p{i}.jpg", 10, 20, f"f{i}", 4, 3, None, None, "m", vectors[i])
            for i in range(n)
        ]
    )
    ids = sorted(r.id for r in store.iter_images())
    tags = {i: [("animal|dog", 0.9), ("scene|beach", 0.5)] for i in ids}
    store.replace_machine_tags(tags, "m", "v1")
    return store, ids


def _machine_tags(store) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for record in store.iter_tags():
        found.setdefault(record.image_id, []).append(record.tag)
    return found


def test_a_rejected_tag_leaves_the_photo_and_never_comes_back_while_its_other_tags_stay(tmp_path):
    store, (a, b, c) = _store_with_photos(tmp_path)
    assert store.reject_tags([(a, "animal|dog")], source="sidecar") == 1
    # a's already known
    assert store.reject_tags([(a, "animal|dog"), (b, "scene|beach")], source="user") == 1
    assert _machine_tags(store) == {
        a: ["scene|beach"],
        b: ["animal|dog"],
        c: ["animal|dog", "scene|beach"],
    }
    assert store.rejected_tags() == {a: {"animal|dog"}, b: {"scene|beach"}}
    assert store.rejected_tags([b, c]) == {b: {"scene|beach"}}
    rows = list(store.iter_rejections())
    assert [(r.image_id, r.tag, r.source) for r in rows] == [
        (a, "animal|dog", "sidecar"),
        (b, "scene|beach", "user"),
    ]
    assert rows[0].path == "/photos/p0.jpg" and rows[0].rejected_at is not None
    # Tagging again (same or new scores) never re-adds a rejected pair.
    written = store.replace_machine_tags(
        {i: [("animal|dog", 0.95), ("scene|beach", 0.6)] for i in (a, b, c)}, "m", "v2"
    )
    assert written == 4
    assert _machine_tags(store) == {
        a: ["scene|beach"],
        b: ["animal|dog"],
        c: ["animal|dog", "scene|beach"],
    }
    assert store.counts().rejected_tags == 2
    store.close()


def test_clearing_rejections_by_photo_tag_or_all_lets_tagging_propose_them_again(tmp_path):
    store, (a, b, c) = _store_with_photos(tmp_path)
    store.reject_tags([(a, "animal|dog"), (b, "animal|dog"), (c, "scene|beach")])
    assert store.clear_rejections(image_ids=[a]) == 1
    assert store.clear_rejections(tags=["scene|beach"]) == 1
    assert store.rejected_tags() == {b: {"animal|dog"}}
    store.replace_machine_tags({a: [("animal|dog", 0.9)], c: [("scene|beach", 0.5)]}, "m", "v2")
    assert "animal|dog" in _machine_tags(store)[a] and "scene|beach" in _machine_tags(store)[c]
    assert store.clear_rejections() == 1 and store.rejected_tags() == {}
    with pytest.raises(ValueError, match="source must be one of"):
        store.reject_tags([(a, "animal|dog")], source="robot")
    store.close()


def test_rejections_go_with_their_photo_and_ignore_unknown_ids(tmp_path):
    store, (a, b, _) = _store_with_photos(tmp_path)
    assert store.reject_tags([(a, "animal|dog"), (10_000, "animal|dog")]) == 1
    store.delete_images([a])
    assert store.rejected_tags() == {}
    store.reject_tags([(b, "animal|dog")])
    root = store.roots()[0]
    store.remove_root(root.id)
    with sqlite3.connect(tmp_path / "library.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM tag_rejections").fetchone() == (0,)
    store.close()


def test_a_version_2_library_gains_the_rejections_table(tmp_path):
    store, (a, _, _) = _store_with_photos(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / "library.db") as conn:  # back to what schema 2 had
        conn.execute("DROP TABLE tag_rejections")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store = open_store(tmp_path / "library.db")
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert store.reject_tags([(a, "animal|dog")]) == 1 and len(list(store.iter_tags())) == 5
    store.close()
