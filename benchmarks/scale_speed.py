"""Beyond one machine, measured in one run: ratios against a reference measured in the same run.

Run by hand (not a test):
    python benchmarks/scale_speed.py                           # every section
    python benchmarks/scale_speed.py --only postgresql --rows 20000
    python benchmarks/scale_speed.py --only postgresql --database postgresql://USER@HOST/DB

Sections (each its own functions and table, so that sections can be added side by side):
- postgresql: the library's store on PostgreSQL against SQLite, through indexer.store's Store as
  an indexer uses it: writes (batches of 32 and 256 photos with 768-dim vectors; goal at 32:
  PostgreSQL >= 0.5x SQLite), the queries a search, `status` and `duplicates` make, and two
  writer processes on two roots at once against one (writes only, and with 32 ms of "model" a
  batch). Without --database it starts a throwaway server (tests/postgres_server.py: initdb into
  a temporary folder, the server's default durability settings: fsync on). It also reports the
  bytes a photo takes in the library's tables: the numbers behind docs/scale.md's "PostgreSQL: one
  table at a billion photos".
Prints markdown tables and the CPU it ran on.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # the throwaway server of the tests

from indexer.store import EmbeddedImage, Store, open_store  # noqa: E402

DIM, BATCH = 768, 32
PG_WRITE_GOAL = 0.5  # PostgreSQL writes at least half as fast as SQLite


def print_machine() -> None:
    flags = set()
    model = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    shown = sorted(
        flags & {"avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile"}
    )
    print(
        f"machine: {model or platform.machine()}, {os.cpu_count()} cores, flags {' '.join(shown) or '-'}\n"
    )


# --- postgresql -----------------------------------------------------------------------------------


def pg_images(root_id: int, count: int, seed: int, prefix: str = "") -> list[EmbeddedImage]:
    """`count` photos as an indexer writes them: unit vectors, EXIF-like fields, 50 per folder."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM), np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        EmbeddedImage(
            root_id,
            f"{prefix}{2000 + i // 5000}/{i // 50:05d}/IMG_{i:07d}.JPG",
            3_000_000 + i,
            1_600_000_000_000_000_000 + i,
            f"{seed:08x}{i:056x}",
            4000,
            3000,
            f"20{i % 25:02d}-07-14T18:03:09",
            "Canon EOS R5",
            "siglip-base",
            vectors[i],
        )
        for i in range(count)
    ]


def pg_write(store: Store, folder: str, count: int, seed: int, batch: int = BATCH) -> float:
    """Images/s writing `count` photos under a new root, `batch` a transaction (the indexer
    writes each batch of its model, --batch-size, as one)."""
    root = store.add_root(folder)
    images = pg_images(root.id, count, seed)
    started = time.perf_counter()
    for start in range(0, count, batch):
        store.write_batch(images[start : start + batch])
    return count / (time.perf_counter() - started)


def _writer_process(
    url: str, folder: str, count: int, seed: int, start_at: float, model_s: float, out
) -> None:
    store = open_store(url)
    root = store.add_root(folder)
    images = pg_images(root.id, count, seed)
    time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        time.sleep(model_s)  # the model's time for this batch, when there is one
        store.write_batch(images[start : start + BATCH])
    out.put((started, time.perf_counter()))
    store.close()


def pg_writers(url: str, count: int, writers: int, model_s: float = 0.0) -> float:
    """Photos/s of `writers` processes writing `count` photos in all, each under its own root,
    each spending `model_s` seconds a batch on "embedding" first (0: writes only)."""
    spawn = multiprocessing.get_context(
        "spawn"
    )  # a forked child would share the parent's connections
    out = spawn.Queue()
    start_at = time.time() + 3.0  # every writer has opened the library and made its rows by then
    processes = [
        spawn.Process(
            target=_writer_process,
            args=(
                url,
                f"/writers{writers}-{model_s}/{w}",
                count // writers,
                100 + w,
                start_at,
                model_s,
                out,
            ),
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    spans = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    return count / (max(end for _, end in spans) - min(start for start, _ in spans))


def timed_ms(fn: Callable[[], object], repeat: int = 20) -> float:
    """Median milliseconds of `fn` over `repeat` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def pg_queries(store: Store) -> dict[str, float]:
    """Milliseconds of the queries `search` and `status` make, on the store as it is."""
    from indexer.library import Library
    from indexer.status import library_status

    ids = store.embedding_ids()
    rng = np.random.default_rng(0)
    roots = store.roots()
    library = Library(Path(tempfile.mkdtemp()), store)
    return {
        "search: is the FAISS file current (vectors_generation)": timed_ms(
            store.vectors_generation
        ),
        "search: the rows of 20 hits (images_by_ids)": timed_ms(
            lambda: store.images_by_ids(rng.choice(ids, 20))
        ),
        "search: 40 vectors to re-rank (embeddings_by_ids)": timed_ms(
            lambda: store.embeddings_by_ids(rng.choice(ids, 40).tolist())
        ),
        "search: ids in one year folder (image_ids_where)": timed_ms(
            lambda: store.image_ids_where([(roots[0].id, "2000")]), repeat=5
        ),
        "search: every id, to bring the approximate index up to date (embedding_ids)": timed_ms(
            store.embedding_ids, repeat=5
        ),
        "search: every vector, for a FAISS rebuild (iter_embeddings)": timed_ms(
            lambda: sum(len(i) for i, _ in store.iter_embeddings()), repeat=2
        ),
        "status: counts, roots, last run, failures (library_status)": timed_ms(
            lambda: library_status(library), repeat=5
        ),
        "duplicates: groups of equal fingerprints (fingerprint_groups)": timed_ms(
            store.fingerprint_groups, repeat=3
        ),
    }


TAGS_A_PHOTO = 10  # machine tags a photo gets (tag's default cap)


def pg_table_bytes(store: Store, tagged: int = 5_000) -> tuple[int, dict[str, float]]:
    """(rows, bytes per photo of the images table (heap, TOAST: the vectors, indexes) and of the
    tags table, from `tagged` photos given TAGS_A_PHOTO tags each)."""
    import sqlalchemy as sa

    ids = store.embedding_ids()[:tagged]
    tags = {int(i): [(f"tag number {t}", 0.5) for t in range(TAGS_A_PHOTO)] for i in ids}
    store.replace_machine_tags(tags, "siglip-base", "vocabulary-1")
    store.analyze()
    size = (
        "SELECT pg_relation_size(oid), pg_total_relation_size(reltoastrelid), pg_indexes_size(oid) "
        "FROM pg_class WHERE oid = CAST(:t AS regclass)"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM images")).scalar() or 1
        heap, toast, indexes = conn.execute(sa.text(size), {"t": "images"}).one()
        tag_heap, _, tag_indexes = conn.execute(sa.text(size), {"t": "tags"}).one()
    return rows, {
        "images: heap": heap / rows,
        "images: TOAST (the vectors)": toast / rows,
        "images: indexes": indexes / rows,
        f"tags ({TAGS_A_PHOTO} a photo): heap and indexes": (tag_heap + tag_indexes)
        / max(1, len(ids)),
    }


def pg_print_writes(stores: dict[str, Store], rows: int, repeat: int) -> None:
    """Rows of photos/s writing to each store, in the indexer's batches of 32 and of 256."""
    for batch in (BATCH, 8 * BATCH):
        # Alternated and repeated: on a shared machine, load comes and goes between runs.
        rates: dict[str, list[float]] = {name: [] for name in stores}
        for run in range(repeat):
            for name, store in stores.items():
                folder = f"/photos-{batch}-{run}"
                rates[name].append(
                    pg_write(store, folder, rows // (2 * repeat), seed=run, batch=batch)
                )
        sqlite, server = (statistics.median(rates[name]) for name in stores)
        goal = f">= {PG_WRITE_GOAL}x" if batch == BATCH else ""
        print(
            f"| writes in batches of {batch}, photos/s (median of {repeat}) | {sqlite:,.0f} | "
            f"{server:,.0f} | {server / sqlite:.2f}x | {goal} |"
        )


def pg_print_queries(stores: dict[str, Store]) -> None:
    sqlite_ms, server_ms = (pg_queries(store) for store in stores.values())
    for name in sqlite_ms:
        print(
            f"| {name}, ms | {sqlite_ms[name]:.2f} | {server_ms[name]:.2f} | "
            f"{sqlite_ms[name] / server_ms[name]:.2f}x | |"
        )


def pg_print_writers(url: str, rows: int) -> None:
    for model_s, what in (
        (0.0, "writes only"),
        (BATCH / 1000, "each with a model at 1,000 photos/s"),
    ):
        one = pg_writers(url, rows // 2, 1, model_s)
        two = pg_writers(url, rows // 2, 2, model_s)
        print(
            f"| two writers at once (two roots) against one, {what}, photos/s | | "
            f"{one:,.0f} -> {two:,.0f} | {two / one:.2f}x | |"
        )


def pg_print_sizes(store: Store) -> None:
    counted, sizes = pg_table_bytes(store)
    print(f"\n## The library's tables on PostgreSQL: bytes per photo (at {counted:,} photos)\n")
    print("| part | bytes/photo | at 1B photos |")
    print("|---|---|---|")
    for part, size in sizes.items():
        print(f"| {part} | {size:,.0f} | {size * 1e9 / 2**40:,.2f} TiB |")
    print()


def run_postgresql(args: argparse.Namespace) -> None:
    server = None
    if args.database is None:
        from postgres_server import server_binaries, start_server

        bindir = server_binaries()
        if bindir is None:
            print(
                "postgresql: skipped, no PostgreSQL server binaries (bash scripts/setup.sh --dev)\n"
            )
            return
        server = start_server(bindir, fast=False)  # the server's own durability settings
    try:
        url = args.database or server.url(server.create_database())
        with tempfile.TemporaryDirectory() as folder:
            stores = {
                "sqlite": open_store(Path(folder) / "library.db"),
                "postgresql": open_store(url),
            }
            print(
                f"## PostgreSQL store against SQLite ({args.rows:,} photos a store, {DIM}-dim vectors)\n"
            )
            print("| measure | SQLite | PostgreSQL | PostgreSQL / SQLite | goal |")
            print("|---|---|---|---|---|")
            pg_print_writes(stores, args.rows, args.repeat)
            stores["postgresql"].analyze()
            pg_print_queries(stores)
            pg_print_writers(url, args.rows)
            pg_print_sizes(stores["postgresql"])
            for store in stores.values():
                store.close()
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=("postgresql",), action="append", help="run only these sections"
    )
    parser.add_argument(
        "--rows", type=int, default=20_000, help="photos written per store (default: 20000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="write runs per store, alternated (default: 3)"
    )
    parser.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="an empty PostgreSQL database to use (default: a throwaway server)",
    )
    args = parser.parse_args()
    sections = set(args.only or ["postgresql"])
    print_machine()
    if "postgresql" in sections:
        run_postgresql(args)


if __name__ == "__main__":
    main()
