"""Opening a library database: an SQLite file (read-write, or read-only for a library this process
may not write, with its pragmas) or a PostgreSQL server by URL; the drivers' errors turned into
typed ones."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import quote

import sqlalchemy as sa

from ..errors import (
    DatabaseUnreachableError,
    DatabaseUnsupportedError,
    LibraryReadOnlyError,
    LibraryUnreadableError,
)
from .schema import is_read_only, migrate, shown_url
from .store import Store

CONNECT_TIMEOUT_S = 10  # a server that does not answer is reported, not waited for


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


def _postgresql_error_listener(shown: str) -> Callable:
    """A server that cannot be reached or drops the connection, and a role that may not write,
    become one-line errors naming the database (never its password)."""

    def on_error(context: sa.engine.ExceptionContext) -> None:
        error = context.original_exception
        if (
            context.connection is None or context.is_disconnect
        ):  # connecting failed, or the link broke
            verb = "cannot reach" if context.connection is None else "lost the connection to"
            raise DatabaseUnreachableError(
                f"{verb} the library database {shown}: {_reason(error)}"
            ) from None
        if getattr(error, "sqlstate", None) == "42501":  # insufficient_privilege
            raise LibraryReadOnlyError(
                shown, _reason(error), "this command writes to the library"
            ) from None

    return on_error


def _reason(error: BaseException) -> str:
    """The server's or the driver's own words, on one line, without libpq's preamble."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(
        r'^(connection failed: )?connection to server at "[^"]*"( \([^)]*\))?, port \d+ failed: ',
        "",
        text,
    )
    return re.sub(r"^(FATAL|ERROR):\s+", "", text).rstrip(".")


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


def server_url(text: str) -> sa.URL:
    """A --database URL, checked: PostgreSQL through psycopg 3 (`postgresql://` and `postgres://`
    mean it too). DatabaseUnsupportedError for anything else, or when psycopg is missing."""
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise DatabaseUnsupportedError(
            f"{text!r} is not a database URL; write it as postgresql://USER@HOST[:PORT]/DATABASE"
        ) from None
    if url.get_backend_name() in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        return url
    if url.drivername != "postgresql+psycopg":
        raise DatabaseUnsupportedError(
            f"{shown_url(url)}: libraries live in an SQLite file or on a PostgreSQL server "
            "(postgresql://USER@HOST/DATABASE, through psycopg 3)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseUnsupportedError(
            "a library on PostgreSQL needs the psycopg driver: pip install 'siglip-search[postgres]'"
        ) from None
    return url


def _server_engine(url: sa.URL) -> sa.Engine:
    connect_args: dict[str, object] = {"application_name": "siglip-search"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    # No pool_pre_ping (a round trip before every query): after the database restarts, the one
    # query that meets a dropped connection fails in one line, and the pool connects anew.
    engine = sa.create_engine(url, connect_args=connect_args)
    sa.event.listen(engine, "handle_error", _postgresql_error_listener(shown_url(url)))
    return engine


def open_store(path_or_url: str | os.PathLike, *, create: bool = True) -> Store:
    """Open (creating or migrating) the database at a file path or a database URL.

    A file or folder this process may not write is opened read-only: reads work and writes raise
    LibraryReadOnlyError. A corrupt or non-SQLite file raises LibraryUnreadableError and is left
    untouched. A server that cannot be reached raises DatabaseUnreachableError. With `create`
    false, a database without a library raises LibraryNotFoundError instead of getting one."""
    text = os.fspath(path_or_url)
    if "://" in text:
        url = server_url(text)
        engine = (
            sa.create_engine(url) if url.get_backend_name() == "sqlite" else _server_engine(url)
        )
        database = engine.url.database or text
    else:
        database = os.path.abspath(text)
        engine = sa.create_engine(_sqlite_url(database))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect_listener(wal=not is_read_only(engine)))
        sa.event.listen(engine, "handle_error", _sqlite_error_listener(database))
    try:
        migrate(engine, create=create)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
