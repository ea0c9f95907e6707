"""Real DNG files for tests: a Bayer mosaic of a picture, an optional JPEG preview, EXIF and GPS.

Written here, byte by byte, as a TIFF/EP file with the DNG tags (DNG 1.4 layout: IFD0 a small RGB
thumbnail, SubIFD 1 the raw CFA, SubIFD 2 the JPEG preview, an Exif IFD and a GPS IFD), because no
package on PyPI writes DNGs with a preview and EXIF: pidng writes the raw IFD only (no preview, no
Exif IFD; last release 2022, a C extension to compile), and tifffile needs imagecodecs even for a
pre-compressed JPEG strip and cannot write an Exif IFD. LibRaw decodes these files and `exiftool
-validate` finds no error in them (test_raw.py checks both), so they are what a DNG converter
writes, only smaller.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
_PACK = {BYTE: "B", SHORT: "H", LONG: "I", UNDEFINED: "B"}
# XYZ (D65) -> linear sRGB: as ColorMatrix1, LibRaw's camera -> sRGB matrix becomes the identity,
# so the mosaic below holds linear sRGB times the white balance.
XYZ_TO_SRGB = (
    3.2404542,
    -1.5371385,
    -0.4985314,
    -0.9692660,
    1.8760108,
    0.0415560,
    0.0556434,
    -0.2040259,
    1.0572252,
)
D65 = 21  # CalibrationIlluminant1
BLACK, WHITE = 256, 4095  # a 12-bit sensor with a black level, as most are
# What a grey card gives on this pretend sensor (AsShotNeutral): red and blue weaker than green, so
# a decode that ignores the camera's white balance comes out green.
AS_SHOT_NEUTRAL = (0.5, 1.0, 0.7)
# EXIF orientation -> the transpose that stores an upright picture the way the sensor saw it.
_TO_SENSOR = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


class _Tiff:
    """A little-endian TIFF assembled front to back: blobs first, each IFD after what it points to."""

    def __init__(self) -> None:
        self.buf = bytearray(b"II*\x00\x00\x00\x00\x00")

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:  # TIFF offsets are word-aligned
            self.buf += b"\x00"
        offset = len(self.buf)
        self.buf += data
        return offset

    def ifd(self, entries: list[tuple[int, int, object]]) -> int:
        fields = []
        for tag, kind, value in sorted(entries, key=lambda e: e[0]):
            data, count = _encode(kind, value)
            inline = (
                data.ljust(4, b"\x00") if len(data) <= 4 else struct.pack("<I", self.blob(data))
            )
            fields.append(struct.pack("<HHI", tag, kind, count) + inline)
        return self.blob(struct.pack("<H", len(fields)) + b"".join(fields) + b"\x00\x00\x00\x00")

    def strip(self, data: bytes) -> list[tuple[int, int, object]]:
        return [
            (273, LONG, self.blob(data)),
            (279, LONG, len(data)),
        ]  # StripOffsets, StripByteCounts

    def finish(self, ifd0: int) -> bytes:
        self.buf[4:8] = struct.pack("<I", ifd0)
        return bytes(self.buf)


def _encode(kind: int, value: object) -> tuple[bytes, int]:
    if kind == ASCII:
        data = str(value).encode() + b"\x00"
        return data, len(data)
    values = list(value) if isinstance(value, (list, tuple, bytes)) else [value]
    if kind in (RATIONAL, SRATIONAL):
        pairs: list[int] = []
        for v in values:
            pairs += list(v) if isinstance(v, tuple) else [round(float(v) * 10_000), 10_000]
        return struct.pack("<" + ("i" if kind == SRATIONAL else "I") * len(pairs), *pairs), len(
            values
        )
    return struct.pack("<" + _PACK[kind] * len(values), *values), len(values)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) sRGB uint8 -> (H, W) uint16 RGGB mosaic as the pretend sensor records it."""
    values = np.round(BLACK + srgb_to_linear(rgb) * np.asarray(AS_SHOT_NEUTRAL) * (WHITE - BLACK))
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = values[0::2, 0::2, 0]
    cfa[0::2, 1::2] = values[0::2, 1::2, 1]
    cfa[1::2, 0::2] = values[1::2, 0::2, 1]
    cfa[1::2, 1::2] = values[1::2, 1::2, 2]
    return cfa


def _dms(degrees: float) -> list[tuple[int, int]]:
    degrees = abs(degrees)
    whole, minutes = int(degrees), int(abs(degrees) * 60) % 60
    seconds = (degrees - whole - minutes / 60) * 3600
    return [(whole, 1), (minutes, 1), (round(seconds * 1000), 1000)]


def dng_bytes(
    picture: Image.Image,
    *,
    preview_px: int | None = None,
    orientation: int = 1,
    make: str | None = "Testcam",
    model: str | None = "Testcam X1",
    taken: str | None = "2023:05:06 07:08:09",
    lens: str | None = "Testlens 35mm F2",
    gps: tuple[float, float] | None = None,
    thumbnail_px: int = 32,
) -> bytes:
    """A DNG of the upright `picture` (even width and height) as a camera held at `orientation`
    records it, with a JPEG preview whose long side is `preview_px` (None: no preview, only the
    small IFD0 thumbnail), EXIF date and lens, and optionally a GPS position."""
    upright = picture.convert("RGB")
    sensor = upright.transpose(_TO_SENSOR[orientation]) if orientation != 1 else upright
    w, h = sensor.size
    tiff = _Tiff()
    raw_ifd = tiff.ifd(
        [
            (254, LONG, 0),
            (256, LONG, w),
            (257, LONG, h),
            (258, SHORT, 16),
            (259, SHORT, 1),
            (262, SHORT, 32803),
            (277, SHORT, 1),
            (278, LONG, h),
            (284, SHORT, 1),
            (33421, SHORT, (2, 2)),
            (33422, BYTE, (0, 1, 1, 2)),
            (50714, LONG, BLACK),
            (50717, LONG, WHITE),
            *tiff.strip(bayer_mosaic(np.asarray(sensor)).tobytes()),
        ]
    )
    sub_ifds = [raw_ifd]
    if preview_px is not None:
        preview = sensor.copy()
        preview.thumbnail((preview_px, preview_px), Image.Resampling.LANCZOS)
        encoded = io.BytesIO()
        preview.save(encoded, "JPEG", quality=92)
        sub_ifds.append(
            tiff.ifd(
                [
                    (254, LONG, 1),
                    (256, LONG, preview.width),
                    (257, LONG, preview.height),
                    (258, SHORT, (8, 8, 8)),
                    (259, SHORT, 7),
                    (262, SHORT, 6),
                    (277, SHORT, 3),
                    (278, LONG, preview.height),
                    (284, SHORT, 1),
                    *tiff.strip(encoded.getvalue()),
                ]
            )
        )
    exif = [(36864, UNDEFINED, b"0231")]
    exif += [(36867, ASCII, taken)] if taken else []
    exif += [(42036, ASCII, lens)] if lens else []
    thumbnail = sensor.copy()
    thumbnail.thumbnail((thumbnail_px, thumbnail_px))
    ifd0 = [
        (254, LONG, 1),
        (256, LONG, thumbnail.width),
        (257, LONG, thumbnail.height),
        (258, SHORT, (8, 8, 8)),
        (259, SHORT, 1),
        (262, SHORT, 2),
        (274, SHORT, orientation),
        (277, SHORT, 3),
        (278, LONG, thumbnail.height),
        (284, SHORT, 1),
        (305, ASCII, "siglip-search tests"),
        (330, LONG, sub_ifds),
        (34665, LONG, tiff.ifd(exif)),
        (50706, BYTE, (1, 4, 0, 0)),
        (50707, BYTE, (1, 1, 0, 0)),
        (50708, ASCII, " ".join(p for p in (make, model) if p) or "Unknown"),
        (50721, SRATIONAL, XYZ_TO_SRGB),
        (50728, RATIONAL, AS_SHOT_NEUTRAL),
        (50778, SHORT, D65),
        *tiff.strip(np.asarray(thumbnail).tobytes()),
    ]
    ifd0 += [(271, ASCII, make)] if make else []
    ifd0 += [(272, ASCII, model)] if model else []
    ifd0 += [(306, ASCII, taken)] if taken else []
    if gps is not None:
        latitude, longitude = gps
        ifd0.append(
            (
                34853,
                LONG,
                tiff.ifd(
                    [
                        (0, BYTE, (2, 3, 0, 0)),
                        (1, ASCII, "N" if latitude >= 0 else "S"),
                        (2, RATIONAL, _dms(latitude)),
                        (3, ASCII, "E" if longitude >= 0 else "W"),
                        (4, RATIONAL, _dms(longitude)),
                    ]
                ),
            )
        )
    return tiff.finish(tiff.ifd(ifd0))


def write_dng(path: Path, picture: Image.Image, **options) -> Path:
    """`dng_bytes(picture, **options)` written to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dng_bytes(picture, **options))
    return path
