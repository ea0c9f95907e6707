"""A library that is corrupt, truncated or read-only: one line on stderr naming the file, never a
traceback; a read-only library still answers `status`, `search` and `duplicates`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from indexer_fixtures import make_photo_folder, run_cli_where_permissions_apply

from indexer.cli_search import SCORE_NOTES
from indexer.errors import IndexerError, LibraryUnreadableError
from indexer.search import PROBABILITY
from indexer.store import open_store
from siglip_search.cli import main

ERROR_PREFIX = "siglip-search: error: "


@pytest.fixture(scope="module")
def built_library(tmp_path_factory, tiny_checkpoint) -> Path:
    """A real library of eight photos, indexed once for the module; tests work on copies."""
    base = tmp_path_factory.mktemp("built")
    make_photo_folder(base / "photos")
    argv = [
        "index",
        str(base / "photos"),
        "--library",
        str(base / "library"),
        "--model",
        str(tiny_checkpoint),
    ]
    assert main([*argv, "--no-progress"]) == 0
    return base / "library"


def _copy(built: Path, to: Path) -> Path:
    shutil.copytree(built, to)
    return to


def _one_line_error(stderr: str) -> str:
    assert stderr.startswith(ERROR_PREFIX) and stderr.count("\n") == 1, stderr
    return stderr


# --- corrupt or truncated database ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["search", "red"], ["index"], ["duplicates"]])
def test_random_bytes_library_is_reported_in_one_line_and_left_as_is(tmp_path, capsys, command):
    lib = tmp_path / "lib"
    lib.mkdir()
    garbage = os.urandom(20_000)
    (lib / "library.db").write_bytes(garbage)
    assert main([*command, "--library", str(lib)]) == 2
    stderr = _one_line_error(capsys.readouterr().err)
    assert f"{lib / 'library.db'} is not a readable siglip-search library" in stderr
    assert (lib / "library.db").read_bytes() == garbage
    assert sorted(p.name for p in lib.iterdir()) == ["library.db"]


def test_truncated_library_is_reported_in_one_line_and_left_as_is(built_library, tmp_path, capsys):
    lib = _copy(built_library, tmp_path / "lib")
    for leftover in ("library.db-wal", "library.db-shm"):
        (lib / leftover).unlink(missing_ok=True)
    head = (lib / "library.db").read_bytes()[:8192]  # the schema page survives, the tables do not
    (lib / "library.db").write_bytes(head)
    for command in (["status"], ["search", "red"]):
        assert main([*command, "--library", str(lib)]) == 2
        stderr = _one_line_error(capsys.readouterr().err)
        assert (
            "is not a readable siglip-search library (database disk image is malformed)" in stderr
        )
    assert (lib / "library.db").read_bytes() == head


def test_open_store_raises_a_typed_error_for_a_file_that_is_no_database(tmp_path):
    (tmp_path / "library.db").write_bytes(b"JFIF not a database at all" * 100)
    with pytest.raises(LibraryUnreadableError, match="file is not a database") as caught:
        open_store(tmp_path / "library.db")
    assert isinstance(caught.value, IndexerError)


# --- read-only library ----------------------------------------------------------------------------


def _make_read_only(lib: Path, folder_too: bool) -> None:
    for path in lib.iterdir():
        path.chmod(0o444)
    if folder_too:
        lib.chmod(0o555)


@pytest.fixture
def restore_permissions():
    folders: list[Path] = []
    yield folders
    for folder in folders:  # let pytest delete tmp_path, also as a normal user
        folder.chmod(0o755)
        for path in folder.iterdir():
            path.chmod(0o644)


def test_read_only_library_still_searches_and_refuses_writes_in_one_line(
    built_library, tmp_path, capsys, restore_permissions
):
    # Three libraries a user may not write: a read-only archive (folder 555, files 444), files 444
    # in a writable folder, and a lock file left 444. One child process runs all the commands.
    archive, files_only, lock_only = (
        _copy(built_library, tmp_path / n) for n in ("archive", "files", "lock")
    )
    assert main(["search", "red", "-k", "3", "--library", str(archive)]) == 0
    writable_hits = capsys.readouterr().out
    # the index must be rebuilt in memory, as it cannot be saved
    (archive / "vectors.faiss").unlink()
    before = {p.name: p.read_bytes() for p in archive.iterdir()}
    _make_read_only(archive, folder_too=True)
    _make_read_only(files_only, folder_too=False)
    (lock_only / "library.lock").chmod(0o444)
    restore_permissions.extend([archive, files_only, lock_only])
    search = ["search", "red", "-k", "3", "--library"]
    results = run_cli_where_permissions_apply(
        archive,
        [
            ["status", "--library", str(archive)],
            [*search, str(archive)],
            ["duplicates", "--library", str(archive)],
            ["tag", "--library", str(archive), "--no-progress"],
            ["index", "--library", str(archive), "--no-progress"],
            [*search, str(files_only)],
            ["index", "--library", str(files_only), "--no-progress"],
            ["index", "--library", str(lock_only), "--no-progress"],
        ],
        probe="write",
    )
    status, archive_search, duplicates, tag, index, files_search, files_index, lock_index = results
    assert (status["rc"], status["stderr"]) == (0, "")
    assert "8 indexed" in status["stdout"]
    # Searching says on stderr what kind its scores are, and nothing else.
    note = "siglip-search: " + SCORE_NOTES[PROBABILITY] + "\n"
    assert (archive_search["rc"], archive_search["stderr"], archive_search["stdout"]) == (
        0,
        note,
        writable_hits,
    )
    assert (files_search["rc"], files_search["stderr"], files_search["stdout"]) == (
        0,
        note,
        writable_hits,
    )
    assert (duplicates["rc"], duplicates["stderr"]) == (0, "")
    for writer, lib, reason in [
        (tag, archive, "cannot write library.db"),
        (index, archive, "cannot write library.db"),
        (files_index, files_only, "cannot write library.db"),
        (lock_index, lock_only, "cannot open library.lock: Permission denied"),
    ]:
        assert writer["rc"] == 2
        assert f"library {lib} is read-only ({reason})" in _one_line_error(writer["stderr"])
    assert {p.name: p.read_bytes() for p in archive.iterdir()} == before


_WEB_CHILD = r"""
import json, os, sys, warnings
warnings.filterwarnings("ignore")
try:
    open(os.path.join(sys.argv[1], "probe"), "w").close()
except PermissionError:
    pass
else:
    os.unlink(os.path.join(sys.argv[1], "probe"))
    print(json.dumps("permissions not enforced"))
    sys.exit()
from ui import handlers
from ui.state import load_state
state = load_state(sys.argv[1])
gallery = handlers.search_text(state, "red", 0.0, 3, "", "", "", "best match")[0]
print(json.dumps({
    "thumbnails": str(state.thumbnails.folder), "pictures": [picture for picture, _ in gallery]
}))
"""


def test_the_web_app_searches_a_read_only_library_with_thumbnails_in_the_users_cache(
    built_library, tmp_path, restore_permissions
):
    archive = _copy(built_library, tmp_path / "archive")
    shutil.rmtree(archive / ".thumbnails", ignore_errors=True)
    _make_read_only(archive, folder_too=True)
    restore_permissions.append(archive)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file permissions cannot be enforced")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    child = subprocess.run(
        [*prefix, sys.executable, "-c", _WEB_CHILD, str(archive)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if result == "permissions not enforced":
        pytest.skip("this process can write to a chmod 555 folder")
    assert result["thumbnails"].startswith(str(tmp_path / "cache" / "siglip-search" / "thumbnails"))
    assert len(result["pictures"]) == 3 and all(Path(p).is_file() for p in result["pictures"])
    assert not (archive / ".thumbnails").exists()
