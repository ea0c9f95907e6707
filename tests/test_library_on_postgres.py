"""A library on a PostgreSQL server, as a team with several machines uses it: two machines indexing
different folders at once, the same folder refused or waited for, each machine's own FAISS cache,
a server that cannot be reached, and the limits a server enforces that SQLite does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from indexer_fixtures import draw_photo, make_photo_folder, save_jpeg_with_exif
from postgres_server import PASSWORD_ROLE

from indexer.errors import LibraryLockedError
from indexer.jobs import index_paths
from indexer.library import DATABASE_ENV, lock_library, open_library
from indexer.search import Searcher
from indexer.status import library_status
from indexer.store import generation as generations
from indexer.store import open_store
from indexer.tags import tag_library
from indexer.vocabulary import parse_vocabulary
from siglip_search.cli import main

pytestmark = pytest.mark.postgresql
REPO = Path(__file__).resolve().parents[1]


def _photos(folder: Path, count: int, first_seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        draw_photo(first_seed + i, (96, 72)).save(folder / f"img_{i:03d}.png")
    return folder


def _rows(url: str) -> list[tuple]:
    """Every image row as a user would compare two libraries: root, path, status, vector bytes."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.path, i.rel_path, i.status, i.embedding FROM images i "
                "JOIN roots r ON r.id = i.root_id ORDER BY r.path, i.rel_path"
            )
        ).all()
    engine.dispose()
    return [
        (root, rel, status, bytes(vector) if vector is not None else None)
        for root, rel, status, vector in rows
    ]


# The real CLI in a real process (a machine); its first batch waits until the other machine's
# has started too, so that the two jobs surely run at the same time.
MEET_CLI = """
import os, sys, time
from pathlib import Path
from siglip_search.embedder import Embedder
real = Embedder.embed_pixels
def embed_pixels(self, pixels):
    Path(os.environ["MINE"]).touch()
    deadline = time.monotonic() + 120
    while not Path(os.environ["THEIRS"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return real(self, pixels)
Embedder.embed_pixels = embed_pixels
from siglip_search.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _machine(args: list[str], mine: Path, theirs: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO), "MINE": str(mine), "THEIRS": str(theirs)}
    return subprocess.Popen(
        [sys.executable, "-c", MEET_CLI, *args],
        cwd=REPO,
        text=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_machines_index_different_roots_at_once_and_get_the_library_of_one_run(
    tmp_path, tiny_checkpoint, postgres_server, embedder
):
    first, second = (
        _photos(tmp_path / "studio", 24),
        _photos(tmp_path / "archive", 24, first_seed=100),
    )
    shared = postgres_server.url(postgres_server.create_database())
    common = [
        "--model",
        str(tiny_checkpoint),
        "--mode",  # as the one run below embeds: the rows are compared byte for byte
        "fp32",
        "--batch-size",
        "4",
        "--no-progress",
        "--database",
        shared,
    ]
    # Two machines: each its own library folder for its FAISS files, one database.
    a, b = tmp_path / "a-started", tmp_path / "b-started"
    jobs = [
        _machine(["index", str(first), "--library", str(tmp_path / "machine-a"), *common], a, b),
        _machine(["index", str(second), "--library", str(tmp_path / "machine-b"), *common], b, a),
    ]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], results
    assert all("added 24, updated 0" in out for out, _ in results)

    with open_library(tmp_path / "machine-a", database=shared) as library:
        with (
            library.store.engine.connect() as conn
        ):  # the two runs overlapped: they really ran at once
            (a_start, a_end), (b_start, b_end) = conn.execute(
                sa.text("SELECT started_at, finished_at FROM runs ORDER BY id")
            ).all()
        assert a_start < b_end and b_start < a_end
        assert library_status(library).last_run.status == "ok"
        assert len(library.vector_index()) == 48

    one_run = postgres_server.url(postgres_server.create_database())
    with open_library(tmp_path / "one-run", database=one_run) as single:
        with lock_library(single):
            index_paths(single, [first, second], embedder, batch_size=4, progress=False)
    assert _rows(shared) == _rows(one_run)  # same rows, same vectors, byte for byte


def test_the_same_root_from_a_second_machine_waits_or_names_who_holds_it(
    tmp_path, postgres_url, embedder, tiny_checkpoint, capsys
):
    photos = make_photo_folder(tmp_path / "photos", n=8)
    root = next(iter(photos.values())).parents[2]
    with open_library(tmp_path / "machine-a", database=postgres_url) as library:
        with lock_library(library, folders=[root], command="index"):
            # The same root, a folder inside it, and the whole library are refused at once.
            model = ["--model", str(tiny_checkpoint)]  # the library has none recorded yet
            for args in (
                ["index", str(root), *model],
                ["index", str(root / "2021"), *model],
                ["tag"],
            ):
                rc = main(
                    [*args, "--library", str(tmp_path / "machine-b"), "--database", postgres_url]
                )
                err = capsys.readouterr().err.strip()
                assert rc == 2 and "\n" not in err
                assert f"siglip-search index on {socket.gethostname()} pid {os.getpid()}" in err
                assert "--wait" in err
            # Another folder goes ahead.
            other = _photos(tmp_path / "other", 3)
            with open_library(tmp_path / "machine-b", database=postgres_url) as second:
                with lock_library(second, folders=[other]):
                    assert index_paths(second, [other], embedder, progress=False).added == 3

            # --wait: the second machine waits for the first to finish, then indexes.
            results: list[int] = []
            waiter = threading.Thread(
                target=lambda: results.append(
                    main(
                        [
                            "index",
                            str(root),
                            "--library",
                            str(tmp_path / "machine-b"),
                            "--database",
                            postgres_url,
                            "--wait",
                            "60",
                            "--no-progress",
                        ]
                    )
                )
            )
            waiter.start()
            time.sleep(1.0)
            assert results == []  # still waiting
        waiter.join(timeout=120)
        assert results == [0]
        assert library.store.counts().images == 8 + 3


def test_a_dead_machines_lock_goes_with_its_connection(tmp_path, postgres_url, tiny_checkpoint):
    """kill -9 of a job holding a folder lock: the server drops the lock with the connection."""
    photos = _photos(tmp_path / "photos", 2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from indexer.library import lock_library, open_library\n"
                "library = open_library(sys.argv[1], database=sys.argv[2])\n"
                "with lock_library(library, folders=[sys.argv[3]]):\n"
                "    print('locked', flush=True)\n"
                "    time.sleep(600)\n"
            ),
            str(tmp_path / "machine-a"),
            postgres_url,
            str(photos),
        ],
        cwd=REPO,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with open_library(tmp_path / "machine-b", database=postgres_url) as library:
            with pytest.raises(LibraryLockedError):
                with lock_library(library, folders=[photos]):
                    pass
            holder.kill()
            holder.wait(timeout=30)
            with lock_library(library, folders=[photos], wait_s=30):
                pass
    finally:
        holder.kill()


def test_an_unreachable_database_is_one_line_naming_it_without_the_password(
    tmp_path, postgres_server, capsys
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    port = postgres_server.port
    cases = {
        f"postgresql://someone:hunter2@127.0.0.1:{closed_port}/photos": f"127.0.0.1:{closed_port}/photos",
        "postgresql://someone:hunter2@no-such-host.invalid/photos": "no-such-host.invalid/photos",
        f"postgresql://{PASSWORD_ROLE}:hunter2@127.0.0.1:{port}/postgres": "password authentication failed",
        f"postgresql://postgres:hunter2@127.0.0.1:{port}/no_such_db": 'database "no_such_db" does not exist',
        "mysql://someone:hunter2@127.0.0.1/photos": "PostgreSQL server",
        f"sqlite:///{tmp_path}/library.db": "an SQLite library is a folder",
    }
    for url, expected in cases.items():
        for args in (["status"], ["index", str(tmp_path)], ["search", "cat"]):
            rc = main([*args, "--library", str(tmp_path / "local"), "--database", url])
            err = capsys.readouterr().err.strip()
            assert rc == 2, (url, err)
            assert err.count("\n") == 0 and expected in err, err
            assert "hunter2" not in err and "Traceback" not in err
    assert not (
        tmp_path / "local"
    ).exists()  # nothing was made for a library that could not be opened


def test_a_database_without_a_library_is_not_initialised_by_a_reading_command(
    tmp_path, postgres_url, capsys
):
    for args in (["status"], ["search", "cat"], ["tag"]):
        assert main([*args, "--database", postgres_url, "--library", str(tmp_path / "local")]) == 2
        assert "holds no library yet" in capsys.readouterr().err
    engine = sa.create_engine(postgres_url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()


def test_a_folder_holding_an_sqlite_library_is_not_taken_as_a_server_librarys_folder(
    tmp_path, postgres_url, embedder
):
    with open_library(tmp_path / "laptop") as laptop:  # an SQLite library
        with lock_library(laptop):
            index_paths(laptop, [_photos(tmp_path / "photos", 2)], embedder, progress=False)
    assert main(["status", "--library", str(tmp_path / "laptop"), "--database", postgres_url]) == 2


def test_long_names_camera_strings_and_tags_fit_the_servers_columns(
    tmp_path, database_url, embedder
):
    """PostgreSQL enforces the lengths SQLite ignores: what files and EXIF can hold must fit."""
    photos = tmp_path / "photos"
    deep = photos / ("folder with a very long name " * 8).strip() / ("ünïcødé " * 20).strip()
    deep.mkdir(parents=True)
    name = ("a photo whose name is long " * 9).strip()[
        :240
    ] + ".jpg"  # most file systems allow 255 bytes
    save_jpeg_with_exif(
        deep / name,
        draw_photo(1),
        taken="2021:07:14 18:03:09",
        make="Canon " * 300,
        model="EOS \x00 R5 " * 300,
    )
    (deep / ("broken " * 30 + ".jpg")).write_bytes(b"\xff\xd8 not really a jpeg" * 100)
    with open_library(tmp_path / "library", database=database_url) as library:
        with lock_library(library):
            summary = index_paths(library, [photos], embedder, progress=False)
        assert (summary.added, summary.failed) == (1, 1)
        row = next(iter(library.store.iter_images()))
        assert row.rel_path.endswith(name) and row.camera.startswith("Canon Canon")
        assert "\x00" not in row.camera and row.taken_at == "2021-07-14T18:03:09"
        long_tag = ("a tag named the way some people name things at some length " * 10).strip()
        with lock_library(library):
            tag_library(
                library, embedder, parse_vocabulary(long_tag), threshold=1e-6, progress=False
            )
        assert [t.tag for t in library.store.iter_tags()] == [long_tag]


def test_ids_past_two_to_the_31_work_end_to_end(tmp_path, postgres_url, embedder):
    """64-bit ids: a big library's ids (tags overflow 32 bits first) index, search and tag."""
    with open_library(tmp_path / "library", database=postgres_url) as library:
        with library.store.engine.begin() as conn:
            for table in ("images", "tags", "roots"):
                conn.execute(sa.text(f"ALTER SEQUENCE {table}_id_seq RESTART WITH {2**33 + 7}"))
        with lock_library(library):
            index_paths(library, [_photos(tmp_path / "photos", 4)], embedder, progress=False)
        ids = sorted(r.id for r in library.store.iter_images())
        assert ids[0] > 2**33
        query = library.store.embeddings_by_ids([ids[2]])[ids[2]]
        assert Searcher(library, embedder).search_vector(query, k=1).hits[0].id == ids[2]
        with lock_library(library):
            tag_library(
                library,
                embedder,
                parse_vocabulary("red\ngreen\nblue"),
                threshold=1e-6,
                progress=False,
            )
        tagged = {t.image_id for t in library.store.iter_tags()}
        assert tagged == set(ids)


def test_two_machines_keep_their_own_faiss_cache_in_step(
    tmp_path, postgres_server, postgres_url, embedder
):
    photos = _photos(tmp_path / "photos", 6)
    machine_a = open_library(tmp_path / "machine-a", database=postgres_url)
    machine_b = open_library(tmp_path / "machine-b", database=postgres_url)
    with lock_library(machine_a):
        index_paths(machine_a, [photos], embedder, progress=False)
    searcher = Searcher(machine_b, embedder)
    assert (
        len(machine_b.vector_index()) == 6 and (tmp_path / "machine-b" / "vectors.faiss").is_file()
    )

    # Machine A adds and deletes; machine B's open searcher and its cache follow.
    (photos / "img_000.png").unlink()
    draw_photo(77, (96, 72)).save(photos / "new.png")
    with lock_library(machine_a):
        index_paths(machine_a, [photos], embedder, progress=False)
    new_id = next(r.id for r in machine_b.store.iter_images() if r.rel_path == "new.png")
    vector = machine_b.store.embeddings_by_ids([new_id])[new_id]
    hits = searcher.search_vector(vector, k=10).hits
    assert hits[0].id == new_id and "img_000.png" not in {h.rel_path for h in hits}
    machine_a.close()
    machine_b.close()

    # A FAISS file that another database's library left in the folder, at the same generation and
    # with as many vectors, is never taken for this one's.
    with open_library(tmp_path / "machine-c", database=postgres_url) as reader:
        assert len(reader.vector_index()) == 6
        ours = reader.store.vectors_generation()
    other_url = postgres_server.url(postgres_server.create_database())
    with open_library(tmp_path / "elsewhere", database=other_url) as other:
        with lock_library(other):
            index_paths(
                other,
                [_photos(tmp_path / "other-photos", 6, first_seed=300)],
                embedder,
                progress=False,
            )
        with other.store.engine.begin() as conn:  # the same generation number as ours
            conn.execute(
                sa.text("INSERT INTO generations (generation, committed_at) VALUES (:g, now())"),
                {"g": ours},
            )
            conn.execute(sa.text("DELETE FROM generations WHERE generation <> :g"), {"g": ours})
        assert other.store.vectors_generation() == ours and len(other.vector_index()) == 6
    for name in ("vectors.faiss", "vectors.json"):
        (tmp_path / "machine-c" / name).write_bytes((tmp_path / "elsewhere" / name).read_bytes())
    with open_library(tmp_path / "machine-c", database=postgres_url) as reader:
        vectors = reader.store.embeddings_by_ids(r.id for r in reader.store.iter_images())
        cosines, found = reader.vector_index().search(np.stack(list(vectors.values())), 1)
        assert found[:, 0].tolist() == list(vectors) and np.allclose(cosines[:, 0], 1.0, atol=1e-5)


def test_a_writers_generation_becomes_visible_only_with_its_rows_and_in_order(
    tmp_path, postgres_url, embedder
):
    """Generations are taken in commit order: while one transaction holds the next number, a second
    writer waits its turn and readers still see the last committed generation."""
    from sqlalchemy.orm import Session

    with open_library(tmp_path / "library", database=postgres_url) as library:
        with lock_library(library):
            index_paths(library, [_photos(tmp_path / "photos", 2)], embedder, progress=False)
        store = library.store
        before = store.vectors_generation()
        slow = Session(store.engine)
        taken = generations.next_generation(slow)  # a writer in the middle of its transaction
        assert taken > before and store.vectors_generation() == before

        second = threading.Thread(
            target=store.delete_images, args=([next(store.iter_images()).id],)
        )
        second.start()
        time.sleep(0.5)
        assert second.is_alive() and store.vectors_generation() == before  # waiting for its turn
        slow.commit()
        second.join(timeout=30)
        assert not second.is_alive()
        assert store.vectors_generation() > taken  # the second writer's number came after
        slow.close()


def test_after_a_server_crash_no_generation_number_is_drawn_again(tmp_path, embedder):
    """An indexer's batches commit without waiting for the disk (as SQLite's WAL mode does), so a
    crashed server may lose the last of them after readers saw them; the first generation drawn
    after the restart skips far past the newest one kept, so no FAISS file of a lost generation
    can ever match a later one."""
    from postgres_server import server_binaries, start_server

    from indexer.store.generation import RESTART_JUMP

    server = start_server(server_binaries())  # its own: a restart drops every connection to it
    try:
        url = server.url(server.create_database())
        with open_library(tmp_path / "library", database=url) as library:
            with lock_library(library):
                index_paths(library, [_photos(tmp_path / "photos", 4)], embedder, progress=False)
            before = library.store.vectors_generation()
        # What was committed before this point is on disk (batches commit without waiting for
        # it, and an immediate stop may lose the newest): the restart below keeps `before`.
        server.execute("CHECKPOINT")
        server.restart()
        with open_library(tmp_path / "library", database=url) as library:
            assert library.store.vectors_generation() == before  # durable commits survive
            with lock_library(library):
                index_paths(library, [_photos(tmp_path / "more", 4)], embedder, progress=False)
            after = library.store.vectors_generation()
            assert after > before + RESTART_JUMP
            library.store.delete_images([next(library.store.iter_images()).id])
            assert (
                library.store.vectors_generation() == after + 1
            )  # once per restart, not each time
            assert len(library.vector_index()) == 7
    finally:
        server.stop()


def test_a_run_that_wrote_many_rows_refreshes_the_planners_statistics(
    tmp_path, postgres_url, embedder, monkeypatch
):
    import indexer.jobs

    monkeypatch.setattr(indexer.jobs, "ANALYZE_MIN_ROWS", 5)
    with open_library(tmp_path / "library", database=postgres_url) as library:
        with lock_library(library):
            index_paths(library, [_photos(tmp_path / "photos", 6)], embedder, progress=False)
        with library.store.engine.connect() as conn:
            analyzed = conn.execute(
                sa.text(
                    "SELECT last_analyze IS NOT NULL, n_mod_since_analyze FROM pg_stat_user_tables "
                    "WHERE relname = 'images'"
                )
            ).one()
    assert analyzed == (True, 0)


def test_status_names_the_server_database_without_its_password(
    tmp_path, postgres_server, embedder, capsys
):
    name = postgres_server.create_database(owner=PASSWORD_ROLE)
    url = postgres_server.url(name).replace("postgres@", f"{PASSWORD_ROLE}:right-password@")
    with open_library(tmp_path / "local", database=url) as library:
        with lock_library(library):
            index_paths(library, [_photos(tmp_path / "photos", 2)], embedder, progress=False)
    assert main(["status", "--library", str(tmp_path / "local"), "--database", url]) == 0
    out = capsys.readouterr().out
    assert (
        f"library   postgresql://{PASSWORD_ROLE}:***@127.0.0.1:{postgres_server.port}/{name}" in out
    )
    assert "right-password" not in out and f"local     {tmp_path / 'local'}" in out


def test_the_database_can_come_from_the_environment(
    tmp_path, postgres_url, tiny_checkpoint, monkeypatch
):
    monkeypatch.setenv(DATABASE_ENV, postgres_url)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SIGLIP_SEARCH_LIBRARY", raising=False)
    photos = _photos(tmp_path / "photos", 2)
    assert main(["index", str(photos), "--model", str(tiny_checkpoint), "--no-progress"]) == 0
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM images")).scalar() == 2
    engine.dispose()
    store = open_store(postgres_url, create=False)
    assert (
        tmp_path
        / "data"
        / "siglip-search"
        / "databases"
        / store.library_id()[:16]
        / "vectors.faiss"
    ).is_file()
    store.close()


def test_the_web_app_serves_a_server_library_and_its_jobs_take_the_same_locks(
    tmp_path, postgres_url, embedder, capsys, monkeypatch
):
    import gradio as gr

    from ui import handlers
    from ui.state import load_state

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    photos = _photos(tmp_path / "photos", 6)
    assert main(["serve", "--database", postgres_url, "--library", str(tmp_path / "web")]) == 2
    assert (
        "holds no library yet" in capsys.readouterr().err
    )  # nothing to serve, and nothing created
    with open_library(tmp_path / "machine-a", database=postgres_url) as library:
        with lock_library(library):
            index_paths(library, [photos], embedder, progress=False)

    state = load_state(None, database=postgres_url)  # serve --database URL, no --library
    try:
        assert state.library_dir.parent == tmp_path / "data" / "siglip-search" / "databases"
        page = handlers.search_text(state, "red", 0.0, 6, "", "", "", "best match")[2]
        assert (
            main(
                [
                    "search",
                    "red",
                    "-k",
                    "6",
                    "--json",
                    "--database",
                    postgres_url,
                    "--library",
                    str(tmp_path / "machine-a"),
                ]
            )
            == 0
        )
        cli = json.loads(capsys.readouterr().out)
        assert [hit["id"] for hit in page] == [hit["id"] for hit in cli]
        # Another machine indexes the folder: the page's index job waits its turn or says who.
        with open_library(tmp_path / "machine-b", database=postgres_url) as other:
            with lock_library(other, folders=[photos], command="index"):
                with pytest.raises(gr.Error, match="is being indexed by siglip-search index on"):
                    handlers.index_folder(state, str(photos), progress=lambda *a, **k: None)
    finally:
        state.close()
