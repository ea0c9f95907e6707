"""One photo made ready for the model in a decode worker (a thread or a process): fingerprint,
decode (reduced when much larger than the model's input), preprocess. A bad file becomes a reason
on its Prepared, never an exception."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siglip_search.errors import InputError
from siglip_search.image_processor import SiglipImageProcessor

from .decode import decode_image
from .errors import DecodeError, NotRegularFileError
from .exif import PhotoMetadata
from .scan import ScannedFile, fingerprint_file
from .store import FileState


@dataclass
class Work:
    """A file to embed: new, or changed since its stored row `old`."""

    root_id: int
    file: ScannedFile
    old: FileState | None = None  # the stored row at the same path, for changed files
    fingerprint: str | None = None  # set already when the file was a move candidate


@dataclass
class Prepared:
    """What a decode worker made of one Work: pixels to embed, or the reason it failed, or the
    stored row whose content it still has."""

    work: Work
    fingerprint: str | None = None
    pixels: np.ndarray | None = None  # (3, H, W) float32
    # full-resolution width, height (upright) and what the file says about itself
    decoded: tuple[int, int, PhotoMetadata] | None = None
    error: str | None = None
    # The stored row whose content this file still has: only the stat changed (touched, copied
    # back), so the row keeps its vector.
    same_row: FileState | None = None
    vector: np.ndarray | None = None  # (dim,): embedded already, by a remote executor (Ray)
    node: str | None = None  # where that executor embedded it (a Ray node's address)

    def row_parts(self) -> tuple[str, tuple[int, int, PhotoMetadata]]:
        """(fingerprint, decoded) of a file that decoded: what its row keeps."""
        if self.fingerprint is None or self.decoded is None:
            raise AssertionError(f"{self.work.file.rel_path} was not decoded")
        return self.fingerprint, self.decoded


class Preparer:
    """Work -> Prepared. Holds the image processor and two numbers, never the model, so it pickles
    in a few hundred bytes for a process pool."""

    def __init__(
        self,
        image_processor: SiglipImageProcessor,
        image_size: tuple[int, int],
        max_pixels: int | None,
    ) -> None:
        self.image_processor = image_processor
        self.image_size = image_size
        self.max_pixels = max_pixels

    def __call__(self, work: Work) -> Prepared:
        result = Prepared(work)
        try:
            result.fingerprint = work.fingerprint or fingerprint_file(work.file.path)
        except PermissionError:
            result.error = "permission denied"
            return result
        except NotRegularFileError as exc:  # replaced by a FIFO or a folder since the scan
            result.error = exc.reason
            return result
        except OSError as exc:
            result.error = f"cannot read file ({exc.strerror or exc})"
            return result
        old = work.old
        if old is not None and old.status == "ok" and old.fingerprint == result.fingerprint:
            result.same_row = old
            return result
        try:
            decoded = decode_image(
                work.file.path, target_size=self.image_size, max_pixels=self.max_pixels
            )
            result.pixels = self.image_processor.preprocess_one(decoded.image)
        except DecodeError as exc:
            result.error = exc.reason
            return result
        except InputError as exc:
            result.error = f"cannot preprocess ({exc})"
            return result
        result.decoded = (decoded.width, decoded.height, decoded.metadata())
        return result
