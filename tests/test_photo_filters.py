"""What photographers filter by: camera, lens, "has a GPS position", a machine tag, and the tags
they rejected; the same filters from the Python API (Searcher), the command line and the web app's
handlers, over real JPEGs and a DNG with the EXIF cameras write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dng_files import write_dng
from indexer_fixtures import draw_photo, save_jpeg_with_exif
from search_fixtures import index_folder

from indexer.errors import SearchOptionError
from indexer.search import Searcher
from siglip_search.cli import main

PARIS, SYDNEY = (48.85837, 2.29448), (-33.8568, 151.2153)
# name -> (make, model, lens, position)
PHOTOS = {
    "r5_paris.jpg": ("Canon", "Canon EOS R5", "RF24-105mm F4 L IS USM", PARIS),
    "r5_home.jpg": ("Canon", "Canon EOS R5", "RF50mm F1.8 STM", None),
    "z6_sydney.jpg": ("NIKON CORPORATION", "NIKON Z 6", "NIKKOR Z 24-70mm f/4 S", SYDNEY),
    "phone.jpg": ("Apple", "iPhone 15 Pro", None, None),
    "scan.png": None,  # no EXIF at all
}


@pytest.fixture
def photos_with_exif(tmp_path, library, embedder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (name, exif) in enumerate(PHOTOS.items()):
        if exif is None:
            draw_photo(i).save(folder / name)
            continue
        make, model, lens, gps = exif
        save_jpeg_with_exif(
            folder / name, draw_photo(i), make=make, model=model, lens=lens, gps=gps
        )
    write_dng(
        folder / "IMG_0001.dng",
        draw_photo(7, (256, 192)),
        preview_px=256,
        make="Canon",
        model="Canon EOS R5",
        lens="RF24-105mm F4 L IS USM",
        gps=SYDNEY,
    )
    index_folder(library, folder, embedder)
    ids = {row.rel_path: row.id for row in library.store.iter_images()}
    library.store.replace_machine_tags(
        {ids["r5_paris.jpg"]: [("place|city", 0.8)], ids["z6_sydney.jpg"]: [("place|beach", 0.7)]},
        embedder.model_id,
        "v1",
    )
    library.store.reject_tags([(ids["r5_home.jpg"], "animal|dog")], source="user")
    return folder, ids


def _found(searcher: Searcher, **filters) -> set[str]:
    vector = np.ones(searcher.embedder.identity()["dim"], np.float32)
    page = searcher.search_vector(vector / np.linalg.norm(vector), k=50, **filters)
    return {hit.rel_path for hit in page.hits}


def test_camera_lens_and_gps_filters_find_the_photos_whose_files_say_so(
    photos_with_exif, library, embedder
):
    searcher = Searcher(library, embedder)
    assert _found(searcher, camera="eos r5") == {"r5_paris.jpg", "r5_home.jpg", "IMG_0001.dng"}
    assert _found(searcher, camera="nikon") == {"z6_sydney.jpg"}
    assert _found(searcher, lens="RF24-105") == {"r5_paris.jpg", "IMG_0001.dng"}
    assert _found(searcher, camera="Canon", lens="50mm") == {"r5_home.jpg"}
    assert _found(searcher, has_gps=True) == {"r5_paris.jpg", "z6_sydney.jpg", "IMG_0001.dng"}
    assert _found(searcher, has_gps=False) == {"r5_home.jpg", "phone.jpg", "scan.png"}
    assert _found(searcher, has_gps=True, camera="iphone") == set()
    # LIKE's wildcards in a lens name are text, not patterns.
    assert _found(searcher, lens="f/4_") == set() and _found(searcher, lens="%") == set()
    # The hits carry what the filters read.
    (hit,) = [
        h
        for h in Searcher(library)
        .search_vector(
            np.eye(1, embedder.identity()["dim"], dtype=np.float32)[0], k=50, lens="NIKKOR"
        )
        .hits
    ]
    assert hit.camera == "NIKON CORPORATION NIKON Z 6" and hit.lens == "NIKKOR Z 24-70mm f/4 S"
    assert (hit.latitude, hit.longitude) == pytest.approx(SYDNEY, abs=1e-4)


def test_tag_and_rejection_filters_see_machine_tags_and_what_the_user_rejected(
    photos_with_exif, library, embedder
):
    searcher = Searcher(library, embedder)
    assert _found(searcher, tag="beach") == {"z6_sydney.jpg"}
    assert _found(searcher, tag="place|city") == {"r5_paris.jpg"}
    assert _found(searcher, tag="place") == set()  # a tag's parent is not the tag
    assert _found(searcher, rejected=True) == {"r5_home.jpg"}
    assert _found(searcher, rejected="dog") == {"r5_home.jpg"}
    assert _found(searcher, rejected="cat") == set()
    assert len(_found(searcher, rejected=False, tag="", camera=None)) == 6  # unset filters
    with pytest.raises(SearchOptionError, match="unknown search option 'iso'"):
        _found(searcher, iso=100)
    with pytest.raises(SearchOptionError, match="has_gps is True, False or None"):
        _found(searcher, has_gps="yes")


def test_the_command_line_filters_and_prints_camera_lens_and_position(
    photos_with_exif, library, capsys
):
    common = ["--library", str(library.path), "--json", "-k", "50"]
    assert main(["search", "a photo", *common, "--camera", "canon", "--has-gps"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["path"].rsplit("/", 1)[1] for h in hits} == {"r5_paris.jpg", "IMG_0001.dng"}
    paris = next(h for h in hits if h["path"].endswith("r5_paris.jpg"))
    assert paris["camera"] == "Canon EOS R5" and paris["lens"] == "RF24-105mm F4 L IS USM"
    assert paris["gps"] == pytest.approx(list(PARIS), abs=1e-4)
    assert main(["search", "a photo", *common, "--no-gps", "--lens", "50mm"]) == 0
    assert [h["path"].rsplit("/", 1)[1] for h in json.loads(capsys.readouterr().out)] == [
        "r5_home.jpg"
    ]
    assert main(["search", "a photo", *common, "--rejected"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["search", "a photo", *common, "--tag", "beach"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"].endswith("z6_sydney.jpg")
    with pytest.raises(SystemExit) as usage_error:  # argparse: the two exclude each other
        main(["search", "x", "--library", str(library.path), "--has-gps", "--no-gps"])
    assert usage_error.value.code == 2


def test_the_web_app_offers_the_cameras_and_lenses_of_the_library(photos_with_exif, library):
    from ui import handlers

    assert library.store.metadata_values("camera") == [
        ("Canon EOS R5", 3),
        ("Apple iPhone 15 Pro", 1),
        ("NIKON CORPORATION NIKON Z 6", 1),
    ]
    assert [lens for lens, _ in library.store.metadata_values("lens")][
        0
    ] == "RF24-105mm F4 L IS USM"
    options = handlers._search_options(0.0, 10, "", "", "", "best match", " Canon ", "", True)
    assert (options["camera"], options["lens"], options["has_gps"]) == ("Canon", None, True)
    assert handlers._search_options(0.0, 10, "", "", "", "best match")["has_gps"] is None
