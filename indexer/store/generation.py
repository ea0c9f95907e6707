"""The vectors generation: a number, taken in commit order, for every transaction that changes the
stored embeddings. Readers compare it to know whether a FAISS file is current, and the rows carry
it so that incremental readers (tagging, the approximate index) can resume where they stopped."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .schema import GENERATION_LOCK, LOCK_NAMESPACE, Generation

# After the server restarts, the next number skips this far ahead (see _next_on_server).
RESTART_JUMP = 1 << 32


def next_generation(session: Session, *, durable: bool = True) -> int:
    """Take the next generation for this transaction; call it before the transaction writes
    anything else. The number must become visible in the order it was handed out: a reader that
    sees g must already see every g' < g, or it would take a FAISS file built without g' for
    current. So the number is taken under a lock held until the commit: SQLite's write lock (this
    insert takes it), and on PostgreSQL a transaction-level advisory lock, which makes the writes
    of concurrent writers take turns for their short transactions (their embedding, the slow part,
    still runs side by side).

    `durable=False` (an indexer's batches, which a rerun rebuilds from the photos) lets
    PostgreSQL commit without waiting for its WAL to reach the disk: a server crash may then lose
    the last moments of commits, as SQLite's WAL mode with synchronous=NORMAL may on a power cut;
    it never corrupts anything, and a kill of the indexer loses nothing committed."""
    if session.get_bind().dialect.name == "postgresql":
        return _next_on_server(session, durable)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return int(
        session.execute(
            sa.insert(Generation).values(committed_at=now).returning(Generation.generation)
        ).scalar_one()
    )


def _next_on_server(session: Session, durable: bool) -> int:
    """The lock, then the number. Commits that a crashed server lost (asynchronous ones) may
    have been seen by readers, and their sequence numbers could be drawn again after the
    restart, for other rows: so the first number drawn after a restart skips RESTART_JUMP past
    the newest one kept, beyond anything a few lost moments could have drawn, and a reader's
    FAISS file of a lost generation never matches a later one. Every connection made after a
    restart is a new one, so each checks once, on its first number."""
    lock = sa.func.pg_advisory_xact_lock(LOCK_NAMESPACE, GENERATION_LOCK)
    if durable:
        session.execute(sa.select(lock))
    else:
        session.execute(sa.select(lock, sa.func.set_config("synchronous_commit", "off", True)))
    connection = session.connection().info  # lives as long as the server connection does
    if not connection.get("generations_after_restart_checked"):
        _skip_after_restart(session)
        connection["generations_after_restart_checked"] = True
    now = sa.func.timezone("UTC", sa.func.now())  # the server's clock, as pg_postmaster_start_time
    insert = sa.insert(Generation).values(committed_at=now).returning(Generation.generation)
    return int(session.execute(insert).scalar_one())


def _skip_after_restart(session: Session) -> None:
    """If the newest generation was committed before the server (re)started, move the sequence
    RESTART_JUMP past it (never back: another connection may have moved it already)."""
    started = sa.func.timezone("UTC", sa.func.pg_postmaster_start_time())
    newest = session.execute(
        sa.select(Generation.generation, Generation.committed_at < started)
        .order_by(Generation.generation.desc())
        .limit(1)
    ).first()
    if newest is not None and newest[1]:
        sequence = sa.func.pg_get_serial_sequence(Generation.__tablename__, "generation")
        drawn = sa.text(f"(SELECT last_value FROM {Generation.__tablename__}_generation_seq)")
        target = sa.func.greatest(newest[0] + RESTART_JUMP, drawn)
        session.execute(sa.select(sa.func.setval(sequence, target)))


def current_generation(session: Session) -> int:
    """The largest committed generation (0 for a library that never held a vector): one index probe."""
    return int(session.scalar(sa.select(sa.func.max(Generation.generation))) or 0)


def prune_generations(session: Session) -> None:
    """Only the largest generation is ever read: drop the others (the log would grow by one row a
    batch). Numbers are never reused, even on SQLite (AUTOINCREMENT)."""
    newest = sa.select(sa.func.max(Generation.generation)).scalar_subquery()
    session.execute(sa.delete(Generation).where(Generation.generation < newest))
