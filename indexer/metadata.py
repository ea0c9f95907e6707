"""Photos indexed before the lens and GPS position were stored: at the next `index` run their date,
camera, lens and position are read again, once, from the file's metadata alone (no pixels decoded,
nothing embedded: a JPEG costs its header), so the camera, lens and GPS filters see the whole
library without re-indexing it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from concurrent.futures import Executor

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .decode import PILLOW_ERRORS, open_regular_file
from .errors import DecodeError
from .exif import EXIF_ERRORS, PhotoMetadata, read_metadata
from .raw import is_raw_name, read_raw_metadata
from .store import ImageRow, PhotoFacts, Store

BATCH = 500  # facts written per transaction, so an interrupted run keeps what it read


def read_file_metadata(path: str | os.PathLike) -> PhotoMetadata:
    """Date, camera, lens and GPS position of a photo file, its pixels left alone. Raises
    DecodeError for a file that cannot be opened as a photo now, OSError when it cannot be read."""
    with open_regular_file(path) as f:
        if is_raw_name(os.fsdecode(path)):
            return read_raw_metadata(f)
        try:
            with Image.open(f) as im:  # reads the header only
                try:
                    exif = im.getexif()
                except PILLOW_ERRORS + EXIF_ERRORS:
                    exif = None  # unreadable EXIF is lost metadata, not a lost photo
                return read_metadata(exif)
        except (UnidentifiedImageError, *PILLOW_ERRORS) as exc:
            raise DecodeError(f"cannot read its metadata ({type(exc).__name__})") from None


def refresh_photo_facts(
    store: Store, root_ids: Iterable[int], pool: Executor, progress: bool = False
) -> int:
    """Read again the facts of the photos of these roots indexed by an older version
    (Store.images_missing_facts). A file that cannot be read now keeps its row as it is and is
    tried again at the next run. Returns how many photos got their facts."""
    rows = store.images_missing_facts(root_ids)
    if not rows:
        return 0
    done = 0
    desc = "reading lens and GPS of photos indexed before"
    with tqdm(
        total=len(rows), unit="photo", desc=desc, file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            facts = [f for f in pool.map(_facts, batch) if f is not None]
            store.set_photo_facts(facts)
            done += len(facts)
            bar.update(len(batch))
    return done


def _facts(row: ImageRow) -> PhotoFacts | None:
    try:
        found = read_file_metadata(row.path)
    except (DecodeError, OSError):
        return None
    return PhotoFacts(
        row.id, found.taken_at, found.camera, found.lens, found.latitude, found.longitude
    )
