"""Vector search speed: exact (flat) vs the approximate index of indexer.vectors, on random unit vectors.

Run by hand (not a test):
    python benchmarks/search_speed.py --quick                 # 100k x 768, a few minutes
    python benchmarks/search_speed.py                         # 100k and 1M x 768 and 1152
    python benchmarks/search_speed.py --sizes 1000000 --dims 768 --data uniform clustered
    python benchmarks/search_speed.py --quick --alternatives  # also HNSW and IVF, for the choice

One query at a time on --threads cores (default 2): p50/p99 latency, recall@10 against exact
search, index memory (serialized size), build time. `uniform` vectors have no structure at all,
the worst case for any approximate index; `clustered` ones (points around 1 centre per 100, queries
nearer to their centre than to any point, like a text query) behave more like photo embeddings.
Latency includes the exact re-rank of the best candidates that indexer.search does. Prints a
markdown table; the goal column applies at 1M x 768.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402  (the benchmark measures FAISS itself, next to indexer.vectors)

from indexer.search import RERANK_FACTOR  # noqa: E402
from indexer.vectors import ANN_SHARDS, AnnIndex, VectorIndex  # noqa: E402

GOAL = {"p50_ms": 10.0, "p99_ms": 50.0, "recall": 0.95, "memory_mb": 1536.0}
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


def goal_column(r: dict) -> str:
    if (r["n"], r["dim"]) != (1_000_000, 768):
        return ""
    missed = [
        key
        for key, limit in GOAL.items()
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
    args = parser.parse_args(argv)
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
                rows.append(bench_flat(data, x, queries, truth, args.flat_queries))
                rows += bench_ann(data, x, queries, truth, k_factors)
                if args.alternatives:
                    for factory in ALTERNATIVES:
                        rows += bench_alternative(data, factory, x, queries, truth)
                print(f"done: {data} {n} x {dim}", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
