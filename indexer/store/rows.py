"""The typed rows the store hands out and takes in: plain dataclasses, so no caller sees SQLAlchemy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class RootRow:
    id: int
    path: str
    added_at: datetime


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
