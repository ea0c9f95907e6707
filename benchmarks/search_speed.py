"""Vector search speed: exact (flat) vs the approximate index of indexer.vectors, on random unit vectors.

Run by hand (not a test):
    python benchmarks/search_speed.py --quick                 # 100k x 768, a few minutes
    python benchmarks/search_speed.py                         # 100k and 1M x 768 and 1152
    python benchmarks/search_speed.py --sizes 1000000 --dims 768 --data uniform clustered
    python benchmarks/search_speed.py --quick --alternatives  # also HNSW and IVF, for the choice
    python benchmarks/search_speed.py --sizes 1000000 --dims 768 --indexes ondisk  # reindex's index

One query at a time on --threads cores (default 2): p50/p99 latency, recall@10 against exact
search, index memory (serialized size), build time. `uniform` vectors have no structure at all,
the worst case for any approximate index; `clustered` ones (points around 1 centre per 100, queries
nearer to their centre than to any point, like a text query) behave more like photo embeddings.
Latency includes the exact re-rank of the best candidates that indexer.search does. Prints a
markdown table; the goal column applies at 1M x 768.

`--indexes ondisk` measures the on-disk IVF index of `reindex --index ivfpq` through a real
library: the vectors are written to a library database (SQLite), `reindex` builds the index in
--shards processes, and a separate search process maps it and searches as indexer.search does
(candidates from the index, re-ranked exactly from the database). Its memory column is that
process's resident set (file pages mapped from the index included) after all the queries, and its
goal there is 512 MB; it imports no model (the model's own memory comes on top in `serve`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402  (the benchmark measures FAISS itself, next to indexer.vectors)

from indexer.search import RERANK_FACTOR  # noqa: E402
from indexer.vectors import ANN_SHARDS, AnnIndex, VectorIndex  # noqa: E402

GOAL = {"p50_ms": 10.0, "p99_ms": 50.0, "recall": 0.95, "memory_mb": 1536.0}
ONDISK_MEMORY_GOAL_MB = 512.0  # the search process's resident set with the on-disk index mapped
RERANK = (10 + 1) * RERANK_FACTOR  # candidates re-ranked exactly, as indexer.search does for k=10
ALTERNATIVES = ("HNSW32,SQ8", "IVF{nlist},SQ8")


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(
    kind: str, n: int, dim: int, n_queries: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(database (n, dim), queries (q, dim)) float32 unit rows, generated in chunks."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    if kind == "uniform":
        for start in range(0, n, 100_000):
            x[start : start + 100_000] = unit_rows(
                rng.standard_normal((min(100_000, n - start), dim), np.float32)
            )
        return x, unit_rows(rng.standard_normal((n_queries, dim), np.float32))
    centres = unit_rows(rng.standard_normal((max(1, n // 100), dim), np.float32))
    point_sigma = np.sqrt((1 / 0.7**2 - 1) / dim)  # a point has cosine ~0.7 with its centre
    query_sigma = np.sqrt((1 / 0.4**2 - 1) / dim)  # a query ~0.4: nearer its centre than any point
    for start in range(0, n, 100_000):
        count = min(100_000, n - start)
        chosen = centres[rng.integers(0, len(centres), count)]
        x[start : start + count] = unit_rows(
            chosen + point_sigma * rng.standard_normal((count, dim), np.float32)
        )
    chosen = centres[rng.integers(0, len(centres), n_queries)]
    return x, unit_rows(chosen + query_sigma * rng.standard_normal((n_queries, dim), np.float32))


def timed_queries(search, queries: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Run `search(query) -> ids` one query at a time; (ids per query, seconds per query)."""
    found, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        found.append(search(query))
        seconds.append(time.perf_counter() - start)
    return found, np.array(seconds)


def recall_at_10(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(f[:10].tolist()) & set(t.tolist())) / 10
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


def row(
    data: str,
    n: int,
    dim: int,
    name: str,
    build_s: float,
    memory: int,
    seconds: np.ndarray,
    recall: float,
) -> dict:
    return {
        "data": data,
        "n": n,
        "dim": dim,
        "index": name,
        "build_s": build_s,
        "memory_mb": memory / 2**20,
        "p50_ms": float(np.percentile(seconds, 50) * 1e3),
        "p99_ms": float(np.percentile(seconds, 99) * 1e3),
        "recall": recall,
    }


def bench_flat(
    data: str, x: np.ndarray, queries: np.ndarray, truth: np.ndarray, max_queries: int
) -> dict:
    start = time.perf_counter()
    index = VectorIndex(x.shape[1])
    index.add(np.arange(len(x)), x)
    build_s = time.perf_counter() - start
    found, seconds = timed_queries(lambda q: index.search(q, 10)[1][0], queries[:max_queries])
    return row(
        data,
        len(x),
        x.shape[1],
        "flat (IndexFlatIP)",
        build_s,
        index.memory_bytes(),
        seconds,
        recall_at_10(found, truth[:max_queries]),
    )


def bench_ann(
    data: str, x: np.ndarray, queries: np.ndarray, truth: np.ndarray, k_factors: list[int]
) -> list[dict]:
    start = time.perf_counter()
    index = AnnIndex.train_new(x[np.random.default_rng(1).permutation(len(x))[:65_536]], x.shape[1])
    for s in range(0, len(x), 100_000):
        index.add(np.arange(s, min(s + 100_000, len(x))), x[s : s + 100_000])
    build_s = time.perf_counter() - start
    rows = []
    for k_factor in k_factors:
        index.k_factor = k_factor

        def search(q: np.ndarray) -> np.ndarray:
            ids = index.search(q, RERANK)[1][0]
            ids = ids[ids >= 0]
            return ids[np.argsort(-(x[ids] @ q))]  # exact re-rank of the candidates

        found, seconds = timed_queries(search, queries)
        name = f"ANN {ANN_SHARDS} x PQ(d/4)x4fs + SQ8, k_factor {k_factor}"
        rows.append(
            row(
                data,
                len(x),
                x.shape[1],
                name,
                build_s,
                index.memory_bytes(),
                seconds,
                recall_at_10(found, truth),
            )
        )
    return rows


def bench_alternative(
    data: str, factory: str, x: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> list[dict]:
    """HNSW or IVF over SQ8 codes, with the same exact re-rank, at a few search depths."""
    factory = factory.format(nlist=int(4 * np.sqrt(len(x))))
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    index.train(x[:65_536])
    index.add(x)
    build_s = time.perf_counter() - start
    memory = len(faiss.serialize_index(index))
    rows = []
    for depth in (64, 256, 1024):
        if factory.startswith("HNSW"):
            params = faiss.SearchParametersHNSW(efSearch=depth)
        else:
            params = faiss.SearchParametersIVF(nprobe=min(depth // 4, index.nlist))

        def search(q: np.ndarray, params: faiss.SearchParameters = params) -> np.ndarray:
            ids = index.search(q[None], RERANK, params=params)[1][0]
            ids = ids[ids >= 0]
            return ids[np.argsort(-(x[ids] @ q))]

        found, seconds = timed_queries(search, queries)
        label = f"efSearch {depth}" if factory.startswith("HNSW") else f"nprobe {depth // 4}"
        rows.append(
            row(
                data,
                len(x),
                x.shape[1],
                f"{factory}, {label}",
                build_s,
                memory,
                seconds,
                recall_at_10(found, truth),
            )
        )
    return rows


def build_ondisk(folder: Path, x: np.ndarray, shards: int) -> tuple[float, float, str]:
    """A library holding `x` (ids 1..n) and its on-disk index: (write s, reindex s, summary)."""
    from indexer.library import IDENTITY_KEY, open_library
    from indexer.reindex import reindex_library
    from indexer.store import EmbeddedImage

    library = open_library(folder)
    identity = {"model_id": "benchmark (random vectors)", "dim": x.shape[1]}
    library.store.set_meta(IDENTITY_KEY, json.dumps(identity))
    root = library.store.add_root("/benchmark")
    start = time.perf_counter()
    for first in range(0, len(x), 2_000):
        photos = [
            EmbeddedImage(
                root.id, f"{i // 1000}/{i}.jpg", 1, 1, f"fp{i}", 1, 1, None, None, "-", x[i]
            )
            for i in range(first, min(first + 2_000, len(x)))
        ]
        library.store.write_batch(photos)
    write_s, start = time.perf_counter() - start, time.perf_counter()
    summary = reindex_library(library, "ivfpq", shards=shards)
    library.close()
    return write_s, time.perf_counter() - start, summary.line()


def bench_ondisk(
    data: str, x: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> list[dict]:
    """The on-disk index through a real library, searched by a separate process (see the top)."""
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        write_s, build_s, line = build_ondisk(Path(folder) / "library", x, args.shards)
        print(
            f"{data} {len(x):,} x {x.shape[1]}: written in {write_s:.0f} s; {line}", file=sys.stderr
        )
        np.save(Path(folder) / "queries.npy", queries)
        command = [sys.executable, __file__, "--child-ondisk", folder, "--nprobes", args.nprobes]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = []
    for result in json.loads(done.stdout):
        found = [np.asarray(ids) - 1 for ids in result["ids"]]  # library ids are 1..n
        name = (
            f"on-disk IVF ({result['factory']}), nprobe {result['nprobe']}, "
            f"{result['candidates']} re-ranked from the database; process base {result['base_mb']:.0f} MB"
        )
        rows.append(
            row(
                data,
                len(x),
                x.shape[1],
                name,
                build_s,
                int(result["rss_mb"] * 2**20),
                np.asarray(result["seconds"]),
                recall_at_10(found, truth),
            )  # fmt: skip
            | {"memory_goal_mb": ONDISK_MEMORY_GOAL_MB}
        )
    return rows


def child_ondisk(folder: str, nprobes: str) -> None:
    """The search process: map the library's index, search each query as indexer.search does."""
    base_mb = rss_mb()["VmRSS"]
    from indexer.library import open_library
    from indexer.reindex import recorded_index
    from indexer.search import nearest

    queries = np.load(Path(folder) / "queries.npy")
    library = open_library(Path(folder) / "library", create=False)
    index = library.vector_index()
    record = recorded_index(library)
    results = []
    for nprobe in (int(v) for v in nprobes.split(",")):
        index.nprobe = nprobe
        found, seconds = timed_queries(lambda q: nearest(library, index, q, 10)[1], queries)
        results.append(
            {
                "nprobe": nprobe,
                "factory": record.factory,
                "candidates": index.candidates(10),
                "ids": [f.tolist() for f in found],
                "seconds": seconds.tolist(),
                "rss_mb": rss_mb()["VmRSS"],
                "base_mb": base_mb,
            }  # fmt: skip
        )
    print(json.dumps(results))


def rss_mb() -> dict[str, float]:
    """This process's resident memory (VmRSS: anonymous and file pages), in MB."""
    status = Path("/proc/self/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status
        if line.startswith(("VmRSS", "RssAnon", "RssFile"))
    }


def goal_column(r: dict) -> str:
    if (r["n"], r["dim"]) != (1_000_000, 768):
        return ""
    goal = GOAL | {"memory_mb": r.get("memory_goal_mb", GOAL["memory_mb"])}
    missed = [
        key
        for key, limit in goal.items()
        if (r[key] < limit if key == "recall" else r[key] > limit)
    ]
    return "met" if not missed else "missed: " + ", ".join(missed)


def print_table(rows: list[dict]) -> None:
    print(
        "| data | n | dim | index | build s | memory MB | p50 ms | p99 ms | recall@10 | goal (1M x 768) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['n']:,} | {r['dim']} | {r['index']} | {r['build_s']:.1f} "
            f"| {r['memory_mb']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['recall']:.3f} | {goal_column(r)} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated database sizes")
    parser.add_argument("--dims", default="768,1152", help="comma-separated dimensions")
    parser.add_argument(
        "--data", nargs="+", default=["uniform", "clustered"], choices=["uniform", "clustered"]
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--flat-queries", type=int, default=50, help="flat search is slow at 1M")
    parser.add_argument(
        "--k-factors", default="16,64,256", help="ANN fast-scan candidates per re-ranked one"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100k x 768 only, 100 queries")
    parser.add_argument("--alternatives", action="store_true", help="also HNSW32,SQ8 and IVF,SQ8")
    parser.add_argument(
        "--indexes", nargs="+", default=["flat", "ann"], choices=["flat", "ann", "ondisk"],
        help="which indexes to measure (default: flat ann; ondisk: reindex's, through a library)",
    )  # fmt: skip
    parser.add_argument(
        "--nprobes", default="8,16,32", help="ondisk: lists probed, comma-separated"
    )
    parser.add_argument("--shards", type=int, default=2, help="ondisk: shards filled in parallel")
    parser.add_argument("--work-dir", default=None, help="ondisk: where the library is written")
    parser.add_argument("--child-ondisk", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ondisk:
        child_ondisk(args.child_ondisk, args.nprobes)
        return 0
    if args.quick:
        args.sizes, args.dims, args.queries = "100000", "768", 100
    faiss.omp_set_num_threads(args.threads)
    k_factors = [int(v) for v in args.k_factors.split(",")]
    rows: list[dict] = []
    for dim in (int(v) for v in args.dims.split(",")):
        for n in (int(v) for v in args.sizes.split(",")):
            for data in args.data:
                x, queries = make_data(data, n, dim, args.queries)
                exact = faiss.IndexFlatIP(dim)
                exact.add(x)
                truth = exact.search(queries, 10)[1]  # batched: the ground truth, not a timing
                del exact
                if "flat" in args.indexes:
                    rows.append(bench_flat(data, x, queries, truth, args.flat_queries))
                if "ann" in args.indexes:
                    rows += bench_ann(data, x, queries, truth, k_factors)
                if "ondisk" in args.indexes:
                    rows += bench_ondisk(data, x, queries, truth, args)
                if args.alternatives:
                    for factory in ALTERNATIVES:
                        rows += bench_alternative(data, factory, x, queries, truth)
                print(f"done: {data} {n} x {dim}", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
