"""RAW camera files through LibRaw (rawpy): the camera's embedded JPEG preview when it is large
enough for the model, else a half-size decode with the camera's white balance; the RAW's own
orientation; date, camera, lens and GPS position as for a JPEG."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DecodeError
from .exif import EXIF_ERRORS, PhotoMetadata, read_metadata

try:  # a normal dependency; a Python without it counts RAW files as undecodable (decode.MISSING_DECODERS)
    import rawpy
except ImportError:  # pragma: no cover - depends on the installation
    rawpy = None  # type: ignore[assignment]  # the module or None: callers test `rawpy is None`

# What cameras write (dcraw/LibRaw's list of the common ones): Adobe DNG, Canon, Nikon, Sony,
# Olympus/OM, Panasonic, Fujifilm, Pentax, Samsung, Sigma, Hasselblad, Phase One, Epson, Kodak,
# Minolta, Leica.
RAW_EXTENSIONS = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".orf",
        ".rw2",
        ".raf",
        ".pef",
        ".srw",
        ".x3f",
        ".3fr",
        ".iiq",
        ".erf",
        ".kdc",
        ".mrw",
        ".rwl",
    }
)
RAW_DECODER_REMEDY = "pip install rawpy"
SRGB_CURVE = (2.4, 12.92)  # LibRaw's (power, toe slope); its default (2.222, 4.5) is BT.709's
# A preview whose shape differs from the sensor's by more than this is a letterboxed thumbnail
# (a 4:3 thumbnail of a 3:2 photo, with black bars), not the picture.
_ASPECT_TOLERANCE = 0.05
# LibRaw's `flip` -> the EXIF orientation it was read from (LibRaw maps 1..8 to "01324675"[o & 7]).
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class RawPicture:
    image: Image.Image  # RGB, upright
    width: int  # the sensor's picture size, upright (not the preview's or the half-size decode's)
    height: int
    metadata: PhotoMetadata
    from_preview: bool  # the camera's embedded JPEG, not a decode of the sensor data


def is_raw_name(name: str) -> bool:
    return name[name.rfind(".") :].lower() in RAW_EXTENSIONS if "." in name else False


def decode_raw(f: BinaryIO, target_size: tuple[int, int] | None, max_pixels: int) -> RawPicture:
    """Decode an open RAW file; DecodeError(reason) for one LibRaw cannot read.

    The whole file is read once (LibRaw reads all of it anyway) from the already opened,
    regular file: LibRaw itself never opens a path, which could be a FIFO by now."""
    if rawpy is None:
        raise DecodeError(f"unsupported: this Python has no RAW decoder ({RAW_DECODER_REMEDY})")
    data = f.read()
    raw = rawpy.RawPy()
    try:
        try:
            raw.open_buffer(io.BytesIO(data))
        except (rawpy.LibRawError, rawpy.NotSupportedError):
            raise DecodeError(
                "not a RAW file LibRaw can read (unknown camera format or corrupt)"
            ) from None
        return _decode_opened(raw, data, target_size, max_pixels)
    except (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError, MemoryError) as exc:
        raise DecodeError(f"RAW too large to decode ({_reason(exc)})") from None
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise DecodeError(f"truncated or corrupt RAW data ({_reason(exc)})") from None
    finally:
        raw.close()


def read_raw_metadata(f: BinaryIO) -> PhotoMetadata:
    """Date, camera, lens and GPS position of an open RAW file, without decoding its pixels (the
    file is read whole, as LibRaw parses it from memory); DecodeError for one LibRaw cannot read."""
    if rawpy is None:
        raise DecodeError(f"unsupported: this Python has no RAW decoder ({RAW_DECODER_REMEDY})")
    data = f.read()
    raw = rawpy.RawPy()
    try:
        raw.open_buffer(io.BytesIO(data))
        return _metadata(raw, data, _thumb_exif(raw))
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise DecodeError(f"not a RAW file LibRaw can read ({_reason(exc)})") from None
    finally:
        raw.close()


def _thumb_exif(raw) -> Image.Exif | None:
    """The EXIF of the embedded JPEG preview (where Fujifilm keeps it), if any."""
    try:
        thumb = raw.extract_thumb()
        if thumb.format != rawpy.ThumbFormat.JPEG:
            return None
        with Image.open(io.BytesIO(thumb.data)) as preview:
            return preview.getexif()
    except (rawpy.LibRawError, rawpy.NotSupportedError, UnidentifiedImageError, *EXIF_ERRORS):
        return None


def _decode_opened(
    raw, data: bytes, target_size: tuple[int, int] | None, max_pixels: int
) -> RawPicture:
    sizes = raw.sizes
    width, height = sizes.width, sizes.height
    if width <= 0 or height <= 0:
        raise DecodeError("not a RAW file LibRaw can read (no image in it)")
    # The pixels decoded are the half-size image (or the smaller preview): a quarter of the sensor's.
    if (width // 2) * (height // 2) > max_pixels:
        half = (width // 2, height // 2)
        raise DecodeError(
            f"decompression bomb ({half[0]}x{half[1]} = {half[0] * half[1]} pixels at half size, "
            f"limit {max_pixels})"
        )
    orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
    preview = _preview(raw, (width, height), target_size)
    if preview is not None:
        image, preview_exif = preview, _preview_exif(preview)
    else:
        image, preview_exif = _half_size(raw), None
    image = image.transpose(_ORIENT[orientation]) if orientation in _ORIENT else image
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return RawPicture(image, width, height, _metadata(raw, data, preview_exif), preview is not None)


def _preview(
    raw, sensor_size: tuple[int, int], target_size: tuple[int, int] | None
) -> Image.Image | None:
    """The embedded preview, RGB, when its short side reaches the model's input size and it shows the
    whole picture; else None (then the sensor data is decoded)."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, rawpy.NotSupportedError):
        return None  # no preview, or one LibRaw cannot hand out: decode the sensor data
    image: Image.Image
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data))
            if image.format != "JPEG":
                return None
        else:
            image = Image.fromarray(np.asarray(thumb.data, dtype=np.uint8))
    except (UnidentifiedImageError, Image.DecompressionBombError, *EXIF_ERRORS):
        return None
    needed = min(target_size) if target_size else max(sensor_size)
    if min(image.size) < needed or not _same_shape(image.size, sensor_size):
        return None
    try:
        if image.format == "JPEG" and target_size is not None:
            image.draft("RGB", (2 * max(target_size),) * 2)
        image.load()
    except (Image.DecompressionBombError, *EXIF_ERRORS):
        return None  # a broken preview: the sensor data may still decode
    return image if image.mode == "RGB" else image.convert("RGB")


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Same aspect ratio within the tolerance, in either orientation (some previews come rotated)."""
    ratio_a, ratio_b = max(a) / min(a), max(b) / min(b)
    return abs(ratio_a - ratio_b) <= _ASPECT_TOLERANCE * ratio_b


def _half_size(raw) -> Image.Image:
    """Demosaiced at half resolution (each 2x2 Bayer cell one pixel: no interpolation, 4x fewer
    pixels) with the white balance the camera measured, into sRGB with the sRGB curve, 8 bits;
    unrotated (orientation is applied by the caller, as for the preview). Not auto-brightened:
    LibRaw's default stretches the brightest 1 % to white, which turned the grey and pastel
    backgrounds of test pictures white (cosine to the same picture as JPEG down to 0.59 with the demo
    model, against 0.977 without it)."""
    pixels = raw.postprocess(
        half_size=True,
        use_camera_wb=True,
        no_auto_bright=True,
        gamma=SRGB_CURVE,
        output_bps=8,
        user_flip=0,
    )
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def _preview_exif(preview: Image.Image) -> Image.Exif | None:
    try:
        return preview.getexif()
    except EXIF_ERRORS:
        return None


def _metadata(raw, data: bytes, preview_exif: Image.Exif | None) -> PhotoMetadata:
    """EXIF of the file itself (the TIFF-based formats), else of its preview (Fujifilm RAF keeps it
    there); LibRaw's lens name (it reads makers' notes too) and date taken where EXIF lacks them."""
    found = read_metadata(_tiff_exif(data))
    if found.camera is None and found.taken_at is None and preview_exif is not None:
        found = read_metadata(preview_exif)
    lens, taken_at = found.lens, found.taken_at
    try:
        lens = (raw.lens.model or "").strip() or lens
    except (rawpy.LibRawError, UnicodeDecodeError, AttributeError):
        pass
    if taken_at is None:
        try:
            stamp = raw.other.timestamp  # LibRaw's local time, as the camera's clock showed it
            taken_at = stamp.replace(microsecond=0).isoformat() if stamp.year > 1970 else None
        except (rawpy.LibRawError, ValueError, OSError, OverflowError, AttributeError):
            taken_at = None
    return replace(found, lens=lens, taken_at=taken_at)


# TIFF-based RAW formats whose header is not TIFF's "II*\0"/"MM\0*": Olympus ORF ("IIRO", "IIRS",
# "MMOR") and Panasonic RW2/Leica RWL ("IIU\0"). Their IFDs are TIFF's, so the magic is replaced.
_TIFF_LIKE = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00")


def _tiff_exif(data: bytes) -> Image.Exif | None:
    head = data[:4]
    if head in _TIFF_LIKE:
        data = head[:2] + (b"*\x00" if head[:2] == b"II" else b"\x00*") + data[4:]
    elif head not in (b"II*\x00", b"MM\x00*"):
        return None
    exif = Image.Exif()
    try:
        exif.load(data)
    except EXIF_ERRORS:
        return None
    return exif


def _reason(exc: BaseException) -> str:
    """LibRaw's message (rawpy hands it over as bytes) or the exception's name."""
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    text = str(message).splitlines()[0] if str(message) else type(exc).__name__
    return text[:200]
