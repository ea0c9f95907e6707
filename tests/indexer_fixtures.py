"""Real photo folders for the indexer tests: generated pictures, and the broken files users have."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from indexer.library import Library, open_library

PALETTE = [
    (220, 30, 30),
    (30, 165, 50),
    (30, 70, 225),
    (245, 220, 20),
    (245, 130, 15),
    (135, 45, 175),
]
EXIF_IFD, MAKE, MODEL, ORIENTATION, DATETIME_ORIGINAL = 0x8769, 0x010F, 0x0110, 0x0112, 0x9003
GPS_IFD, LENS_MODEL = 0x8825, 0xA434


def draw_photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct picture per seed: background tone, a few shapes, a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array(PALETTE[seed % len(PALETTE)], dtype=np.float64) * 0.4 + 60
    pixels = base + rng.normal(0, 12, (h, w, 3))
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for i in range(3):
        x, y = rng.integers(0, w - w // 4), rng.integers(0, h - h // 4)
        box = (
            int(x),
            int(y),
            int(x + w // 4 + rng.integers(0, w // 4)),
            int(y + h // 4 + rng.integers(0, h // 4)),
        )
        colour = PALETTE[(seed + i + 1) % len(PALETTE)]
        (draw.ellipse if (seed + i) % 2 else draw.rectangle)(box, fill=colour)
    return im


def save_jpeg_with_exif(
    path: Path,
    im: Image.Image,
    orientation: int = 1,
    taken: str | None = None,
    make: str | None = None,
    model: str | None = None,
    lens: str | None = None,
    gps: tuple[float, float] | None = None,
) -> Path:
    """A JPEG with the EXIF a camera writes: orientation, date, make and model, lens model, and a
    GPS position (decimal degrees, written as degrees, minutes, seconds with N/S and E/W)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    if make:
        exif[MAKE] = make
    if model:
        exif[MODEL] = model
    if taken:
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    if lens:
        exif.get_ifd(EXIF_IFD)[LENS_MODEL] = lens
    if gps is not None:
        position = exif.get_ifd(GPS_IFD)
        for (ref_tag, value_tag), value, refs in zip(
            ((1, 2), (3, 4)), gps, ("NS", "EW"), strict=True
        ):
            degrees, rest = divmod(abs(value) * 3600, 3600)
            minutes, seconds = divmod(rest, 60)
            position[ref_tag] = refs[value < 0]
            position[value_tag] = (float(degrees), float(minutes), round(seconds, 4))
    im.save(path, "JPEG", quality=90, exif=exif)
    return path


def make_photo_folder(folder: Path, n: int = 8) -> dict[str, Path]:
    """Mixed formats, sub-folders, EXIF, a unicode name. Returns {rel_path: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "2021" / "summer").mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(rel: str, seed: int, fmt: str | None = None, **kw) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im = draw_photo(seed)
        if fmt == "GIF":
            im = im.convert("P", palette=Image.Palette.ADAPTIVE)
        im.save(path, fmt, **kw)
        files[rel] = path

    save_jpeg_with_exif(
        folder / "2021/summer/beach.jpg",
        draw_photo(1),
        orientation=6,
        taken="2021:07:14 18:03:09",
        make="Canon",
        model="Canon EOS R5",
    )
    files["2021/summer/beach.jpg"] = folder / "2021/summer/beach.jpg"
    put("2021/forest.png", 2, "PNG")
    put("city.webp", 3, "WEBP", quality=90)
    put("cat.gif", 4, "GIF")
    put("dog.bmp", 5, "BMP")
    put("mountain.tif", 6, "TIFF")
    put("Ünïcødé 写真 🌅.jpg", 7, "JPEG", quality=90)
    put("UPPER.JPEG", 8, "JPEG", quality=90)
    for i in range(8, n):
        put(f"more/extra_{i:03d}.png", 100 + i, "PNG")
    return files


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few bytes: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_bad_corpus(folder: Path, outside: Path) -> dict[str, str | None]:
    """Every odd file from the issue. Returns {rel_path: expected reason substring, or None = indexed}."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | None] = {}
    good = jpeg_bytes(draw_photo(11, (400, 300)), quality=92)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    expect["truncated.jpg"] = "truncated or corrupt"
    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "empty file"
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    expect["notes.jpg"] = "not an image"
    (folder / "bomb.png").write_bytes(png_header_only(40_000, 40_000))
    expect["bomb.png"] = "decompression bomb"
    Image.new("L", (20_000, 40), 128).save(folder / "panorama.png")  # huge dimension, few pixels
    expect["panorama.png"] = None
    draw_photo(12).convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    expect["cmyk.jpg"] = None
    grey16 = (np.linspace(0, 65535, 120 * 160).reshape(120, 160)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")  # mode I;16
    expect["grey16.png"] = None
    palette = draw_photo(13).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(folder / "palette_alpha.png", transparency=0)
    expect["palette_alpha.png"] = None
    frames = [draw_photo(14 + i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    frames[0].save(
        folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0
    )
    expect["animated.gif"] = None
    draw_photo(17).convert("RGBA").save(folder / "alpha.webp", "WEBP")
    expect["alpha.webp"] = None
    draw_photo(18).save(outside / "real.jpg", "JPEG")
    os.symlink(outside / "real.jpg", folder / "linked.jpg")  # a valid symlinked file is followed
    expect["linked.jpg"] = None
    os.symlink(folder / "nowhere.jpg", folder / "broken.jpg")
    expect["broken.jpg"] = "broken symlink"
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    expect["loop.jpg"] = "symlink loop"
    (folder / "sub").mkdir()
    os.symlink(folder, folder / "sub" / "back")  # a folder link to an ancestor: not walked twice
    draw_photo(19).save(folder / "sub" / "odd name & 'quotes' [1].png")
    expect["sub/odd name & 'quotes' [1].png"] = None
    with open(os.path.join(os.fsencode(folder), b"latin1-caf\xe9.jpg"), "wb") as f:
        f.write(jpeg_bytes(draw_photo(20)))
    expect["latin1-caf\\xe9.jpg"] = "not valid UTF-8"
    # Junk that must be skipped without a trace.
    (folder / "._truncated.jpg").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for junk_dir in ("@eaDir", "#recycle", ".thumbnails"):
        (folder / junk_dir).mkdir()
        draw_photo(21).save(folder / junk_dir / "thumb.jpg")
    if permissions_are_enforced(outside):  # root reads everything: the case exists for users only
        draw_photo(22).save(folder / "secret.jpg")
        os.chmod(folder / "secret.jpg", 0)
        expect["secret.jpg"] = "permission denied"
    return expect


def permissions_are_enforced(folder: Path) -> bool:
    """False for root (or CAP_DAC_OVERRIDE), who can read a chmod 000 file anyway."""
    probe = folder / ".permission-probe"
    probe.write_bytes(b"x")
    os.chmod(probe, 0)
    try:
        probe.read_bytes()
        return False
    except PermissionError:
        return True
    finally:
        probe.unlink()


def db_rows(
    library: Library | Path, database: str | None = None
) -> list[tuple[str, str, bytes | None]]:
    """(rel_path, status, embedding) of every image row, read with plain sqlite3 from the library
    folder's file, or with plain SQL from `database` (a library on a server; for an open Library,
    the database it is on)."""
    if isinstance(library, Library):
        if library.store.on_server:
            database = library.store.engine.url.render_as_string(hide_password=False)
        library = library.path
    if database is not None:
        import sqlalchemy as sa

        engine = sa.create_engine(database)
        with engine.connect() as server:
            found = server.execute(
                sa.text("SELECT rel_path, status, embedding FROM images ORDER BY rel_path")
            )
            rows = [
                (rel, status, None if vector is None else bytes(vector))
                for rel, status, vector in found
            ]
        engine.dispose()
        return rows
    with sqlite3.connect(library / "library.db") as conn:
        return conn.execute(
            "SELECT rel_path, status, embedding FROM images ORDER BY rel_path"
        ).fetchall()


@pytest.fixture(scope="session")
def embedder(tiny_checkpoint):
    from siglip_search.embedder import Embedder

    return Embedder.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def other_embedder(other_tiny_checkpoint):
    from siglip_search.embedder import Embedder

    return Embedder.from_pretrained(other_tiny_checkpoint)


@pytest.fixture
def library(tmp_path, database_url):
    """A new library: an SQLite file in tmp_path/library, or on the test server (database_url)."""
    lib = open_library(tmp_path / "library", database=database_url)
    yield lib
    lib.close()


# Runs steps where file permissions apply, after checking that they do: ["chmod", path, mode] or
# CLI argv; reports what each printed (a traceback is data too). argv: folder, probe, steps.
_PERMISSIONS_CHILD = r"""
import contextlib, io, json, os, sys, traceback
folder, probe, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
path = os.path.join(folder, "probe")
try:
    if probe == "read":  # a chmod 000 file in a writable folder
        open(path, "w").close()
        os.chmod(path, 0)
        open(path).close()
    else:  # a file in a folder without write permission
        open(path, "w").close()
except PermissionError:
    enforced = True
else:
    enforced = False
finally:
    if probe == "read" or os.path.exists(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
if not enforced:
    print(json.dumps("permissions not enforced"))
    sys.exit()
from siglip_search.cli import main
results = []
for step in steps:
    if step[0] == "chmod":
        os.chmod(step[1], int(step[2], 8))
        continue
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(step)
        except BaseException:
            rc = None
            traceback.print_exc(file=err)
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_cli_where_permissions_apply(folder: Path, steps: list[list[str]], probe: str) -> list[dict]:
    """Run `steps` (CLI argv, or ["chmod", path, mode]) in a child process that file permissions apply
    to: as is for a normal user; for root, with the capabilities that bypass them dropped (setpriv).
    Skips where they cannot be enforced, as `probe` finds in `folder`: "read" (a chmod 000 file
    there cannot be read) or "write" (the folder, without write permission, takes no file)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file permissions cannot be enforced")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    argv = [
        *prefix,
        sys.executable,
        "-c",
        _PERMISSIONS_CHILD,
        str(folder),
        probe,
        json.dumps(steps),
    ]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert child.returncode == 0, child.stderr
    results = json.loads(child.stdout.strip().splitlines()[-1])
    if results == "permissions not enforced":
        pytest.skip(f"this process is not stopped by file permissions ({probe} probe in {folder})")
    return results


@contextlib.contextmanager
def fails_after(seconds: int) -> Iterator[None]:
    """A regression that blocks (a FIFO opened for reading, a pipeline waiting on a dead worker)
    fails its test after `seconds` instead of hanging the suite (SIGALRM, main thread only)."""

    def hung(*_):
        raise AssertionError(f"still waiting after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
