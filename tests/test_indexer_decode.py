"""decode_image: the odd files of real photo collections come out as RGB images or as reasons."""

from __future__ import annotations

import os

import numpy as np
import pytest
from indexer_fixtures import (
    draw_photo,
    fails_after,
    jpeg_bytes,
    png_header_only,
    save_jpeg_with_exif,
)
from PIL import Image

from indexer.decode import decode_image
from indexer.errors import DecodeError, NotRegularFileError
from indexer.exif import parse_exif_datetime
from indexer.jobs import index_paths
from indexer.prepare import Preparer, Work
from indexer.scan import fingerprint_file, scan_folder
from indexer.search import Searcher
from indexer.tags import tag_image


def _left_red_right_blue(w: int = 200, h: int = 100) -> Image.Image:
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, : w // 2] = (255, 0, 0)
    pixels[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_phone_photo_is_turned_upright_and_keeps_its_date_and_camera(tmp_path):
    # Orientation 6: the camera was turned, viewers rotate 90 degrees clockwise, so the
    # stored left edge (red) ends up at the top.
    path = save_jpeg_with_exif(
        tmp_path / "p.jpg",
        _left_red_right_blue(),
        orientation=6,
        taken="2021:07:14 18:03:09",
        make="Canon",
        model="Canon EOS R5",
    )
    decoded = decode_image(path)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (100, 200)
    assert (decoded.width, decoded.height) == (100, 200)
    top, bottom = np.asarray(decoded.image)[10, 50], np.asarray(decoded.image)[190, 50]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert decoded.taken_at == "2021-07-14T18:03:09"
    assert decoded.camera == "Canon EOS R5"


def test_large_jpeg_is_decoded_at_reduced_scale_but_reports_its_full_size(tmp_path):
    path = tmp_path / "big.jpg"
    draw_photo(1, (2000, 1500)).save(path, quality=90)
    full = decode_image(path)
    drafted = decode_image(path, target_size=(38, 38))
    assert full.image.size == (2000, 1500)
    # 1/8 scale is the most draft() does (250 x 188), then halved by reduce_for_model: never
    # below twice the target on either side.
    assert drafted.image.size == (125, 94)
    assert (drafted.width, drafted.height) == (2000, 1500)
    small = decode_image(path, target_size=(1024, 1024))
    assert small.image.size == (2000, 1500)  # not much larger than 2x target: full decode


def test_a_large_png_is_reduced_by_a_whole_factor_of_both_sides_and_stays_close(tmp_path, embedder):
    # PNG (like WebP, TIFF, GIF) has no reduced decoding in Pillow: the decoded image is averaged
    # over k x k boxes, k dividing both sides, before the model's bicubic resize.
    draw_photo(1, (1200, 900)).save(tmp_path / "big.png")
    reduced = decode_image(tmp_path / "big.png", target_size=(38, 38))
    full = decode_image(tmp_path / "big.png")
    assert reduced.image.size == (120, 90)  # k = 10: 300 = gcd(1200, 900), 90 >= 2 * 38
    assert (reduced.width, reduced.height) == (1200, 900) and full.image.size == (1200, 900)
    pixels = [embedder.preprocess_image(d.image) for d in (reduced, full)]
    assert np.abs(pixels[0] - pixels[1]).max() <= 0.05  # of the normalised range [-1, 1]
    vectors = embedder.embed_pixels(np.stack(pixels))
    assert float(vectors[0] @ vectors[1]) >= 0.999
    # No whole factor divides 1201 and 900: decoded as it is, rather than moved by a partial box.
    draw_photo(1, (1201, 900)).save(tmp_path / "odd.png")
    assert decode_image(tmp_path / "odd.png", target_size=(38, 38)).image.size == (1201, 900)


def test_a_large_transparent_png_queried_as_a_pil_image_matches_its_indexed_vector(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgba = draw_photo(3, (1200, 900)).convert("RGBA")
    alpha = np.zeros(rgba.size[::-1], np.uint8)
    alpha[200:700, 300:900] = 255
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(photos / "logo.png")
    draw_photo(4, (1200, 900)).save(photos / "other.png")
    index_paths(library, [str(photos)], embedder, batch_size=4, workers=2, progress=False)
    searcher = Searcher(library, embedder)
    with Image.open(photos / "logo.png") as im:
        first = searcher.search_image(im, k=1).hits[0]
        query = searcher.embed_image(im)
        from_pil = tag_image(embedder, im, ["red", "blue", "a cat"])
    assert first.rel_path == "logo.png"
    # Reduced as the indexer reduced the file: the same vector up to float rounding (1e-7), where
    # the full-size image's vector is 4e-4 away in some components.
    np.testing.assert_allclose(query, searcher.stored_embedding(first.id), atol=1e-5)
    from_file = tag_image(embedder, photos / "logo.png", ["red", "blue", "a cat"])
    assert [t.score for t in from_pil] == pytest.approx([t.score for t in from_file], abs=1e-6)


@pytest.mark.parametrize(
    "make, expected_mode",
    [
        (lambda: draw_photo(2).convert("CMYK"), "CMYK"),
        (
            lambda: Image.fromarray(np.linspace(0, 65535, 6000).reshape(60, 100).astype(np.uint16)),
            "I;16",
        ),
        (lambda: draw_photo(3).convert("LA"), "LA"),
        (lambda: draw_photo(4).convert("L"), "L"),
        (lambda: draw_photo(5).convert("1"), "1"),
    ],
    ids=["cmyk", "grey16", "grey-alpha", "grey", "bilevel"],
)
def test_unusual_pixel_modes_become_rgb(tmp_path, make, expected_mode):
    im = make()
    assert im.mode == expected_mode
    path = tmp_path / (
        "x.jpg" if expected_mode == "CMYK" else "x.tif" if expected_mode == "LA" else "x.png"
    )
    im.save(path)
    decoded = decode_image(path)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == im.size


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 10).reshape(10, 256).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g.png")
    pixels = np.asarray(decode_image(tmp_path / "g.png").image)[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255
    assert 100 < np.median(pixels) < 155  # a clip at 255 would make the median 255


def test_transparent_palette_pixels_become_white(tmp_path):
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.paste(1, (10, 0, 20, 20))
    im.save(tmp_path / "p.png", transparency=0)
    pixels = np.asarray(decode_image(tmp_path / "p.png").image)
    assert tuple(pixels[5, 5]) == (255, 255, 255)  # transparent: composited onto white
    assert tuple(pixels[5, 15]) == (255, 0, 0)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [
        Image.new("RGB", (30, 20), c).convert("P") for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    ]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    pixel = np.asarray(decode_image(tmp_path / "a.gif").image)[10, 10]
    assert pixel[0] > 200 and pixel[1] < 50


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, I am a text file named .jpg\n", "not an image"),
        (png_header_only(40_000, 40_000), "decompression bomb"),
    ],
    ids=["zero-byte", "text", "bomb-header"],
)
def test_bad_files_raise_decode_error_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        decode_image(path)


def test_truncated_jpeg_is_a_failure_not_a_grey_half_photo(tmp_path):
    data = jpeg_bytes(draw_photo(1, (400, 300)), quality=92)
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_image(tmp_path / "t.jpg")


def test_pixel_cap_is_a_parameter(tmp_path):
    draw_photo(1, (300, 300)).save(tmp_path / "x.png")
    assert decode_image(tmp_path / "x.png", max_pixels=90_000).image.size == (300, 300)
    with pytest.raises(
        DecodeError, match=r"decompression bomb \(300x300 = 90000 pixels, limit 89999\)"
    ):
        decode_image(tmp_path / "x.png", max_pixels=89_999)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="disappeared"):
        decode_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2021:07:14 18:03:09", "2021-07-14T18:03:09"),
        ("2021:07:14 18:03:09\x00", "2021-07-14T18:03:09"),
        ("    :  :     :  :  ", None),
        ("0000:00:00 00:00:00", None),
        (b"2020:01:02 03:04:05", "2020-01-02T03:04:05"),
        (None, None),
    ],
)
def test_exif_dates_are_parsed_or_dropped(value, expected):
    assert parse_exif_datetime(value) == expected


def test_a_photo_replaced_by_a_fifo_after_the_scan_is_a_failure_not_a_hang(tmp_path, embedder):
    path = tmp_path / "photo.jpg"
    draw_photo(1).save(path)
    [scanned] = scan_folder(str(tmp_path)).files
    path.unlink()
    os.mkfifo(path)  # no writer will ever come
    with fails_after(10):
        with pytest.raises(NotRegularFileError, match=r"not a regular file \(a FIFO\)"):
            fingerprint_file(path)
        with pytest.raises(DecodeError, match=r"not a regular file \(a FIFO\)"):
            decode_image(path)
        prepared = Preparer(embedder.image_processor, embedder.image_size, None)(Work(1, scanned))
    assert prepared.error == "not a regular file (a FIFO)" and prepared.pixels is None


def test_a_transparent_pil_image_queries_and_tags_like_its_indexed_file(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgba = draw_photo(3).convert("RGBA")
    alpha = np.zeros(rgba.size[::-1], np.uint8)
    alpha[20:100, 30:130] = 255  # a logo on a transparent background
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(photos / "logo.png")
    draw_photo(4).save(photos / "other.png")
    index_paths(library, [str(photos)], embedder, batch_size=4, workers=2, progress=False)
    searcher = Searcher(library, embedder)
    with Image.open(photos / "logo.png") as im:
        first = searcher.search_image(im, k=1).hits[0]
        from_pil = tag_image(embedder, im, ["red", "blue", "a cat"])
    assert first.rel_path == "logo.png" and first.cosine == pytest.approx(1.0, abs=1e-4)
    from_file = tag_image(embedder, photos / "logo.png", ["red", "blue", "a cat"])
    assert [t.tag for t in from_pil] == [t.tag for t in from_file]
    assert [t.score for t in from_pil] == pytest.approx([t.score for t in from_file], abs=1e-5)
