"""decode_image on the pixel formats and sizes an audit found wrong: float and Lab TIFFs, and a
--max-pixels above Pillow's own limit (which is lowered here so the images stay small)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import indexer_fixtures
import numpy as np
import pytest
from indexer_fixtures import db_rows
from PIL import Image, ImageCms

from indexer.decode import decode_image
from indexer.errors import DecodeError
from indexer.jobs import index_paths
from indexer.status import library_status
from siglip_search.image_processor import SiglipImageProcessor


def _grey(path) -> np.ndarray:
    pixels = np.asarray(decode_image(path).image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[..., 0]


# --- float and integer grey ---------------------------------------------------------------------


def test_float_tiff_within_zero_one_is_a_full_range_gradient_not_black(tmp_path):
    ramp = np.linspace(0.0, 1.0, 64 * 256, dtype=np.float32).reshape(64, 256)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    assert Image.open(tmp_path / "ramp.tif").mode == "F"
    grey = _grey(tmp_path / "ramp.tif")
    assert grey.min() == 0 and grey.max() == 255
    assert abs(grey.mean() - 127.5) < 1.0


def test_float_tiff_rounding_past_one_still_counts_as_zero_to_one(tmp_path):
    values = np.full((16, 16), 0.5, np.float32)
    values[0, 0] = 1.0000001
    Image.fromarray(values).save(tmp_path / "x.tif")
    assert _grey(tmp_path / "x.tif")[5, 5] == 128


def test_float_tiff_in_eight_bit_units_is_kept_and_clipped(tmp_path):
    values = np.array([[-20.0, 0.0, 64.0, 200.0, 255.0, 900.0]], np.float32).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "x.tif")
    assert _grey(tmp_path / "x.tif")[0].tolist() == [0, 0, 64, 200, 255, 255]


@pytest.mark.parametrize(
    "values, expected",
    [
        (
            np.array([[0, 16384, 32768, 65535]], np.uint16),
            [0, 64, 128, 255],
        ),  # I;16: 65535 is white
        (
            np.array([[0, 16384, 32768, 65535]], np.int32),
            [0, 64, 128, 255],
        ),  # I: 16-bit data in 32 bits
        (np.array([[0, 64, 128, 255]], np.int32), [0, 64, 128, 255]),  # I: 8-bit data in 32 bits
    ],
    ids=["I;16", "I-16bit", "I-8bit"],
)
def test_integer_grey_keeps_its_scaling(tmp_path, values, expected):
    path = tmp_path / ("x.tif" if values.dtype == np.int32 else "x.png")  # PNG has no 32-bit grey
    Image.fromarray(values.repeat(4, axis=0)).save(path)
    assert Image.open(path).mode in ("I", "I;16")
    assert _grey(path)[0].tolist() == expected


# --- Lab ----------------------------------------------------------------------------------------


def test_lab_tiff_keeps_its_colours(tmp_path):
    # Pillow >= 9.4 already converts Lab through littleCMS in convert("RGB"); this guards it.
    srgb = np.zeros((8, 24, 3), np.uint8)
    srgb[:, :8], srgb[:, 8:16], srgb[:, 16:] = (220, 30, 30), (30, 165, 50), (128, 128, 128)
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    ImageCms.applyTransform(Image.fromarray(srgb), to_lab).save(tmp_path / "lab.tif")
    assert Image.open(tmp_path / "lab.tif").mode == "LAB"
    rgb = np.asarray(decode_image(tmp_path / "lab.tif").image).astype(int)
    for column, colour in [(4, (220, 30, 30)), (12, (30, 165, 50)), (20, (128, 128, 128))]:
        # 8-bit Lab rounding
        assert np.abs(rgb[4, column] - colour).max() <= 10, (
            rgb[4, column],
            colour,
        )


# --- --max-pixels above Pillow's limit ----------------------------------------------------------


@pytest.fixture
def low_pillow_limit(monkeypatch):
    """Pillow refuses more than 2 * 10,000 pixels: a 300x300 picture plays a 30000x30000 one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    return 10_000


def _one_colour(path, side: int):
    Image.new("RGB", (side, side), (40, 90, 200)).save(path)
    return path


def test_max_pixels_above_pillows_limit_decodes(tmp_path, low_pillow_limit):
    path = _one_colour(tmp_path / "big.png", 300)  # 90,000 pixels > 2 * Pillow's 10,000
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(path)  # the default limit stays Pillow's
    decoded = decode_image(path, max_pixels=2_000_000_000)
    assert decoded.image.size == (300, 300) and decoded.image.getpixel((5, 5)) == (40, 90, 200)
    assert Image.MAX_IMAGE_PIXELS == low_pillow_limit  # given back


# 40,000: Pillow (raised to 40,000) refuses 90,000 > 2 * 40,000 in open(); 89,999: our check does.
@pytest.mark.parametrize("max_pixels", [40_000, 89_999], ids=["pillow-refuses-first", "our-check"])
def test_too_many_pixels_names_size_and_our_limit(tmp_path, low_pillow_limit, max_pixels):
    path = _one_colour(tmp_path / "big.png", 300)
    with pytest.raises(DecodeError) as caught:
        decode_image(path, max_pixels=max_pixels)
    assert caught.value.reason == f"decompression bomb (300x300 = 90000 pixels, limit {max_pixels})"
    assert Image.MAX_IMAGE_PIXELS == low_pillow_limit


def test_pillows_limit_is_raised_only_while_decoding_in_threads(tmp_path, low_pillow_limit):
    big, small = _one_colour(tmp_path / "big.png", 300), _one_colour(tmp_path / "small.png", 20)

    def decode(i: int):
        try:
            return decode_image(
                big if i % 2 else small, max_pixels=100_000 if i % 2 else None
            ).image.size
        except DecodeError as exc:
            return exc.reason

    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(decode, range(64)))
    assert sizes == [(20, 20), (300, 300)] * 32
    assert Image.MAX_IMAGE_PIXELS == low_pillow_limit


def test_photo_too_big_is_a_failure_until_max_pixels_allows_it(
    tmp_path, library, embedder, low_pillow_limit
):
    photos = tmp_path / "photos"
    photos.mkdir()
    _one_colour(photos / "poster.png", 300)
    indexer_fixtures.draw_photo(1).save(photos / "small.png")
    summary = index_paths(library, [str(photos)], embedder, max_pixels=40_000, progress=False)
    assert summary.failed == 1
    failures = library_status(library).failed
    assert [(f.path, f.reason) for f in failures] == [
        (str(photos / "poster.png"), "decompression bomb (300x300 = 90000 pixels, limit 40000)")
    ]
    index_paths(library, [str(photos)], embedder, max_pixels=2_000_000_000, progress=False)
    assert [(rel, status) for rel, status, _ in db_rows(library)] == [
        ("poster.png", "ok"),
        ("small.png", "ok"),
    ]


# --- 16-bit grey with a transparent value, broken EXIF ------------------------------------------


def test_a_16_bit_grey_png_with_a_transparent_value_keeps_its_greys(tmp_path):
    # PNG tRNS names one 16-bit grey value as transparent; converting to RGBA first clipped every
    # value above 255 to white, leaving an almost white picture.
    values = np.linspace(0, 65535, 60 * 80).reshape(60, 80).astype(np.uint16)
    values[10:20, 10:20] = 1000
    Image.fromarray(values).save(tmp_path / "grey16.png", transparency=1000)
    expected = np.clip(np.round(values / 65535 * 255), 0, 255).astype(np.uint8)
    expected[10:20, 10:20] = 255  # the transparent square, composited onto white
    assert (np.abs(_grey(tmp_path / "grey16.png").astype(int) - expected) <= 1).all()
    processor = SiglipImageProcessor(size={"height": 60, "width": 80}, do_normalize=False)
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16" and im.info["transparency"] == 1000
        pixels = processor.preprocess_one(im)  # (3, H, W) in [0, 1]
    assert (np.abs(np.round(pixels * 255).astype(int) - expected[None]) <= 1).all()


def test_broken_exif_indexes_without_pillow_warnings_on_stderr(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = indexer_fixtures.jpeg_bytes(indexer_fixtures.draw_photo(1))
    # One IFD entry, then the file ends where the next-IFD offset should be: "Corrupt EXIF data".
    app1 = b"Exif\0\0II*\0\x08\0\0\0" + struct.pack("<HHHII", 1, 0x0112, 3, 1, 0xFFFFFFF0)
    (photos / "short.jpg").write_bytes(
        good[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + good[2:]
    )
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS" * 8
    # The model's length claims 4096 bytes: "Truncated File Read".
    data = exif.tobytes().replace(
        b"\x01\x10\x00\x02\x00\x00\x00\x19", b"\x01\x10\x00\x02\x00\x00\x10\x00"
    )
    assert data != exif.tobytes()
    indexer_fixtures.draw_photo(2).save(photos / "long.jpg", exif=data)
    argv = [
        "index",
        str(photos),
        "--model",
        str(tiny_checkpoint),
        "--library",
        str(tmp_path / "lib"),
        "--no-progress",
    ]
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from siglip_search.cli import main; sys.exit(main(sys.argv[1:]))",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONWARNINGS": ""},
    )
    assert child.returncode == 0, child.stderr
    assert "added 2, updated 0, moved 0, removed 0, failed 0" in child.stdout
    assert child.stderr == ""
