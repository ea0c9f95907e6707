"""The library database (this package holds the only SQLAlchemy importers): roots, images and their
embeddings, tags, runs; in an SQLite file or on a PostgreSQL server.

Rooms: schema.py (the tables and their migrations), rows.py (the typed rows handed in and out),
the Store (one transaction per method) in parts: store.py (images, embeddings, filters) on
queries.py (searches' filters), roots.py (roots and runs), tags.py (machine tags and rejections)
and base.py (session, meta); connect.py (open_store: an SQLite file or a server URL, pragmas and
typed errors), generation.py (vector generations in commit order), bulk.py (batched upserts of
image rows), locks.py (advisory locks of a library on a server).
"""

from .base import ANALYZE_MIN_ROWS
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
from .schema import METADATA_VERSION, MIGRATIONS, SCHEMA_VERSION, migrate, shown_url
from .store import Store
from .tags import MACHINE_TAG_SOURCE, REJECTION_SOURCES

__all__ = [
    "open_store",
    "Store",
    "migrate",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "METADATA_VERSION",
    "ANALYZE_MIN_ROWS",
    "shown_url",
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
