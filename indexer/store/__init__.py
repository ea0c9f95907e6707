"""The library database (this package holds the only SQLAlchemy importers): roots, images and their
embeddings, tags, runs; in an SQLite file or on a PostgreSQL server.

Rooms: schema.py (the tables and their migrations), rows.py (the typed rows handed in and out),
store.py (the Store: one transaction per method), connect.py (open_store: an SQLite file or a
server URL, pragmas and typed errors), generation.py (vector generations in commit order),
bulk.py (batched upserts of image rows), locks.py (advisory locks of a library on a server).
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
)
from .schema import MIGRATIONS, SCHEMA_VERSION, migrate, shown_url
from .store import ANALYZE_MIN_ROWS, MACHINE_TAG_SOURCE, Store

__all__ = [
    "open_store",
    "Store",
    "migrate",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ANALYZE_MIN_ROWS",
    "shown_url",
    "MACHINE_TAG_SOURCE",
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
]
