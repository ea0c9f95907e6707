"""One atomic-write helper serves every file the project keeps: old or new, never half, no temp left."""

from __future__ import annotations

import os
import stat

import pytest

from siglip_search.atomic import atomic_path, open_atomic, write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "library.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), open_atomic(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["library.json"]


def test_a_replaced_file_keeps_its_permission_bits(tmp_path):
    target = tmp_path / "photo.jpg.xmp"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_writer_that_wants_a_file_name_gets_a_temp_path_beside_the_target(tmp_path):
    target = tmp_path / "vectors.faiss"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".vectors.faiss.")
        temp.write_bytes(b"index")
        assert not target.exists()
    assert target.read_bytes() == b"index" and not temp.exists()


def test_before_replace_may_abandon_the_write(tmp_path):
    target = tmp_path / "manifest.json"

    def refuse():
        raise OSError("the folder changed")

    with pytest.raises(OSError), open_atomic(target, before_replace=refuse) as f:
        f.write(b"new")
    assert list(tmp_path.iterdir()) == []
