"""Opening a library database: the SQLite URL (read-write, or read-only for a library this process
may not write), the connection pragmas, and SQLite's errors turned into typed ones."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import quote

import sqlalchemy as sa

from ..errors import LibraryReadOnlyError, LibraryUnreadableError
from .schema import is_read_only, migrate
from .store import Store


def _sqlite_connect_listener(wal: bool) -> Callable:
    def on_connect(dbapi_conn, _record) -> None:
        # WAL lets searches read while an indexer writes; busy_timeout makes a second writer wait.
        # Switching to WAL writes the file, so a read-only open leaves the journal mode as it is.
        cursor = dbapi_conn.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across kill -9 in WAL mode
        cursor.close()

    return on_connect


def _sqlite_error_listener(database: str) -> Callable:
    """Turn SQLite's 'not a database' and 'read-only' errors, wherever they happen, into typed
    errors naming the file; other database errors propagate as they are."""

    def on_error(context: sa.engine.ExceptionContext) -> None:
        error = context.original_exception
        name, text = getattr(error, "sqlite_errorname", "") or "", str(error)
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or text in _UNREADABLE_MESSAGES:
            raise LibraryUnreadableError(database, text) from None
        if name.startswith("SQLITE_READONLY") or "readonly database" in text:
            raise LibraryReadOnlyError(os.path.dirname(database), f"SQLite says: {text}") from None

    return on_error


# Python < 3.11 has no sqlite_errorname: SQLite's messages for SQLITE_NOTADB and SQLITE_CORRUPT.
_UNREADABLE_MESSAGES = ("file is not a database", "database disk image is malformed")


def _sqlite_url(path: str) -> sa.URL:
    """The URL for the database file at absolute `path`: read-write, or read-only when this
    process may not write the file or its folder (a read-only library still searches)."""
    folder = os.path.dirname(path)
    if not os.path.exists(path):
        if os.path.isdir(folder) and not os.access(folder, os.W_OK):
            raise LibraryReadOnlyError(folder, f"cannot create {os.path.basename(path)} in it")
        return sa.URL.create("sqlite", database=path)
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return sa.URL.create("sqlite", database=path)
    query = {"mode": "ro", "uri": "true"}
    wal = path + "-wal"
    if not os.access(folder, os.W_OK) and (not os.path.exists(wal) or os.path.getsize(wal) == 0):
        # A WAL database needs its -shm file, which SQLite cannot create here. With no WAL content
        # left over (a cleanly closed library) the file alone is the whole database, and a library
        # nobody here may write is taken as an archive: immutable=1 reads it without the -shm.
        query["immutable"] = "1"
    return sa.URL.create("sqlite", database="file:" + quote(path), query=query)


def open_store(path_or_url: str | os.PathLike) -> Store:
    """Open (creating or migrating) the database at a file path or an SQLAlchemy URL.

    A file or folder this process may not write is opened read-only: reads work and writes raise
    LibraryReadOnlyError. A corrupt or non-SQLite file raises LibraryUnreadableError and is left
    untouched."""
    text = os.fspath(path_or_url)
    if "://" in text:
        engine = sa.create_engine(text)
        database = engine.url.database or text
    else:
        database = os.path.abspath(text)
        engine = sa.create_engine(_sqlite_url(database))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect_listener(wal=not is_read_only(engine)))
        sa.event.listen(engine, "handle_error", _sqlite_error_listener(database))
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
