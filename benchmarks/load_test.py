"""Load test of a running web UI (not a test): N concurrent gradio_client clients x M text queries.

    siglip-search demo &  # builds the demo library, then serves it on port 7860
    python benchmarks/load_test.py http://127.0.0.1:7860/ --clients 8 --queries 25

Each client is its own gradio_client.Client (own connection and session), as a browser tab would be.
Queries cycle through a list of colour/shape phrases, so most hit the server's query cache after the
first round, as repeated searches do. Reports p50/p95/max latency of whole calls (queue, search,
thumbnails, download of the result thumbnails) and the number of errors. Goal on the demo library:
8 clients, 0 errors, p95 < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from gradio_client import Client

COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "heart"]
QUERIES = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES] + COLOURS


def run_client(
    url: str,
    n_queries: int,
    offset: int,
    count: int,
    auth,
    latencies: list,
    errors: list,
    barrier: threading.Barrier,
) -> None:
    # ssl_verify=False on plain http: gradio_client opens a new httpx client per request, and with
    # verification on each one loads the CA bundle (~30 ms of client CPU on a 2-core box).
    client = Client(
        url,
        auth=auth,
        verbose=False,
        download_files=False,
        analytics_enabled=False,
        ssl_verify=url.startswith("https:"),
    )
    barrier.wait()  # all clients start together
    for i in range(n_queries):
        query = QUERIES[(offset + i) % len(QUERIES)]
        started = time.perf_counter()
        try:
            gallery = client.predict(
                query, 0.0, count, "", "", "", "best match", api_name="/search"
            )[0]
            if not gallery:
                raise RuntimeError(f"no results for {query!r}")
        except Exception as exc:  # counted and shown, the run goes on
            errors.append(f"{query!r}: {type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:7860/")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=25, help="queries per client")
    parser.add_argument("--count", type=int, default=24, help="results per query")
    parser.add_argument("--auth", metavar="USER:PASSWORD", default=None)
    args = parser.parse_args(argv)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(args.clients)
    threads = [
        threading.Thread(
            target=run_client,
            args=(args.url, args.queries, i * 7, args.count, auth, latencies, errors, barrier),
        )
        for i in range(args.clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    total = args.clients * args.queries
    print(
        f"{args.clients} clients x {args.queries} queries = {total} calls in {wall:.1f} s "
        f"({len(latencies) / wall:.1f} queries/s)"
    )
    if latencies:
        print(
            f"latency  p50 {statistics.median(latencies) * 1000:.0f} ms"
            f"  p95 {percentile(latencies, 95) * 1000:.0f} ms"
            f"  max {max(latencies) * 1000:.0f} ms"
        )
    print(f"errors   {len(errors)}")
    for line in errors[:10]:
        print("  " + line)
    ok = not errors and latencies and percentile(latencies, 95) < 1.0
    print("goal (0 errors, p95 < 1 s): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
