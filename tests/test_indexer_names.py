"""Odd names of photos, folders and libraries: not valid UTF-8, escapes in a real name, newlines
and terminal escapes. Nothing crashes, nothing flips between runs, every output line stays one line."""

from __future__ import annotations

import json
import os
import re

import pytest
from indexer_fixtures import db_rows, draw_photo, jpeg_bytes

from siglip_search.cli import main


def _index(photos, lib, checkpoint) -> list[str]:
    return [
        "index",
        str(photos),
        "--model",
        str(checkpoint),
        "--library",
        str(lib),
        "--no-progress",
    ]


def test_a_root_or_library_whose_name_is_not_utf8_is_refused_in_one_line_before_anything_is_made(
    tmp_path, tiny_checkpoint, capsys
):
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9"))
    os.mkdir(latin1)
    draw_photo(1).save(os.path.join(latin1, "p.jpg"))
    os.symlink(latin1, tmp_path / "link")  # a UTF-8 name that resolves to the latin-1 folder
    (tmp_path / "photos").mkdir()
    draw_photo(2).save(tmp_path / "photos" / "p.jpg")
    lib, latin1_lib = tmp_path / "lib", latin1 + "-library"
    for argv in (
        _index(latin1, lib, tiny_checkpoint),
        _index(tmp_path / "link", lib, tiny_checkpoint),
        _index(tmp_path / "photos", latin1_lib, tiny_checkpoint),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert re.search(r"caf\\xe9(-library)? has a name that is not valid UTF-8", err)
    assert not lib.exists() and not os.path.exists(latin1_lib)


def test_a_latin1_name_and_a_real_file_named_like_its_escape_never_flip(
    tmp_path, tiny_checkpoint, capsys, database_url
):
    photos, lib = tmp_path / "photos", tmp_path / "lib"
    photos.mkdir()
    with open(os.path.join(os.fsencode(photos), b"caf\xe9.jpg"), "wb") as f:
        f.write(jpeg_bytes(draw_photo(1)))
    draw_photo(2).save(photos / "caf\\xe9.jpg")  # backslash, x, e, 9: a valid name
    draw_photo(3).save(photos / "other.jpg")
    assert main(_index(photos, lib, tiny_checkpoint)) == 0
    first = capsys.readouterr().out
    rows = db_rows(lib, database_url)
    for _ in range(2):
        assert main(_index(photos, lib, tiny_checkpoint)) == 0
        assert "added 0, updated 0, moved 0, removed 0, failed 0" in capsys.readouterr().out
        assert db_rows(lib, database_url) == rows
    assert "added 2, updated 0, moved 0, removed 0, failed 0" in first
    assert [(rel, status) for rel, status, _ in rows] == [
        ("caf\\xe9.jpg", "ok"),
        ("other.jpg", "ok"),
    ]


def test_newlines_and_terminal_escapes_in_names_stay_on_one_escaped_line(
    tmp_path, tiny_checkpoint, capsys, database_url
):
    root, lib = tmp_path / "new\nline", tmp_path / "lib"
    root.mkdir()
    draw_photo(1).save(root / "red\x1b[2J.png")
    draw_photo(2).save(root / "two\nlines.png")
    (root / "bad\x1b]0;pwned\x07.jpg").write_text("not a photo")
    assert main(_index(root, lib, tiny_checkpoint)) == 0
    assert "added 2, updated 0, moved 0, removed 0, failed 1" in capsys.readouterr().out

    assert main(["search", "red", "-k", "5", "--library", str(lib)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == [
        f"{tmp_path}/new\\nline/red\\x1b[2J.png",
        f"{tmp_path}/new\\nline/two\\nlines.png",
    ]
    assert main(["status", "--library", str(lib)]) == 0
    status = capsys.readouterr().out
    assert "\x1b" not in status and "\x07" not in status
    assert f"online  {tmp_path}/new\\nline (2 images)" in status
    assert f"failures  {tmp_path}/new\\nline/bad\\x1b]0;pwned\\x07.jpg: not an image" in status
    assert main(["status", "--json", "--library", str(lib)]) == 0
    report = json.loads(capsys.readouterr().out)  # JSON carries the names as they are
    assert report["last_run"]["roots"] == [str(root)]
    assert report["failed"][0]["path"] == str(root / "bad\x1b]0;pwned\x07.jpg")

    root.rename(tmp_path / "unplugged")
    assert main(["index", "--library", str(lib), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (
        err
        == f"siglip-search: root {tmp_path}/new\\nline is offline (missing or empty); its images are kept\n"
    )


def test_tag_threshold_bounds_agree_between_the_cli_and_the_tagger(
    tmp_path, tiny_checkpoint, capsys, database_url
):
    from indexer.errors import SearchOptionError
    from indexer.library import open_library
    from indexer.tags import tag_library
    from indexer.vocabulary import load_vocabulary

    photos, lib = tmp_path / "photos", tmp_path / "lib"
    photos.mkdir()
    draw_photo(1).save(photos / "p.png")
    assert main(_index(photos, lib, tiny_checkpoint)) == 0
    capsys.readouterr()
    for threshold in ("0", "1"):
        with pytest.raises(SystemExit) as exit_info:
            main(["tag", "--threshold", threshold, "--library", str(lib), "--no-progress"])
        assert exit_info.value.code == 2
        assert (
            f"must be a probability above 0 and below 1, got {threshold}" in capsys.readouterr().err
        )
    assert main(["tag", "--threshold", "0.01", "--library", str(lib), "--no-progress"]) == 0
    with (
        open_library(lib, database=database_url) as library,
        pytest.raises(SearchOptionError, match="above 0 and below 1"),
    ):
        tag_library(library, library.load_embedder(), load_vocabulary(None), 0.0, progress=False)
