"""The library database (this package holds the only SQLAlchemy importers): roots, images and their
embeddings, tags, runs.

Rooms: schema.py (the tables and their migrations), rows.py (the typed rows handed in and out),
store.py (the Store: one transaction per method), connect.py (open_store: the SQLite URL, pragmas
and typed errors).
"""

from .connect import open_store
from .rows import (
    Counts,
    EmbeddedImage,
    EmbeddingChunk,
    FailedImage,
    FileState,
    FileUpdate,
    ImageRow,
    RootRow,
    RunRow,
    TagRecord,
    TagRejectionRow,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, migrate
from .store import GENERATION_KEY, MACHINE_TAG_SOURCE, REJECTION_SOURCES, Store

__all__ = [
    "open_store",
    "Store",
    "migrate",
    "MIGRATIONS",
    "SCHEMA_VERSION",
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
    "RootRow",
    "RunRow",
    "TagRecord",
    "TagRejectionRow",
]
