"""The vectors generation: a number, taken in commit order, for every transaction that changes the
stored embeddings. Readers compare it to know whether a FAISS file is current, and the rows carry
it so that incremental readers (tagging, the approximate index) can resume where they stopped."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .schema import GENERATION_LOCK, LOCK_NAMESPACE, Generation


def next_generation(session: Session) -> int:
    """Take the next generation for this transaction; call it before the transaction writes
    anything else. The number must become visible in the order it was handed out: a reader that
    sees g must already see every g' < g, or it would take a FAISS file built without g' for
    current. So the number is taken under a lock held until the commit: SQLite's write lock (this
    insert takes it), and on PostgreSQL a transaction-level advisory lock, which makes the writes
    of concurrent writers take turns for their short transactions (their embedding, the slow part,
    still runs side by side)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    insert = sa.insert(Generation).values(committed_at=now)
    if session.get_bind().dialect.name == "postgresql":
        # One round trip: the row to insert comes out of a subquery that takes the lock, so the
        # number (the column's sequence) is drawn after the lock is held.
        turn = sa.select(sa.func.pg_advisory_xact_lock(LOCK_NAMESPACE, GENERATION_LOCK)).subquery()
        insert = sa.insert(Generation).from_select(
            ["committed_at"], sa.select(sa.literal(now)).select_from(turn)
        )
    return int(session.execute(insert.returning(Generation.generation)).scalar_one())


def current_generation(session: Session) -> int:
    """The largest committed generation (0 for a library that never held a vector): one index probe."""
    return int(session.scalar(sa.select(sa.func.max(Generation.generation))) or 0)


def prune_generations(session: Session) -> None:
    """Only the largest generation is ever read: drop the others (the log would grow by one row a
    batch). Numbers are never reused, even on SQLite (AUTOINCREMENT)."""
    newest = sa.select(sa.func.max(Generation.generation)).scalar_subquery()
    session.execute(sa.delete(Generation).where(Generation.generation < newest))
