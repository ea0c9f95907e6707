"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, started on 127.0.0.1
at a free port with a private socket folder, one per test session, a fresh database per test, and
stopped at the end of the session whatever happens (short of a kill -9 of pytest itself, which
leaves the server running until it is stopped by hand). Uses Debian's `postgresql` server binaries
(scripts/setup.sh --dev installs them); without them the PostgreSQL tests are skipped, saying why.
benchmarks/scale_speed.py starts one too."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PASSWORD_ROLE = "photographer"  # logs in with a password only (see start_server)
# Durability is not what the tests check: a server that skips fsync starts and writes faster.
_FAST = " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: `pg_config --bindir`, else Debian's layout."""
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


@dataclass
class PostgresServer:
    port: int
    folder: Path
    _as_postgres: list[str]
    bindir: Path

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self, owner: str = "postgres") -> str:
        """A fresh, empty database (copied from template1, about 0.2 s); returns its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def restart(self) -> None:
        """What a crash does: stop at once (-m immediate: no checkpoint, recovery at the start),
        then start again with the same options (pg_ctl keeps them in postmaster.opts)."""
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate"]
        # The restarted server's output goes to its log: a server holding this process's pipe
        # open would keep subprocess.run waiting for its end forever.
        log = ["-l", str(self.folder / "server.log")]
        subprocess.run(
            [*self._as_postgres, *pg_ctl, *log, "-w", "restart"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: its data is thrown away) and remove its folder."""
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate"]
        subprocess.run([*self._as_postgres, *pg_ctl, "stop"], capture_output=True, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server(bindir: Path, fast: bool = True) -> PostgresServer:
    """initdb into a temporary folder and start the server on a free port of 127.0.0.1, its socket
    in that folder: about 1.5 s. `fast` turns fsync off (the tests check behaviour, not
    durability); the benchmarks keep the server's own settings. As root, the server runs as the
    `postgres` user (PostgreSQL refuses to run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="siglip-search-pg-"))
    as_postgres: list[str] = []
    (folder / "socket").mkdir()
    if os.geteuid() == 0:
        for path in (folder, folder / "socket"):
            shutil.chown(path, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(_free_port(), folder, as_postgres, bindir)
    try:
        _initdb(server)
        options = f"-p {server.port} -k {folder / 'socket'} -c listen_addresses=127.0.0.1"
        start = [
            str(bindir / "pg_ctl"),
            "-D",
            str(folder / "data"),
            "-l",
            str(folder / "server.log"),
        ]
        subprocess.run(
            [*as_postgres, *start, "-w", "-o", options + (_FAST if fast else ""), "start"],
            capture_output=True,
            check=True,
        )
        server.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-password'")
    except BaseException:
        server.stop()
        raise
    return server


def _initdb(server: PostgresServer) -> None:
    """A cluster whose default collation orders text by language rules (ICU en-US), as most
    servers' en_US.UTF-8 does, so that the tests see what byte-order columns protect against;
    the C locale where this PostgreSQL has no ICU."""
    data = server.folder / "data"
    initdb = [
        str(server.bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
    ]
    icu = ["-E", "UTF8", "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US"]
    done = subprocess.run([*server._as_postgres, *initdb, *icu], capture_output=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run(
            [*server._as_postgres, *initdb, "-E", "UTF8", "--locale=C"],
            capture_output=True,
            check=True,
        )
    # One role must give its password, for the tests of a wrong one; every other role is trusted.
    hba = data / "pg_hba.conf"
    hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
