"""The two places a library's database can live, for the store and indexer tests: an SQLite file,
and a throwaway PostgreSQL server (postgres_server.py) started once per session, with a fresh
database per test. `-m "not postgresql"` runs the SQLite half only."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from postgres_server import PostgresServer, server_binaries, start_server

from indexer.library import DATABASE_ENV

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped at its end whatever happens."""
    bindir = server_binaries()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb); `bash scripts/setup.sh --dev` installs them"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed; `pip install -e .[dev]` installs it")
    server = start_server(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """None for an SQLite library (the file in the library folder), else the URL of a fresh
    PostgreSQL database; the command line (and every process the test starts) gets it from
    $SIGLIP_SEARCH_DATABASE_URL, as a user would set it."""
    if request.param == "sqlite":
        monkeypatch.delenv(DATABASE_ENV, raising=False)
        return None
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv(DATABASE_ENV, url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def session_database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """As database_url, for libraries built once a session (one database each, kept to the end)."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    yield server.url(server.create_database())


def environment_without_database() -> dict[str, str]:
    """os.environ for a child process that must open an SQLite library."""
    return {k: v for k, v in os.environ.items() if k != DATABASE_ENV}
