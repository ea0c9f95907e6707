"""A library and the modes that embed into it: `auto` by default, said and recorded; modes of one
family (siglip_search.modes) share a library, so it is searched on another machine's pick without
re-indexing; a library of another family is refused in one line."""

from __future__ import annotations

import json

from indexer_fixtures import make_photo_folder

from indexer.library import FAMILY_KEY, MODE_KEY, open_library
from siglip_search.cli import main
from siglip_search.modes import pick_modes, vector_family


def _search(library_dir, query: str, mode: str, capsys) -> list[str]:
    args = ["search", query, "--library", str(library_dir), "--mode", mode, "--json", "-k", "3"]
    assert main(args) == 0
    return [hit["path"] for hit in json.loads(capsys.readouterr().out)]


def test_indexing_by_default_says_and_records_the_mode_auto_picked(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library_dir = tmp_path / "photos", tmp_path / "library"
    make_photo_folder(photos)
    args = ["index", str(photos), "--library", str(library_dir), "--model", str(tiny_checkpoint)]
    assert main([*args, "--no-progress"]) == 0
    picked = pick_modes("auto")
    assert f"; cpu, auto: {picked.describe()})" in capsys.readouterr().out
    assert main(["status", "--library", str(library_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == picked.image_mode
    with open_library(library_dir, create=False) as library:
        assert library.store.get_meta(FAMILY_KEY) == vector_family(picked.image_mode)


def test_a_library_indexed_in_int8_is_searched_and_added_to_in_fp32_and_the_reverse(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library_dir = tmp_path / "photos", tmp_path / "library"
    files = make_photo_folder(photos)
    lib = ["--library", str(library_dir), "--no-progress"]
    assert (
        main(["index", str(photos), "--model", str(tiny_checkpoint), "--mode", "int8", *lib]) == 0
    )
    capsys.readouterr()
    beach = str(files["2021/summer/beach.jpg"])
    in_int8 = _search(library_dir, beach, "int8", capsys)
    assert in_int8[0] == beach  # the photo finds itself
    assert _search(library_dir, beach, "fp32", capsys)[0] == beach
    (photos / "new").mkdir()
    (photos / "new" / "copy.jpg").write_bytes(files["2021/summer/beach.jpg"].read_bytes())
    assert main(["index", str(photos), "--mode", "fp32", *lib]) == 0  # adds, keeps the rest
    assert capsys.readouterr().out.startswith("added 1, updated 0")
    assert set(_search(library_dir, beach, "int8", capsys)[:2]) == {
        beach,
        str(photos / "new" / "copy.jpg"),
    }
    with open_library(library_dir, create=False) as library:
        assert (library.model_mode(), library.mode_family()) == ("fp32", vector_family("int8"))


def test_a_library_of_another_family_is_refused_in_one_line_and_left_as_it_was(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library_dir = tmp_path / "photos", tmp_path / "library"
    make_photo_folder(photos)
    lib = ["--library", str(library_dir), "--no-progress"]
    assert main(["index", str(photos), "--model", str(tiny_checkpoint), *lib]) == 0
    with open_library(library_dir, create=False) as library:
        # as a library indexed by a mode whose vectors are not interchangeable with fp32's would say
        library.store.set_meta(FAMILY_KEY, "fp8")
        library.store.set_meta(MODE_KEY, "fp8")
    capsys.readouterr()
    assert main(["index", str(photos), "--mode", "fp32", *lib]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "built in mode fp8, whose vectors differ from mode fp32's" in err
    )
    assert main(["search", "a photo", "--mode", "int8", "--library", str(library_dir)]) == 2
    assert "whose vectors differ from mode int8's" in capsys.readouterr().err
    with open_library(library_dir, create=False) as library:
        assert (library.model_mode(), library.mode_family()) == ("fp8", "fp8")
