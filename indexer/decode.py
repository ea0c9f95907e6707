"""Open one image file safely: pixel cap, JPEG draft decoding, EXIF orientation and metadata, RGB."""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import struct
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import DecodeError, NotRegularFileError
from .exif import EXIF_ERRORS, ORIENTATION, PhotoMetadata, read_metadata
from .raw import RAW_DECODER_REMEDY, RAW_EXTENSIONS, decode_raw, is_raw_name, rawpy

# littleCMS, for Lab images (Pillow's ImageCms); Pillow wheels include it, some source builds do not.
HAS_LITTLECMS = features.check_module("littlecms2")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
if features.check("avif"):  # Pillow >= 11.2 built with libavif
    IMAGE_EXTENSIONS.add(".avif")
try:  # a dependency (iPhones write HEIC); a Python without it names the remedy (MISSING_DECODERS)
    from pillow_heif import register_heif_opener
except ImportError:
    pass
else:
    register_heif_opener()
    IMAGE_EXTENSIONS.update({".heic", ".heif"})
if rawpy is not None:  # RAW files go to indexer.raw (LibRaw), by their extension
    IMAGE_EXTENSIONS.update(RAW_EXTENSIONS)

# Photo formats this Python cannot decode, and what would let it: the indexer counts and names them.
MISSING_DECODERS = {
    suffix: remedy
    for suffix, remedy in (
        (".heic", "pip install pillow-heif"),
        (".heif", "pip install pillow-heif"),
        (".avif", "Pillow 11.2 or later, built with AVIF"),
        *((suffix, RAW_DECODER_REMEDY) for suffix in sorted(RAW_EXTENSIONS)),
    )
    if suffix not in IMAGE_EXTENSIONS
}

# Pillow's own default (~89 MP, a 4-byte-per-pixel image of ~358 MB): larger is refused.
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
# Exceptions Pillow raises on corrupt, truncated or hostile files (plugins use all of these).
PILLOW_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
)

# Pillow warns (on stderr, two lines a file) about EXIF blocks shorter than they claim; _read_exif
# already keeps what is readable and the photo indexes. A filter, not catch_warnings(): decoding
# runs in threads, and catch_warnings() swaps the process-wide filters under the other threads.
warnings.filterwarnings(
    "ignore",
    message=r"(Possibly corrupt|Corrupt) EXIF data|Truncated File Read",
    category=UserWarning,
    module=r"PIL\.TiffImagePlugin",
)


@dataclass
class DecodedImage:
    """An RGB image ready for the embedder's preprocessing, and what the file says about itself."""

    image: (
        Image.Image
    )  # mode "RGB", EXIF orientation applied, maybe reduced (draft, reduce_for_model)
    width: int  # full-resolution size after orientation, not the drafted size
    height: int
    taken_at: str | None  # EXIF DateTimeOriginal as ISO 8601, no time zone
    camera: str | None  # EXIF Make + Model
    lens: str | None = None  # EXIF LensModel (RAW files: LibRaw's lens name)
    latitude: float | None = None  # EXIF GPS position, decimal degrees
    longitude: float | None = None

    def metadata(self) -> PhotoMetadata:
        return PhotoMetadata(self.taken_at, self.camera, self.lens, self.latitude, self.longitude)


def decode_image(
    path: str | os.PathLike,
    *,
    target_size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode `path`; raise DecodeError(reason) for anything that is not a usable image.

    target_size is the model's (height, width). JPEGs much larger than it are decoded at
    1/2, 1/4 or 1/8 scale with draft(), never below twice the target, so the final resize
    still has the detail an antialiased downscale needs while decoding 4-16x fewer pixels.
    Other formats, whose Pillow decoders offer no reduced decoding, are reduced right after
    decoding by reduce_for_model.
    """
    # A max_pixels given is the only limit (Pillow's is raised to it); by default Pillow's stays.
    lift = _pillow_pixel_limit(max_pixels) if max_pixels else contextlib.nullcontext()
    try:
        with open_regular_file(path) as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise DecodeError("empty file (0 bytes)")
            if is_raw_name(os.fsdecode(path)):
                return _decode_raw_file(f, target_size, max_pixels or DEFAULT_MAX_PIXELS)
            with lift:
                return _decode_open_file(f, target_size, max_pixels or DEFAULT_MAX_PIXELS)
    except PermissionError:
        raise DecodeError("permission denied") from None
    except FileNotFoundError:
        raise DecodeError("file disappeared while indexing") from None
    except NotRegularFileError as exc:
        raise DecodeError(exc.reason) from None


def open_regular_file(path: str | os.PathLike):
    """Open `path` for reading in binary, refusing anything but a regular file (NotRegularFileError).

    Opened with O_NONBLOCK: a photo replaced by a FIFO after the scan would block a plain open()
    for good, waiting for a writer. O_NONBLOCK means nothing to a regular file; it is cleared anyway."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # not inherited by children (PEP 446)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "is a directory"
                if stat.S_ISDIR(mode)
                else f"not a regular file ({_file_kind(mode)})"
            )
            raise NotRegularFileError(path, kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a file"


_limit_lock = threading.Lock()
_limit_users: Counter[int] = Counter()  # max_pixels of each decode in flight
_limit_saved: list[int | None] = []  # Pillow's own limit, while decodes are in flight


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make `max_pixels` the only limit. Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS in
    open() and load(), before our check sees the size, so a larger --max-pixels must raise Pillow's
    module-wide limit while the decode runs. Decoding runs in threads: the limit is the largest
    any decode in flight asked for, and Pillow's own comes back when the last one ends. Without a
    max_pixels given this is not used: the default limit stays Pillow's."""
    with _limit_lock:
        if not _limit_users:
            _limit_saved[:] = [Image.MAX_IMAGE_PIXELS]
        _limit_users[max_pixels] += 1
        _set_pillow_limit()
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users[max_pixels] -= 1
            if not _limit_users[max_pixels]:
                del _limit_users[max_pixels]
            _set_pillow_limit()


def _set_pillow_limit() -> None:
    saved = _limit_saved[0]
    if _limit_users and saved is not None:  # None: the application turned Pillow's check off
        Image.MAX_IMAGE_PIXELS = max(saved, max(_limit_users))
    else:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_open_file(f, target_size: tuple[int, int] | None, max_pixels: int) -> DecodedImage:
    try:
        im = Image.open(f)
    except UnidentifiedImageError:
        raise DecodeError("not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        # Pillow's limit is below ours only when the application lowered it and no max_pixels was given.
        limit, size = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels)), _claimed_size(f)
        raise DecodeError(
            _too_many_pixels(size, limit) if size else f"decompression bomb ({exc})"
        ) from None
    except PILLOW_ERRORS as exc:
        raise DecodeError(f"corrupt image header ({_short(exc)})") from None
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(_too_many_pixels(im.size, max_pixels))
        exif = _read_exif(im)
        if im.format == "JPEG" and target_size is not None:
            side = 2 * max(target_size)  # orientation-agnostic: rotation may swap h and w
            im.draft("RGB", (side, side))
        try:
            im.seek(0)  # animated GIF/WebP/PNG: the first frame
            im.load()
        except Image.DecompressionBombError as exc:
            raise DecodeError(f"decompression bomb ({exc})") from None
        except PILLOW_ERRORS as exc:
            raise DecodeError(f"truncated or corrupt image data ({_short(exc)})") from None
        image = _apply_orientation(im, exif)
    if exif is not None and exif.get(ORIENTATION) in (5, 6, 7, 8):
        width, height = height, width
    return _decoded(
        reduce_for_model(to_rgb(image), target_size), width, height, read_metadata(exif)
    )


def _decode_raw_file(f, target_size: tuple[int, int] | None, max_pixels: int) -> DecodedImage:
    picture = decode_raw(f, target_size, max_pixels)
    image = reduce_for_model(picture.image, target_size)
    return _decoded(image, picture.width, picture.height, picture.metadata)


def reduce_for_model(image: Image.Image, target_size: tuple[int, int] | None) -> Image.Image:
    """`image` averaged over k x k boxes (Image.reduce) by the largest whole k that divides both
    sides and leaves each at least twice the target's larger side (draft()'s rule), or `image`
    itself (no target, or no such k). Pillow's own resize(reducing_gap=...) reduces so before a
    resample; a k that divides both sides keeps the geometry exact (a partial box at the edge
    moved the photo's last column by up to half a pixel: 0.14 against 0.02 of the normalised pixel
    range). The bicubic resize to the model's input then reads 4-100x fewer pixels."""
    if target_size is None:
        return image
    largest = min(image.width, image.height) // (2 * max(target_size))
    common = math.gcd(image.width, image.height)
    factor = next((k for k in range(largest, 1, -1) if common % k == 0), 1)
    return image.reduce(factor) if factor > 1 else image


def _decoded(image: Image.Image, width: int, height: int, found: PhotoMetadata) -> DecodedImage:
    return DecodedImage(
        image,
        width,
        height,
        found.taken_at,
        found.camera,
        found.lens,
        found.latitude,
        found.longitude,
    )


def _too_many_pixels(size: tuple[int, int], max_pixels: int) -> str:
    # refused_pixel_count reads this back: the indexer tries the file again under a higher --max-pixels.
    width, height = size
    return f"decompression bomb ({width}x{height} = {width * height} pixels, limit {max_pixels})"


_PIXEL_COUNT = re.compile(r"^decompression bomb \(\d+x\d+ = (\d+) pixels")


def refused_pixel_count(reason: str | None) -> int | None:
    """The pixel count of an image a decode refused as too large (its DecodeError reason), else None."""
    found = _PIXEL_COUNT.match(reason or "")
    return int(found.group(1)) if found else None


def _claimed_size(f) -> tuple[int, int] | None:
    """The size in the header of a file Pillow refused in open(): read again past Pillow's check
    (open() reads only the header, nothing is decoded) so the failure says how big it is."""
    try:
        f.seek(0)
        with _pillow_pixel_limit(sys.maxsize), Image.open(f) as im:
            return im.size
    except PILLOW_ERRORS:
        return None


def _read_exif(im: Image.Image) -> Image.Exif | None:
    try:
        return im.getexif()
    except PILLOW_ERRORS + EXIF_ERRORS:
        return None  # unreadable EXIF is lost metadata, not a lost photo


def _apply_orientation(im: Image.Image, exif: Image.Exif | None) -> Image.Image:
    if exif is None or exif.get(ORIENTATION, 1) == 1:
        return im.copy()
    try:
        return ImageOps.exif_transpose(im)
    except PILLOW_ERRORS + EXIF_ERRORS:
        return im.copy()


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB for every mode Pillow decodes to, as the embedder's preprocessing would make it:
    transparency composited onto white, 16/32-bit grey scaled to 8 bits (not clipped at 255),
    float grey as photo tools show it, Lab through littleCMS. DecodeError for a mode we cannot."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Before the transparency check: convert("RGBA") would clip every value above 255 to white.
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        scaled = values / top * 255.0
        transparent = im.info.get("transparency")
        # PNG tRNS: the pixels of this one grey value are transparent
        if isinstance(transparent, int):
            scaled[values == transparent] = 255.0  # composited onto white
        return _grey_to_rgb(scaled)
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(
            Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba
        ).convert("RGB")
    if im.mode == "F":
        return _grey_to_rgb(_float_to_8bit_scale(np.asarray(im, dtype=np.float64)))
    if im.mode == "LAB":
        return _lab_to_srgb(im)
    return im.convert("RGB")


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.nan_to_num(values) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _float_to_8bit_scale(values: np.ndarray) -> np.ndarray:
    """Float pixels on the 0..255 scale. Photo tools (GIMP, Photoshop, darktable, libvips' scRGB)
    take 1.0 as white, so an image within [0, 1] is scaled by 255 (a little rounding past 1 is
    allowed). Anything else already counts in 8-bit units, as Pillow's convert("L") and libvips'
    cast to 8 bits treat it, and is clipped to 0..255. Not stretched to its own min..max: that
    would turn a dark, nearly flat frame into full contrast."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or (finite.min() >= -1e-3 and finite.max() <= 1.0 + 1e-3):
        return values * 255.0
    return values


def _lab_to_srgb(im: Image.Image) -> Image.Image:
    """Lab (CIELAB TIFFs) to sRGB. Pillow >= 9.4 converts Lab through littleCMS (D50 Lab profile to
    sRGB), the way ICC-aware photo tools do; without littleCMS it cannot, and copying L, a, b into
    R, G, B would index a photo of the wrong colours, so the file is recorded as a failure."""
    if not HAS_LITTLECMS:
        raise DecodeError(
            "unsupported colour mode LAB (this Pillow has no littleCMS to convert it)"
        )
    return im.convert("RGB")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
