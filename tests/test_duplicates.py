"""Finding duplicate photos: a copied file, a resized copy, and black frames that are no duplicates."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from search_fixtures import SAMPLES, index_folder, needs_demo

from indexer.duplicates import DEFAULT_THRESHOLD, _UnionFind, find_duplicates
from indexer.library import DATABASE_ENV, open_library
from siglip_search.cli import main

SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.jpg"))[:8] if SAMPLES.is_dir() else []


@pytest.fixture(scope="module")
def camera_roll(tmp_path_factory, demo_embedder, session_database_url, request):
    """Eight different sample photos, a byte copy of one, a half-size copy of another, and three
    blank frames (black at two sizes, and a near-black one with sensor noise). On the server in a
    database of its own: the session's database holds the demo library, whose searches count its
    photos."""
    url = session_database_url
    if url:
        server = request.getfixturevalue("postgres_server")
        url = server.url(server.create_database())
    folder = tmp_path_factory.mktemp("camera-roll")
    photos = folder / "photos"
    (photos / "backup").mkdir(parents=True)
    for name in SAMPLE_NAMES:
        shutil.copy(SAMPLES / name, photos / name)
    shutil.copy(SAMPLES / SAMPLE_NAMES[0], photos / "backup" / "copy.jpg")
    with Image.open(SAMPLES / SAMPLE_NAMES[1]) as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(
            photos / "backup" / "small.png"
        )
    Image.new("RGB", (200, 150)).save(photos / "black.png")
    Image.new("RGB", (320, 240)).save(photos / "lens-cap.jpg", quality=90)
    noise = np.random.default_rng(0).normal(6, 2, (240, 320, 3))
    Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).save(photos / "pocket.png")
    library = open_library(folder / "library", database=url)
    index_folder(library, photos, demo_embedder)
    yield library, photos, url
    library.close()


@needs_demo
def test_a_copy_and_a_resized_copy_are_found_and_blank_frames_are_not_grouped(camera_roll):
    library, photos, _ = camera_roll
    report = find_duplicates(library)
    assert report.threshold == DEFAULT_THRESHOLD
    groups = {frozenset(r.path for r in g.images): g for g in report.groups}
    copied = frozenset({str(photos / SAMPLE_NAMES[0]), str(photos / "backup" / "copy.jpg")})
    resized = frozenset({str(photos / SAMPLE_NAMES[1]), str(photos / "backup" / "small.png")})
    assert set(groups) == {copied, resized}
    assert groups[copied].kind == "exact" and groups[copied].min_cosine == 1.0
    assert groups[resized].kind == "near" and DEFAULT_THRESHOLD <= groups[resized].min_cosine < 1.0
    blank = {r.path for r in report.blank}
    assert {str(photos / "black.png"), str(photos / "lens-cap.jpg")} <= blank
    assert not blank & (copied | resized)


@needs_demo
def test_without_the_blank_guard_the_black_frames_would_be_grouped(camera_roll):
    """The guard is what keeps them apart: the model alone sees them as one picture."""
    library, photos, _ = camera_roll
    report = find_duplicates(library, blank_std=0.0)
    black = {str(photos / "black.png"), str(photos / "lens-cap.jpg")}
    assert any(black <= {r.path for r in g.images} for g in report.groups)
    assert report.blank == []


@needs_demo
def test_cli_duplicates_plain_and_json(camera_roll, capsys, monkeypatch):
    library, photos, url = camera_roll
    if url:
        monkeypatch.setenv(DATABASE_ENV, url)
    assert main(["duplicates", "--library", str(library.path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threshold"] == DEFAULT_THRESHOLD
    assert sorted(g["kind"] for g in document["groups"]) == ["exact", "near"]
    assert all({"id", "path"} == set(image) for g in document["groups"] for image in g["images"])
    assert main(["duplicates", "--library", str(library.path)]) == 0
    captured = capsys.readouterr()
    blocks = captured.out.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("# group 1: exact, 2 photos")
    assert str(photos / "backup" / "copy.jpg") in blocks[0].splitlines()
    assert "blank frames left out" in captured.err
    assert main(["duplicates", "--library", str(library.path), "--threshold", "0.5", "--json"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert sum(len(g["images"]) for g in loose["groups"]) > 4  # a low threshold groups more


@needs_demo
def test_exact_groups_come_first_and_a_near_group_names_its_byte_identical_copies(
    tmp_path, demo_embedder, capsys, database_url
):
    """A photo, its backup copy and a half-size copy make one "near" group of 3 that says which two
    files are byte-identical; a smaller exact group is still listed before it."""
    photos = tmp_path / "photos"
    (photos / "backup").mkdir(parents=True)
    for name in SAMPLE_NAMES[1:3]:
        shutil.copy(SAMPLES / name, photos / name)
        shutil.copy(SAMPLES / name, photos / "backup" / name)
    with Image.open(SAMPLES / SAMPLE_NAMES[1]) as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(
            photos / "small.png"
        )
    library = open_library(tmp_path / "library", database=database_url)
    index_folder(library, photos, demo_embedder)
    report = find_duplicates(library)
    library.close()
    assert [(g.kind, len(g.images)) for g in report.groups] == [("exact", 2), ("near", 3)]
    near = report.groups[1]
    pair = sorted([str(photos / SAMPLE_NAMES[1]), str(photos / "backup" / SAMPLE_NAMES[1])])
    assert [[r.path for r in copies] for copies in near.exact_copies] == [pair]
    assert main(["duplicates", "--library", str(tmp_path / "library")]) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert blocks[0].startswith("# group 1: exact, 2 photos, cosine >= 1.0000\n")
    header, identical = blocks[1].splitlines()[:2]
    assert (
        header
        == f"# group 2: near, 3 photos, cosine >= {math.floor(near.min_cosine * 1e4) / 1e4:.4f}"
    )
    assert identical == f"# byte-identical: {pair[0]} = {pair[1]}"
    assert main(["duplicates", "--library", str(tmp_path / "library"), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [len(ids) for ids in groups[1]["exact_copies"]] == [2] and groups[0]["exact_copies"] == [
        [r.id for r in report.groups[0].images]
    ]


def test_a_threshold_outside_minus_one_to_one_is_refused(tmp_path, capsys, database_url):
    lib = open_library(tmp_path / "library", database=database_url)
    lib.close()
    assert main(["duplicates", "--library", str(tmp_path / "library"), "--threshold", "1.5"]) == 2
    assert "between -1 and 1" in capsys.readouterr().err


def test_union_find_joins_chains_into_one_group():
    groups = _UnionFind()
    for a, b in [(1, 2), (3, 4), (2, 3), (7, 8)]:
        groups.union(a, b)
    assert len({groups.find(i) for i in (1, 2, 3, 4)}) == 1
    assert groups.find(7) == groups.find(8) != groups.find(1)
    assert groups.find(5) == 5
