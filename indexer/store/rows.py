"""The typed rows the store hands out and takes in: plain dataclasses, so no caller sees SQLAlchemy."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class PassedOver:
    """The files a scan of a whole root left out, and why (what `status` shows per root)."""

    suffixes: dict[str, int] = field(default_factory=dict)  # ".mov" -> files; "" no extension
    hidden: int = 0  # hidden or system files and folders (.DS_Store, @eaDir, .thumbnails/, ...)
    excluded: int = 0  # files and folders matched by the root's exclude patterns

    def to_json(self) -> str:
        return json.dumps(
            {"suffixes": self.suffixes, "hidden": self.hidden, "excluded": self.excluded},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> PassedOver | None:
        if not text:
            return None
        found = json.loads(text)
        return cls(
            {str(k): int(v) for k, v in found.get("suffixes", {}).items()},
            int(found.get("hidden", 0)),
            int(found.get("excluded", 0)),
        )


@dataclass(frozen=True)
class RootRow:
    id: int
    path: str
    added_at: datetime
    exclude: tuple[str, ...] = ()  # `index --exclude` patterns, as stored (scan.normalized_pattern)
    passed_over: PassedOver | None = None  # None until a scan of the whole root finished


@dataclass(frozen=True)
class ImageRow:
    id: int
    root_id: int
    root_path: str
    rel_path: str
    size_bytes: int
    mtime_ns: int
    fingerprint: str | None
    width: int | None
    height: int | None
    taken_at: str | None
    camera: str | None
    status: str
    error: str | None
    model_id: str | None
    lens: str | None = None
    latitude: float | None = None  # GPS position, decimal degrees
    longitude: float | None = None

    @property
    def path(self) -> str:
        """Absolute path on this machine."""
        return os.path.join(self.root_path, *self.rel_path.split("/"))


@dataclass(frozen=True)
class FileState:
    """What the diff needs to know about a stored file."""

    id: int
    rel_path: str
    size_bytes: int
    mtime_ns: int
    fingerprint: str | None
    status: str
    error: str | None


@dataclass
class EmbeddedImage:
    root_id: int
    rel_path: str
    size_bytes: int
    mtime_ns: int
    fingerprint: str
    width: int
    height: int
    taken_at: str | None
    camera: str | None
    model_id: str
    embedding: np.ndarray  # (dim,) float32
    lens: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class PhotoFacts:
    """What a photo file says about itself, read again for a row indexed before (set_photo_facts)."""

    image_id: int
    taken_at: str | None
    camera: str | None
    lens: str | None
    latitude: float | None
    longitude: float | None


@dataclass
class FailedImage:
    root_id: int
    rel_path: str
    size_bytes: int
    mtime_ns: int
    reason: str
    fingerprint: str | None = None


@dataclass
class FileUpdate:
    """A stored image found at a new place (moved) or with a new stat (touched): vector kept."""

    image_id: int
    root_id: int
    rel_path: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class Counts:
    images: int  # indexed ok, with an embedding
    failed: int
    roots: int
    tags: int
    rejected_tags: int = 0  # (photo, tag) pairs the user rejected


@dataclass(frozen=True)
class TagRejectionRow:
    """A machine tag the user rejected for one photo (Store.reject_tags)."""

    image_id: int
    path: str  # the photo's absolute path
    tag: str  # as `tag` stores it: "animal|dog"
    source: str  # "sidecar": removed in a photo manager, found by `export`; "user": rejected in this app
    rejected_at: datetime  # UTC


@dataclass(frozen=True)
class TagRecord:
    """One stored tag of one image, with the image's absolute path."""

    image_id: int
    path: str
    tag: str
    score: float | None  # machine tags: SigLIP probability
    source: str
    model: str | None
    vocabulary_version: str | None


@dataclass(frozen=True)
class EmbeddingChunk:
    """Embeddings in (generation, id) order; `last` is the position after the chunk's last row."""

    ids: np.ndarray  # int64 (n,)
    vectors: np.ndarray  # float32 (n, dim)
    last: tuple[int, int]  # (generation, image id)


@dataclass(frozen=True)
class RunRow:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    roots: list[str]
    added: int
    updated: int
    moved: int
    removed: int
    failed: int
