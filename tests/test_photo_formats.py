"""The files photographers have beside their JPEGs: RAW files (real DNGs made by dng_files.py and read
by LibRaw; with and without a preview, turned in the camera, broken), and the HEIC and AVIF files
phones write; indexed upright, with date, camera, lens and position, like JPEGs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import indexer_fixtures
import numpy as np
import pytest
from dng_files import dng_bytes, write_dng
from PIL import Image

from indexer.decode import decode_image
from indexer.errors import DecodeError
from indexer.jobs import index_paths
from indexer.raw import RAW_EXTENSIONS, decode_raw

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
DEMO_MODEL = REPO / "data" / "models" / "siglip-demo"
rawpy = pytest.importorskip("rawpy")
embedder, library = indexer_fixtures.embedder, indexer_fixtures.library


def picture(name: str = "0045_red-heart.jpg", size: tuple[int, int] = (256, 192)) -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB").resize(size)


def test_the_dngs_made_here_are_real_dngs_that_libraw_and_exiftool_read(tmp_path):
    path = write_dng(tmp_path / "a.dng", picture(), preview_px=256, gps=(48.8584, 2.2945))
    with rawpy.imread(str(path)) as raw:
        assert raw.sizes.raw_width == 256 and raw.raw_pattern.tolist() == [[0, 1], [3, 2]]
        assert raw.extract_thumb().format == rawpy.ThumbFormat.JPEG
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (setup.sh --dev installs it)")
    out = subprocess.run(
        ["exiftool", "-j", "-validate", "-warning", "-error", "-a", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out)[0]
    assert found["Validate"] == "OK", found
    assert "Error" not in found and "Warning" not in found


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_raw_comes_out_upright_from_its_preview_and_from_its_sensor_data(orientation):
    """LibRaw's own rotation is the reference: both of our paths must agree with it."""
    upright = picture()
    reference = np.asarray(upright.resize((128, 96)), dtype=np.float64)
    for preview_px in (256, None):
        data = dng_bytes(upright, preview_px=preview_px, orientation=orientation)
        found = decode_raw(io.BytesIO(data), (38, 38), 10**8)
        assert found.from_preview == (preview_px is not None)
        assert (found.width, found.height) == upright.size  # the sensor's size, upright
        got = np.asarray(found.image.resize((128, 96)), dtype=np.float64)
        assert np.abs(got - reference).mean() < 12, (orientation, preview_px)


def test_the_full_decode_uses_the_cameras_white_balance(tmp_path):
    """The pretend sensor records red at half and blue at 0.7 of green: a grey picture must come out
    grey, not green as it would without the camera's white balance."""
    grey = Image.new("RGB", (64, 48), (128, 128, 128))
    found = decode_raw(io.BytesIO(dng_bytes(grey, preview_px=None)), (38, 38), 10**8)
    r, g, b = np.asarray(found.image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert abs(r - g) < 3 and abs(b - g) < 3 and 100 < g < 160
    with rawpy.imread(io.BytesIO(dng_bytes(grey, preview_px=None))) as raw:
        r, g, b = raw.postprocess(half_size=True, use_camera_wb=False).reshape(-1, 3).mean(axis=0)
    assert g > r + 20  # the same file decoded without it: green


def test_a_preview_too_small_for_the_model_is_not_used():
    data = dng_bytes(picture(), preview_px=64)  # short side 48 < the model's 96
    assert decode_raw(io.BytesIO(data), (96, 96), 10**8).from_preview is False
    assert decode_raw(io.BytesIO(data), (38, 38), 10**8).from_preview is True


@pytest.mark.skipif(not DEMO_MODEL.is_dir(), reason="the demo model is not built")
def test_preview_and_full_decode_give_the_vector_of_the_same_picture_as_a_jpeg():
    """With the demo model (96 px input) over the first 60 sample pictures by name, a RAW and the
    same picture saved as JPEG measured: preview path cosine min 0.9992, mean 1.0000; full decode
    (half size, camera white balance, no auto-brightening, sRGB curve) min 0.966, mean 0.997 (with
    LibRaw's auto-brightening: min 0.536, mean 0.951), while two different samples average 0.24;
    each RAW found its own JPEG first. Thresholds below leave room for other BLAS builds."""
    from siglip_search.embedder import Embedder

    embedder = Embedder.from_pretrained(DEMO_MODEL)
    names = [
        "0045_red-heart.jpg",
        "0039_black-triangle.jpg",
        "0037_purple-star.jpg",
        "0107_yellow-star_green-triangle_white-star.jpg",
        "0151_yellow-square.jpg",
    ]
    pictures = [picture(n, (224, 224)) for n in names]

    def vector(image: Image.Image) -> np.ndarray:
        return embedder.embed_pixels(embedder.preprocess_image(image)[None])[0]

    jpegs = np.stack([vector(Image.open(io.BytesIO(_jpeg(p)))) for p in pictures])
    for preview_px, threshold in ((224, 0.99), (None, 0.95)):
        raws = np.stack(
            [
                vector(
                    decode_raw(
                        io.BytesIO(dng_bytes(p, preview_px=preview_px, orientation=6)),
                        embedder.image_size,
                        10**8,
                    ).image
                )
                for p in pictures
            ]
        )
        cosines = raws @ jpegs.T
        assert np.diag(cosines).min() >= threshold, (preview_px, np.diag(cosines))
        assert (cosines.argmax(axis=1) == np.arange(len(pictures))).all()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def test_raw_folders_are_indexed_with_date_camera_lens_and_position(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    write_dng(photos / "IMG_0001.dng", picture(), preview_px=256, gps=(-33.8568, 151.2153))
    write_dng(
        photos / "IMG_0002.DNG",
        picture("0039_black-triangle.jpg"),
        preview_px=None,
        orientation=6,
        make="Canon",
        model="Canon EOS R5",
        lens=None,
    )
    summary = index_paths(library, [photos], embedder, progress=False)
    assert (summary.added, summary.failed) == (2, 0)
    rows = {Path(r.rel_path).name: r for r in library.store.iter_images()}
    first, second = rows["IMG_0001.dng"], rows["IMG_0002.DNG"]
    upright = (256, 192, 256, 192)
    assert (first.width, first.height, second.width, second.height) == upright
    assert first.taken_at == "2023-05-06T07:08:09" and first.camera == "Testcam X1"
    assert first.lens == "Testlens 35mm F2"
    assert first.latitude == pytest.approx(-33.8568, abs=1e-5) and first.longitude == pytest.approx(
        151.2153, abs=1e-5
    )
    assert second.camera == "Canon EOS R5" and second.lens is None and second.latitude is None


def test_a_raw_that_cannot_be_decoded_is_a_failed_row_with_its_reason(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = dng_bytes(picture(), preview_px=None)
    (photos / "cut.dng").write_bytes(good[: len(good) // 3])
    (photos / "notes.cr2").write_text("not a raw file\n")
    (photos / "zero.nef").write_bytes(b"")
    summary = index_paths(library, [photos], embedder, progress=False)
    assert summary.failed == 3
    reasons = {Path(r.rel_path).name: r.error for r in library.store.failures()}
    assert "RAW" in reasons["cut.dng"] or "corrupt" in reasons["cut.dng"]
    assert reasons["notes.cr2"].startswith("not a RAW file LibRaw can read")
    assert reasons["zero.nef"] == "empty file (0 bytes)"


def test_every_raw_extension_of_the_issue_is_indexed():
    issue = "dng cr2 cr3 nef nrw arw srf sr2 orf rw2 raf pef srw x3f 3fr iiq erf kdc mrw rwl"
    assert {f".{e}" for e in issue.split()} == set(RAW_EXTENSIONS)


def test_decode_image_reads_a_raw_by_its_extension(tmp_path):
    path = write_dng(tmp_path / "a.DNG", picture(), preview_px=256, orientation=8)
    decoded = decode_image(path, target_size=(38, 38))
    assert decoded.image.mode == "RGB" and (decoded.width, decoded.height) == (256, 192)
    (tmp_path / "b.arw").write_bytes(b"\x00" * 100)
    with pytest.raises(DecodeError, match="not a RAW file"):
        decode_image(tmp_path / "b.arw")


def test_heic_and_avif_photos_are_indexed_upright_with_their_exif(tmp_path, library, embedder):
    """What an iPhone writes (HEIC, written here by pillow-heif) and AVIF (Pillow's own codec)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Apple", "iPhone 15 Pro", 1
    exif.get_ifd(0x8769).update(
        {0x9003: "2024:08:01 12:30:00", 0xA434: "iPhone 15 Pro back camera 6.86mm f/1.78"}
    )
    exif.get_ifd(0x8825).update({1: "N", 2: (59.0, 19.0, 45.0), 3: "E", 4: (18.0, 4.0, 6.0)})
    picture("0045_red-heart.jpg", (160, 120)).save(
        photos / "IMG_0001.HEIC", quality=90, exif=exif.tobytes()
    )
    picture("0039_black-triangle.jpg", (160, 120)).save(photos / "IMG_0002.avif", quality=90)
    summary = index_paths(library, [photos], embedder, progress=False)
    assert (summary.added, summary.failed) == (2, 0)
    rows = {r.rel_path: r for r in library.store.iter_images()}
    heic, avif = rows["IMG_0001.HEIC"], rows["IMG_0002.avif"]
    assert (heic.width, heic.height, avif.width, avif.height) == (160, 120, 160, 120)
    assert heic.camera == "Apple iPhone 15 Pro" and heic.taken_at == "2024-08-01T12:30:00"
    assert heic.lens == "iPhone 15 Pro back camera 6.86mm f/1.78"
    assert heic.latitude == pytest.approx(59 + 19 / 60 + 45 / 3600)
    assert heic.longitude == pytest.approx(18 + 4 / 60 + 6 / 3600)
    decoded = decode_image(photos / "IMG_0001.HEIC")
    reference = np.asarray(picture("0045_red-heart.jpg", (160, 120)), dtype=np.float64)
    # the picture, upright
    assert np.abs(np.asarray(decoded.image, dtype=np.float64) - reference).mean() < 8


def test_photos_indexed_before_lens_and_gps_were_stored_get_them_at_the_next_run(
    tmp_path, library, embedder
):
    """A library indexed by an older version has no lens or position (the migration adds empty
    columns): the next run reads them from the files' metadata, decoding and embedding nothing."""
    photos = tmp_path / "photos"
    photos.mkdir()
    indexer_fixtures.save_jpeg_with_exif(
        photos / "a.jpg",
        picture(),
        make="Canon",
        model="Canon EOS R5",
        lens="RF50mm F1.8 STM",
        gps=(48.8584, 2.2945),
    )
    write_dng(photos / "b.dng", picture(), preview_px=256, lens="Testlens 35mm F2", gps=(1.5, 2.5))
    index_paths(library, [photos], embedder, progress=False)
    before = {r.id: r for r in library.store.iter_images()}
    vectors = library.store.embeddings_by_ids(before)
    with library.store.engine.begin() as conn:  # as the migration leaves them
        conn.exec_driver_sql(
            "UPDATE images SET lens = NULL, latitude = NULL, longitude = NULL, metadata_version = NULL"
        )
    assert {r.lens for r in library.store.iter_images()} == {None}

    summary = index_paths(library, [photos], embedder, progress=False)

    assert (summary.facts_read, summary.embedded, summary.unchanged) == (2, 0, 2)
    after = {r.id: r for r in library.store.iter_images()}
    for image_id, row in before.items():
        assert (after[image_id].lens, after[image_id].latitude) == (row.lens, row.latitude)
        assert after[image_id].camera == row.camera and after[image_id].taken_at == row.taken_at
    assert {r.lens for r in after.values()} == {"RF50mm F1.8 STM", "Testlens 35mm F2"}
    assert all(
        np.array_equal(v, library.store.embeddings_by_ids([i])[i]) for i, v in vectors.items()
    )
    assert index_paths(library, [photos], embedder, progress=False).facts_read == 0  # once
