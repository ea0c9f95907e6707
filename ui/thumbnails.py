"""Thumbnails and previews of indexed photos, made into one cache folder: the only pictures the UI serves.

Serving generated JPEGs instead of the originals means the web server never needs read access to
the photo folders through its file routes, a result still shows while its disk is unplugged, and
formats browsers cannot show (TIFF, HEIC) look like any other photo.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

from indexer.decode import decode_image
from indexer.errors import DecodeError

THUMBNAIL_DIR_NAME = ".thumbnails"  # hidden: never indexed if a library sits inside a photo folder
THUMB_PX = 320  # gallery tiles
PREVIEW_PX = 1280  # the large picture of a selected result
JPEG_QUALITY = 85


def thumbnail_dir(library_path: str | os.PathLike) -> Path:
    """`<library>/.thumbnails`; for a library this process may not write (a read-only mount or share),
    a folder in the user's cache: `$XDG_CACHE_HOME/siglip-search/thumbnails/<key of the library path>`."""
    library = Path(library_path)
    inside = library / THUMBNAIL_DIR_NAME
    if inside.is_dir() and os.access(inside, os.W_OK | os.X_OK):
        return inside
    if not inside.exists() and (not library.exists() or os.access(library, os.W_OK | os.X_OK)):
        return inside
    key = hashlib.sha256(str(library.resolve()).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "siglip-search" / "thumbnails" / key


class Thumbnails:
    """Makes `<id>-<px>.jpg` files in `folder` from the photo files, once, and again when the photo
    changes (its mtime is newer). A photo that cannot be read (offline disk, deleted since,
    corrupt) shows its last thumbnail, else a grey placeholder."""

    def __init__(
        self, folder: str | os.PathLike, *, max_pixels: int | None = None, workers: int = 4
    ) -> None:
        # made with the first thumbnail (_save_atomic): a mistyped --library must not leave
        # folders behind
        self.folder = Path(folder).resolve()
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnail")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def path_for(self, image_id: int, px: int = THUMB_PX) -> Path:
        return self.folder / f"{int(image_id)}-{int(px)}.jpg"

    def get(self, image_id: int, source: str | os.PathLike, px: int = THUMB_PX) -> str:
        """The thumbnail file of one photo, made now if missing or older than the photo."""
        target = self.path_for(image_id, px)
        try:
            source_mtime_ns = os.stat(source).st_mtime_ns
        except OSError:
            source_mtime_ns = None  # offline or gone: whatever we made before is all we have
        try:
            made_ns = os.stat(target).st_mtime_ns
        except FileNotFoundError:
            made_ns = None
        if made_ns is not None and (source_mtime_ns is None or made_ns >= source_mtime_ns):
            return str(target)
        if source_mtime_ns is None:
            return self.placeholder(px)
        try:
            self._make(source, target, px)
        except DecodeError:
            return self.placeholder(px)
        return str(target)

    def get_many(self, items: Sequence[tuple[int, str]], px: int = THUMB_PX) -> list[str]:
        """Thumbnails of (image id, source path) pairs, in order; missing ones made in parallel."""
        found = [self._fresh(image_id, source, px) for image_id, source in items]
        missing = [i for i, path in enumerate(found) if path is None]
        if len(missing) > 1:
            made = self._pool.map(lambda i: self.get(items[i][0], items[i][1], px), missing)
        else:
            made = (self.get(items[i][0], items[i][1], px) for i in missing)
        made_at = dict(zip(missing, made, strict=True))
        return [made_at[i] if path is None else path for i, path in enumerate(found)]

    def _fresh(self, image_id: int, source: str | os.PathLike, px: int) -> str | None:
        """The thumbnail if it exists and is not older than the photo (cheap: two stat calls)."""
        target = self.path_for(image_id, px)
        try:
            made_ns = os.stat(target).st_mtime_ns
        except FileNotFoundError:
            return None
        try:
            return str(target) if made_ns >= os.stat(source).st_mtime_ns else None
        except OSError:
            return str(target)  # the photo is offline: its last thumbnail

    def placeholder(self, px: int = THUMB_PX) -> str:
        target = self.folder / f"unavailable-{int(px)}.png"
        if not target.is_file():
            im = Image.new("RGB", (px, px * 3 // 4), (228, 228, 231))
            draw = ImageDraw.Draw(im)
            draw.text(
                (px // 2, px * 3 // 8), "photo unavailable", fill=(113, 113, 122), anchor="mm"
            )
            _save_atomic(im, target, "PNG")
        return str(target)

    def _make(self, source: str | os.PathLike, target: Path, px: int) -> None:
        decoded = decode_image(source, target_size=(px, px), max_pixels=self.max_pixels)
        im = decoded.image
        im.thumbnail((px, px), Image.Resampling.LANCZOS)  # keeps the aspect ratio; never enlarges
        _save_atomic(im, target, "JPEG", quality=JPEG_QUALITY, optimize=True)


def _save_atomic(im: Image.Image, target: Path, fmt: str, **options) -> None:
    """Write beside the target and rename: a reader never sees half a file, two writers never clash."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        im.save(temp, fmt, **options)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
