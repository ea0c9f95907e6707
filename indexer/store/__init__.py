"""The library database (this package holds the only SQLAlchemy importers): roots, images and their
embeddings, tags, runs.

Rooms: schema.py (the tables and their migrations), rows.py (the typed rows handed in and out),
the Store (one transaction per method) in parts: store.py (images, embeddings, filters) on
roots.py (roots and runs), tags.py (machine tags and rejections) and base.py (session, meta);
connect.py (open_store: the SQLite URL, pragmas and typed errors).
"""

from .base import GENERATION_KEY
from .connect import open_store
from .rows import (
    Counts,
    EmbeddedImage,
    EmbeddingChunk,
    FailedImage,
    FileState,
    FileUpdate,
    ImageRow,
    PassedOver,
    PhotoFacts,
    RootRow,
    RunRow,
    TagRecord,
    TagRejectionRow,
)
from .schema import METADATA_VERSION, MIGRATIONS, SCHEMA_VERSION, migrate
from .store import Store
from .tags import MACHINE_TAG_SOURCE, REJECTION_SOURCES

__all__ = [
    "open_store",
    "Store",
    "migrate",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "METADATA_VERSION",
    "GENERATION_KEY",
    "MACHINE_TAG_SOURCE",
    "REJECTION_SOURCES",
    "Counts",
    "EmbeddedImage",
    "EmbeddingChunk",
    "FailedImage",
    "FileState",
    "FileUpdate",
    "ImageRow",
    "PassedOver",
    "PhotoFacts",
    "RootRow",
    "RunRow",
    "TagRecord",
    "TagRejectionRow",
]
