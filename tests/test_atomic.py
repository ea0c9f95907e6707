"""One atomic-write helper serves every file the project keeps: old or new, never half, no temp left."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys

import pytest

from siglip_search.atomic import (
    LinkRefusedError,
    atomic_path,
    is_temp_name,
    open_atomic,
    remove_stale_temps,
    write_atomic,
)


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


# --- temp files a killed writer leaves, links in folders other people write to -------------------

KILLED_WRITER = """
import os, signal, sys
from siglip_search.atomic import open_atomic
with open_atomic(sys.argv[1]) as f:
    f.write(b"half of the new")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temp_file_is_ours_and_the_next_cleanup_removes_it(tmp_path):
    target = tmp_path / "IMG_1.jpg.xmp"
    target.write_bytes(b"old")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)], timeout=60, cwd=tmp_path.parent
    )
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and is_temp_name(leftovers[0].name)
    assert leftovers[0].name.startswith(".IMG_1.jpg.xmp.siglip-search-")
    # Files that only look alike are the user's: another pattern, a link, a temp being written.
    (tmp_path / ".notes.siglip-search-backup.tmp").write_bytes(b"the user's")
    os.symlink(target, tmp_path / ".IMG_2.jpg.xmp.siglip-search-0123abcd.tmp")
    with atomic_path(tmp_path / "other.xmp") as busy:
        removed = remove_stale_temps(tmp_path)
        assert busy.exists()
    assert removed == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".IMG_2.jpg.xmp.siglip-search-0123abcd.tmp", ".notes.siglip-search-backup.tmp",
         "IMG_1.jpg.xmp", "other.xmp"]
    )  # fmt: skip
    assert target.read_bytes() == b"old"


def test_a_write_inside_a_root_never_goes_through_a_link(tmp_path):
    root, outside = tmp_path / "photos", tmp_path / "outside"
    (root / "album").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.xmp").write_bytes(b"someone else's")
    os.symlink(outside / "victim.xmp", root / "album" / "a.jpg.xmp")
    os.symlink(outside / "created.xmp", root / "album" / "b.jpg.xmp")  # dangling
    os.symlink(outside, root / "linked-album")
    for path in (
        root / "album" / "a.jpg.xmp",
        root / "album" / "b.jpg.xmp",
        root / "linked-album" / "c.xmp",
    ):
        with pytest.raises(LinkRefusedError) as refused:
            write_atomic(path, b"ours", root=root)
        assert refused.value.filename in (str(path), str(root / "linked-album"))
    assert (outside / "victim.xmp").read_bytes() == b"someone else's"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.xmp"]
    assert sorted(p.name for p in (root / "album").iterdir()) == ["a.jpg.xmp", "b.jpg.xmp"]
    write_atomic(root / "album" / "d.jpg.xmp", b"ours", root=root)  # a plain file is written
    assert (root / "album" / "d.jpg.xmp").read_bytes() == b"ours"


def test_a_write_that_fails_names_the_file_not_the_temp(tmp_path):
    target = tmp_path / "manifest.json"
    with pytest.raises(OSError) as failed, open_atomic(target) as f:
        f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() says on a full disk
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
