"""What a photo file says about itself in EXIF: when it was taken, the camera, the lens and the GPS
position (JPEG, TIFF, HEIC and the TIFF-based RAW formats all keep EXIF the same way)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

# Exceptions Pillow raises on corrupt EXIF blocks.
EXIF_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, DATETIME, ORIENTATION = 0x010F, 0x0110, 0x0132, 0x0112
DATETIME_ORIGINAL, LENS_MAKE, LENS_MODEL = 0x9003, 0xA433, 0xA434
_GPS_LATITUDE_REF, _GPS_LATITUDE, _GPS_LONGITUDE_REF, _GPS_LONGITUDE, _GPS_STATUS = 1, 2, 3, 4, 9


@dataclass(frozen=True)
class PhotoMetadata:
    taken_at: str | None = None  # DateTimeOriginal (else DateTime) as ISO 8601, no time zone
    camera: str | None = None  # Make + Model ("Canon EOS R5", not "Canon Canon EOS R5")
    lens: str | None = None  # LensModel (with LensMake when the model does not name it)
    latitude: float | None = None  # decimal degrees, north positive
    longitude: float | None = None  # decimal degrees, east positive


def read_metadata(exif: Image.Exif | None) -> PhotoMetadata:
    """Date, camera, lens and position of an EXIF block; what cannot be read is None, never an error."""
    if exif is None:
        return PhotoMetadata()
    details = _sub_ifd(exif, EXIF_IFD)
    taken = details.get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    # TIFF/EP files (some RAW formats) may keep the lens in IFD0 itself.
    lens = _joined(
        _text(details.get(LENS_MAKE) or exif.get(LENS_MAKE)),
        _text(details.get(LENS_MODEL) or exif.get(LENS_MODEL)),
    )
    position = gps_position(_sub_ifd(exif, GPS_IFD))
    latitude, longitude = position if position else (None, None)
    camera = _joined(_text(exif.get(MAKE)), _text(exif.get(MODEL)))
    return PhotoMetadata(parse_exif_datetime(taken), camera, lens, latitude, longitude)


def _sub_ifd(exif: Image.Exif, tag: int) -> dict:
    try:
        return dict(exif.get_ifd(tag))
    except EXIF_ERRORS:
        return {}  # unreadable EXIF is lost metadata, not a lost photo


def _joined(make: str | None, model: str | None) -> str | None:
    if make and model and model.lower().startswith(make.lower()):
        make = None  # "Canon" + "Canon EOS R5" -> "Canon EOS R5"
    return " ".join(part for part in (make, model) if part) or None


def gps_position(gps: dict) -> tuple[float, float] | None:
    """(latitude, longitude) in decimal degrees from a GPS IFD; None when absent, void or invalid.
    (0, 0) is taken as no position: it is what cameras without a fix write."""
    try:
        if _text(gps.get(_GPS_STATUS)) == "V":  # "void": the receiver had no fix
            return None
        latitude = _degrees(gps[_GPS_LATITUDE], _text(gps.get(_GPS_LATITUDE_REF)), "S")
        longitude = _degrees(gps[_GPS_LONGITUDE], _text(gps.get(_GPS_LONGITUDE_REF)), "W")
    except EXIF_ERRORS:
        return None
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None
    if abs(latitude) > 90 or abs(longitude) > 180 or (latitude == 0 and longitude == 0):
        return None
    return latitude, longitude


def _degrees(value: object, ref: str | None, negative: str) -> float:
    parts = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)]  # type: ignore[arg-type]
    degrees = sum(p / 60**i for i, p in enumerate(parts[:3]))
    return -degrees if (ref or "").upper().startswith(negative) else degrees


def parse_exif_datetime(value: object) -> str | None:
    """'2021:07:14 18:03:09' -> '2021-07-14T18:03:09'; None for blanks and garbage."""
    text = _text(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y:%m:%d"):
        try:
            return datetime.strptime(text[:19], fmt).isoformat()
        except ValueError:
            continue
    return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").strip() or None
