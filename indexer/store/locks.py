"""PostgreSQL advisory locks for the jobs that write a library on a server: library-wide, or per
folder. They are held by one connection of their own for as long as a job runs; the server drops
them when that connection ends, so a killed job, or a machine that dies, leaves no lock behind
(a vanished machine's, once TCP keepalives give up on it)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .schema import LIBRARY_LOCK, LOCK_NAMESPACE

__all__ = ["LIBRARY_LOCK", "LockHeld", "folder_key", "hold_advisory_locks", "any_job_running"]

FIRST_FOLDER_KEY = 16  # keys below are the library's own (schema.py)


def folder_key(path: str) -> int:
    """A folder's lock key: 31 bits of the sha256 of its absolute path. Two folders whose keys
    collide only wait for each other; two jobs never share one folder."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
    return FIRST_FOLDER_KEY + int.from_bytes(digest[:4], "big") % ((1 << 31) - FIRST_FOLDER_KEY)


@contextmanager
def hold_advisory_locks(
    engine: sa.Engine, exclusive: Iterable[int], shared: Iterable[int], wait_s: float, holder: str
) -> Iterator[None]:
    """Hold these locks until the block ends. All or none: a lock another session holds makes
    this one let go of what it took, wait a little and try again until `wait_s` has passed; then
    LockHeld names who holds it (the `holder` text it gave, e.g. "siglip-search index on HOST
    pid N"). Never waiting while holding a lock, two jobs cannot deadlock."""
    exclusive, shared = sorted(set(exclusive)), sorted(set(shared) - set(exclusive))
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.execute(sa.select(sa.func.set_config("application_name", holder[:63], False)))
        _keepalive(conn)
        deadline = time.monotonic() + max(wait_s, 0.0)
        while not _try_all(conn, exclusive, shared):
            if time.monotonic() >= deadline:
                raise LockHeld(_holders(conn, exclusive + shared))
            time.sleep(0.2)
        yield
    finally:
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock_all()))
        finally:
            conn.invalidate()  # never back to the pool: a pooled connection would keep any lock left
            conn.close()


class LockHeld(Exception):
    """Another session holds a lock this job needs; `holders` is what those sessions call themselves."""

    def __init__(self, holders: list[str]) -> None:
        super().__init__(", ".join(holders) or "another process")
        self.holders = holders


def any_job_running(engine: sa.Engine) -> bool:
    """Whether another session holds a library or folder lock now (asks, takes nothing)."""
    with engine.connect() as conn:
        return bool(conn.execute(_held_query(), {"low": LIBRARY_LOCK}).scalar())


def _try_all(conn: sa.Connection, exclusive: list[int], shared: list[int]) -> bool:
    taken: list[tuple[int, bool]] = []
    for key, is_shared in [(k, False) for k in exclusive] + [(k, True) for k in shared]:
        try_lock = (
            sa.func.pg_try_advisory_lock_shared if is_shared else sa.func.pg_try_advisory_lock
        )
        if not conn.execute(sa.select(try_lock(LOCK_NAMESPACE, key))).scalar():
            for done, done_shared in taken:
                unlock = (
                    sa.func.pg_advisory_unlock_shared if done_shared else sa.func.pg_advisory_unlock
                )
                conn.execute(sa.select(unlock(LOCK_NAMESPACE, done)))
            return False
        taken.append((key, is_shared))
    return True


def _holders(conn: sa.Connection, keys: list[int]) -> list[str]:
    query = sa.text(
        "SELECT DISTINCT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = :namespace AND l.objid::bigint = ANY(:keys)"
    )
    rows = conn.execute(query, {"namespace": LOCK_NAMESPACE, "keys": keys}).scalars()
    return sorted(name for name in rows if name)


def _held_query() -> sa.TextClause:
    return sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.pid <> pg_backend_pid() AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND l.classid::bigint = {LOCK_NAMESPACE} AND l.objid::bigint >= :low)"
    )


def _keepalive(conn: sa.Connection) -> None:
    """The server's TCP keepalives on this session: a machine that vanishes while it holds locks
    (power cut, cable pulled) is noticed after about 30 + 3 x 10 s, and its locks dropped."""
    for name, value in (
        ("tcp_keepalives_idle", 30),
        ("tcp_keepalives_interval", 10),
        ("tcp_keepalives_count", 3),
    ):
        conn.execute(sa.select(sa.func.set_config(name, str(value), False)))
