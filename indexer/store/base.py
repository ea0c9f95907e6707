"""The Store's foundation: the session factory every Store method opens its one transaction with,
the meta table (settings and the vectors' generation counter), and helpers the Store's parts share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .schema import Meta, is_read_only

GENERATION_KEY = "vectors_generation"
# SQLite allows 999 bound parameters in old builds: IN lists are cut into chunks of this many.
CHUNK = 500
T = TypeVar("T")


def now_utc() -> datetime:
    """Naive UTC, as every DateTime column holds it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stored_vector(blob: bytes | None) -> np.ndarray:
    """A stored embedding (dim,) float32, read-only; callers select only rows that have one."""
    assert blob is not None
    return np.frombuffer(blob, dtype=np.float32)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique_ids(image_ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in image_ids})


class StoreBase:
    """The session factory and the meta table; the Store's parts (roots.py, tags.py, store.py)
    derive from it, so each of their public methods is one transaction of the same database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.read_only = is_read_only(engine)  # opened with mode=ro: every write would fail
        self._session = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # --- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._session() as session:
            return session.scalar(sa.select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self._session.begin() as session:
            session.merge(Meta(key=key, value=value))

    def vectors_generation(self) -> int:
        """Bumped in every transaction that changes the set of stored embeddings."""
        return int(self.get_meta(GENERATION_KEY) or 0)

    def _bump_generation(self, session: Session) -> None:
        row = session.get(Meta, GENERATION_KEY)
        if row is None:
            session.add(Meta(key=GENERATION_KEY, value="1"))
        else:
            row.value = str(int(row.value) + 1)
