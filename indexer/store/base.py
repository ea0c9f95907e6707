"""The Store's foundation: the session factory every Store method opens its one transaction with,
the meta table (settings, the library's id), the vectors' generation (generation.py), a server's
advisory locks (locks.py), and helpers the Store's parts share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from .generation import current_generation
from .locks import any_job_running, hold_advisory_locks
from .schema import LIBRARY_ID_KEY, Meta, database_name, is_read_only

# A run that wrote at least this many rows refreshes the planner's statistics when it ends: on
# PostgreSQL, a duplicate search over 10k new rows took 2.95 s before ANALYZE and 36 ms after.
ANALYZE_MIN_ROWS = 1_000
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


def insert(session: Session, entity: type) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the session's dialect."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(entity)


def set_meta_values(session: Session, values: dict[str, str]) -> None:
    for key, value in values.items():
        upsert = insert(session, Meta).values(key=key, value=value)
        session.execute(
            upsert.on_conflict_do_update(index_elements=[Meta.key], set_={"value": value})
        )


class StoreBase:
    """The session factory and the meta table; the Store's parts (roots.py, tags.py, store.py)
    derive from it, so each of their public methods is one transaction of the same database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.read_only = is_read_only(engine)  # opened with mode=ro: every write would fail
        self._session = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def on_server(self) -> bool:
        """A database on a server (PostgreSQL), shared by machines, rather than an SQLite file."""
        return self.engine.dialect.name != "sqlite"

    @property
    def name(self) -> str:
        """The SQLite file's path, or the server database's URL without its password."""
        return database_name(self.engine)

    def hold_locks(
        self, exclusive: Iterable[int], shared: Iterable[int], wait_s: float, holder: str
    ) -> AbstractContextManager[None]:
        """Advisory locks on a server library (locks.py); raises LockHeld."""
        return hold_advisory_locks(self.engine, exclusive, shared, wait_s, holder)

    def job_running(self) -> bool:
        """Whether a job holds a lock on this server library now."""
        return any_job_running(self.engine)

    # --- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._session() as session:
            return session.scalar(sa.select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self._session.begin() as session:
            set_meta_values(session, {key: value})

    def set_meta_once(self, key: str, value: str) -> str:
        """Store `value` unless the key holds one already; return what it holds. Two writers that
        record a first value at once (two indexers starting a new library) agree on one."""
        with self._session.begin() as session:
            session.execute(
                insert(session, Meta).values(key=key, value=value).on_conflict_do_nothing()
            )
            return session.scalar(sa.select(Meta.value).where(Meta.key == key)) or value

    def library_id(self) -> str | None:
        """The id made with the database: files kept beside it on a machine (FAISS) name it."""
        return self.get_meta(LIBRARY_ID_KEY)

    def vectors_generation(self) -> int:
        """Grows with every committed transaction that changes the set of stored embeddings."""
        with self._session() as session:
            return current_generation(session)

    def analyze(self) -> None:
        """Refresh the query planner's statistics (after a run that wrote many rows)."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("ANALYZE images, tags"))
            else:
                conn.execute(sa.text("PRAGMA optimize"))
