"""kill -9 in the middle of indexing, run again: the library equals that of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from indexer_fixtures import db_rows, draw_photo

from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.search import Searcher
from indexer.status import library_status

REPO = Path(__file__).resolve().parents[1]
# The real CLI in a real process; each batch made slower so the kill lands mid-run.
SLOW_CLI = """
import sys, time
from siglip_search.embedder import Embedder
real = Embedder.embed_pixels
Embedder.embed_pixels = lambda self, pixels: (time.sleep(0.25), real(self, pixels))[1]
from siglip_search.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _query(library_dir: Path, database: str | None, sql: str) -> list[tuple]:
    """Rows of `sql` read with plain SQL (sqlite3, or SQLAlchemy on the server), [] before the
    library's tables exist."""
    if database is not None:
        engine = sa.create_engine(database)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql))]
        except sa.exc.ProgrammingError:
            return []  # not created yet
        finally:
            engine.dispose()
    try:
        with sqlite3.connect(
            f"file:{library_dir / 'library.db'}?mode=ro", uri=True, timeout=5
        ) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet


def _ok_rows(library_dir: Path, database: str | None) -> int:
    found = _query(library_dir, database, "SELECT count(*) FROM images WHERE status = 'ok'")
    return found[0][0] if found else 0


def test_kill_9_then_rerun_equals_an_uninterrupted_run(
    tmp_path, tiny_checkpoint, embedder, database_url
):
    photos = tmp_path / "photos"
    for i in range(60):
        (photos / f"day{i % 3}").mkdir(parents=True, exist_ok=True)
        draw_photo(i, (96, 72)).save(photos / f"day{i % 3}" / f"img_{i:03d}.png")
    killed_lib, clean_lib = tmp_path / "killed", tmp_path / "clean"
    args = [
        "index",
        str(photos),
        "--library",
        str(killed_lib),
        "--model",
        str(tiny_checkpoint),
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--no-progress",
        # fp32, as the uninterrupted run below: the test compares embedding bytes
        "--mode",
        "fp32",
    ]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _ok_rows(killed_lib, database_url) < 4:  # the first batch is committed
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "indexer made no progress"
            time.sleep(0.02)
        # Readers keep working while the indexer writes (WAL), before the kill.
        reader = open_library(killed_lib, create=False, database=database_url)
        assert library_status(reader).images >= 4
        assert library_status(reader).last_run.status == "running"
        first = next(reader.store.iter_embeddings())[1][0]
        assert Searcher(reader, embedder).search_vector(first, k=3).hits[0].cosine > 0.99
        reader.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done_before_rerun = _ok_rows(killed_lib, database_url)
    assert 4 <= done_before_rerun < 60
    # nobody holds the lock: not running any more
    with open_library(killed_lib, create=False, database=database_url) as stopped:
        assert library_status(stopped).last_run.status == "interrupted"

    # The dead process's lock is gone with it (on a server: with its connection); run again to
    # completion (no --model: recorded).
    rerun = subprocess.run(
        [sys.executable, "-m", "siglip_search", *args[:4], *args[-2:], "--batch-size", "4"]
        + ["--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"added {60 - done_before_rerun}, updated 0" in rerun.stdout

    clean = open_library(clean_lib)  # an SQLite library, on either backend
    with lock_library(clean):
        summary = index_paths(clean, [photos], embedder, batch_size=4, workers=2, progress=False)
    assert summary.added == 60
    clean.close()

    killed_rows, clean_rows = db_rows(killed_lib, database_url), db_rows(clean_lib)
    assert len(killed_rows) == 60 == len({rel for rel, _, _ in killed_rows})  # no duplicates
    assert [rel for rel, _, _ in killed_rows] == [rel for rel, _, _ in clean_rows]
    assert all(status == "ok" for _, status, _ in killed_rows)
    mismatched = [
        rel for (rel, _, a), (_, _, b) in zip(killed_rows, clean_rows, strict=True) if a != b
    ]
    assert mismatched == []  # identical embedding bytes

    killed = open_library(killed_lib, create=False, database=database_url)
    assert len(killed.vector_index()) == 60
    report = library_status(killed)
    assert report.last_run.status == "ok"
    statuses = [
        s for (s,) in _query(killed_lib, database_url, "SELECT status FROM runs ORDER BY id")
    ]
    assert statuses == ["interrupted", "ok"]
    query = np.frombuffer(killed_rows[5][2], dtype=np.float32)
    assert (
        Searcher(killed, embedder).search_vector(query, k=1).hits[0].rel_path == killed_rows[5][0]
    )
    killed.close()
