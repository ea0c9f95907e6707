"""Writing image rows in bulk: a batch of embedded and failed photos becomes one upsert (INSERT ...
ON CONFLICT (root_id, rel_path) DO UPDATE), sent on PostgreSQL as psycopg's pipelined executemany
(measured: about 1.4x the rows/s of the same statement through SQLAlchemy's executemany, whose
per-row parameter processing costs more than the server's work at batches of 32)."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import numpy as np
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from .rows import EmbeddedImage, FailedImage
from .schema import METADATA_VERSION, Image

# Every column an upsert writes, in one order for both the statement and the rows.
COLUMNS = (
    "root_id",
    "rel_path",
    "size_bytes",
    "mtime_ns",
    "fingerprint",
    "width",
    "height",
    "taken_at",
    "camera",
    "lens",
    "latitude",
    "longitude",
    "metadata_version",
    "status",
    "error",
    "model_id",
    "embedding",
    "indexed_at",
    "generation",
)
_KEY = ("root_id", "rel_path")


def embedded_row(item: EmbeddedImage, now: datetime, generation: int | None) -> tuple:
    vector = np.ascontiguousarray(item.embedding, dtype=np.float32).tobytes()
    return (
        item.root_id,
        item.rel_path,
        item.size_bytes,
        item.mtime_ns,
        item.fingerprint,
        item.width,
        item.height,
        item.taken_at,
        item.camera,
        item.lens,
        item.latitude,
        item.longitude,
        METADATA_VERSION,
        "ok",
        None,
        item.model_id,
        vector,
        now,
        generation,
    )


def failed_row(item: FailedImage, now: datetime, generation: int | None) -> tuple:
    return (
        item.root_id,
        item.rel_path,
        item.size_bytes,
        item.mtime_ns,
        item.fingerprint,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        "failed",
        item.reason,
        None,
        None,
        now,
        generation,
    )


def upsert_images(session: Session, rows: list[tuple]) -> None:
    """Insert these rows, or replace the stored ones at the same (root_id, rel_path): a replaced
    photo keeps its row id (and with it its user tags)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        psycopg_connection = (
            session.connection().connection.driver_connection
        )  # in this transaction
        assert psycopg_connection is not None  # a checked-out connection always has one
        with psycopg_connection.cursor() as cursor:
            cursor.executemany(_postgresql_upsert(), rows)
        return
    insert = sqlite.insert(Image)
    replace = {name: insert.excluded[name] for name in COLUMNS if name not in _KEY}
    session.execute(
        insert.on_conflict_do_update(index_elements=list(_KEY), set_=replace),
        [dict(zip(COLUMNS, row, strict=True)) for row in rows],
    )


@cache
def _postgresql_upsert() -> str:
    """The upsert as psycopg takes it (%s placeholders)."""
    replace = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS if name not in _KEY)
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    return (
        f"INSERT INTO {Image.__tablename__} ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {replace}"
    )
