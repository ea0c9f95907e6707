"""Nothing is left out silently: files the indexer does not read are counted by kind per folder,
and `index --exclude PATTERN` leaves out what a user names (NAS thumbnails, Lightroom previews),
remembered per root so later runs and the web app apply it too; on real folders and a real library."""

from __future__ import annotations

import json

import pytest
from indexer_fixtures import draw_photo

from indexer.errors import ExcludePatternError
from indexer.scan import Excluder, normalized_pattern
from siglip_search.cli import main


def _photos(folder, names):
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        draw_photo(i).save(folder / name)


def _status(library, capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "--library", str(library), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_files_the_indexer_does_not_read_are_counted_per_folder_and_shown(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library = tmp_path / "photos", tmp_path / "library"
    _photos(photos, ["a.jpg", "trip/b.png"])
    for name in ("clip.mov", "trip/clip2.MOV", "a.jpg.xmp", "notes.xyz", "trip/x.xyz", "README"):
        (photos / name).write_bytes(b"not a photo")
    (photos / ".cache").mkdir()  # hidden: its photo is never looked at, and counted as hidden
    draw_photo(9).save(photos / ".cache" / "c.jpg")
    common = ["--library", str(library), "--no-progress"]

    assert main(["index", str(photos), "--model", str(tiny_checkpoint), *common]) == 0
    err = capsys.readouterr().err
    assert (
        "not indexed: skipped 2 .mov, 2 .xyz, 1 (no extension), 1 .xmp; 1 hidden or system" in err
    )

    (root,) = _status(library, capsys)["roots"]
    assert root["passed_over"] == {
        "suffixes": {"": 1, ".mov": 2, ".xmp": 1, ".xyz": 2},
        "hidden": 1,
        "excluded": 0,
    }
    assert main(["status", "--library", str(library)]) == 0
    assert "skipped 2 .mov, 2 .xyz, 1 (no extension), 1 .xmp; 1 hidden or system" in (
        capsys.readouterr().out
    )
    # A run over one folder inside the root counts what it saw; the root keeps its whole count.
    (photos / "trip" / "y.xyz").write_bytes(b"?")
    assert main(["index", str(photos / "trip"), *common]) == 0
    assert "not indexed: skipped 2 .xyz, 1 .mov (" in capsys.readouterr().err
    assert _status(library, capsys)["roots"][0]["passed_over"] == root["passed_over"]
    assert main(["index", *common]) == 0  # all roots, whole: counted again
    assert _status(library, capsys)["roots"][0]["passed_over"]["suffixes"][".xyz"] == 3


def test_an_exclude_pattern_is_remembered_per_root_and_takes_its_photos_out(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library = tmp_path / "photos", tmp_path / "library"
    previews = "Catalog Previews.lrdata"
    _photos(photos, ["a.jpg", "2019/b.jpg", f"{previews}/0/p1.jpg", f"{previews}/1/p2.jpg"])
    common = ["--library", str(library), "--no-progress"]
    assert main(["index", str(photos), "--model", str(tiny_checkpoint), *common]) == 0
    assert _status(library, capsys)["images"] == 4
    before = sorted(p.read_bytes() for p in photos.rglob("*.jpg"))

    # Lightroom's previews were indexed by mistake: excluded, they leave the library (not the disk).
    assert main(["index", *common, "--exclude", f"{previews}/*"]) == 0
    assert "removed 2" in capsys.readouterr().out
    report = _status(library, capsys)
    (root,) = report["roots"]
    assert report["images"] == 2 and root["exclude"] == [f"*/{previews}/*"]
    assert root["passed_over"]["excluded"] == 1  # the folder, not looked into
    assert sorted(p.read_bytes() for p in photos.rglob("*.jpg")) == before

    # Later runs (no option) keep applying it; a second, anchored pattern adds to it.
    _photos(photos, [f"{previews}/2/p3.jpg"])
    assert main(["index", *common, "--exclude", "/2019/*"]) == 0
    assert "added 0, updated 0, moved 0, removed 1" in capsys.readouterr().out
    assert _status(library, capsys)["roots"][0]["exclude"] == [f"*/{previews}/*", "/2019/*"]
    assert main(["status", "--library", str(library)]) == 0
    assert f"exclude */{previews}/*, /2019/*" in capsys.readouterr().out

    # Forgetting a pattern brings its photos back; a pattern the root lacks is a one-line error.
    assert main(["index", *common, "--no-exclude", f"*/{previews}/*"]) == 0
    assert "added 3" in capsys.readouterr().out
    assert main(["index", *common, "--no-exclude", "*/nothing/*"]) == 2
    err = capsys.readouterr().err
    assert "has no exclude pattern */nothing/*" in err and "(its patterns: /2019/*)" in err
    assert main(["index", *common, "--exclude", "*"]) == 2
    assert "would leave out the whole folder" in capsys.readouterr().err
    assert _status(library, capsys)["roots"][0]["exclude"] == ["/2019/*"]


def test_a_parent_folder_keeps_the_exclude_patterns_of_the_folder_it_absorbs(
    tmp_path, tiny_checkpoint, capsys
):
    home = tmp_path / "home"
    _photos(home, ["2024/a.jpg", "2024/raw/b.jpg", "2024/@thumbs/c.jpg", "2023/@thumbs/d.jpg"])
    common = ["--library", str(tmp_path / "library"), "--no-progress"]
    args = ["--exclude", "/raw/*", "--exclude", "@thumbs"]
    assert main(["index", str(home / "2024"), "--model", str(tiny_checkpoint), *common, *args]) == 0
    assert main(["index", str(home), *common]) == 0  # the parent absorbs 2024/

    report = _status(tmp_path / "library", capsys)
    (root,) = report["roots"]
    # The anchored pattern follows its folder; the one matching at any depth now covers 2023/ too.
    assert root["path"] == str(home) and root["exclude"] == ["/2024/raw/*", "*/@thumbs"]
    assert report["images"] == 1


@pytest.mark.parametrize(
    ("pattern", "stored", "excluded", "kept"),
    [
        ("*/@eaDir/*", "*/@eaDir/*", ["2024/@eaDir/", "@eaDir/"], ["2024/eaDir/"]),
        ("@eaDir", "*/@eaDir", ["@eaDir/", "a/b/@eaDir/"], ["a/@eaDir2/"]),
        ("/2019/*", "/2019/*", ["2019/", "2019/a.jpg"], ["old/2019/", "2019.jpg"]),
        ("*.lrdata/*", "*.lrdata/*", ["x/Previews.lrdata/"], ["x/lrdata/"]),
        ("*_thumb.jpg", "*_thumb.jpg", ["a/b_thumb.jpg"], ["a/b_thumb.JPG", "a/b.jpg"]),
    ],
)
def test_exclude_patterns_match_paths_from_the_root(pattern, stored, excluded, kept):
    assert normalized_pattern(pattern) == stored
    excluder = Excluder([stored])
    for path in excluded:
        assert excluder.matches(path.rstrip("/"), is_dir=path.endswith("/")), path
    for path in kept:
        assert not excluder.matches(path.rstrip("/"), is_dir=path.endswith("/")), path


@pytest.mark.parametrize("pattern", ["", "  ", "*", "/*", "*/*", "/"])
def test_a_pattern_that_excludes_everything_is_refused(pattern):
    with pytest.raises(ExcludePatternError):
        normalized_pattern(pattern)
