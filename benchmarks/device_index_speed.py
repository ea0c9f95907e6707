"""Indexing speed on a device (the GPU benchmark; index_speed.py is the CPU one with auto against
fp32). Indexing speed and memory on large JPEGs: end to end against model-only and decode-only
images/s, decode workers (threads and processes) from 1 to all cores, draft() decode, peak RSS.

Run by hand (not a test):
    python benchmarks/device_index_speed.py [--n 16] [--model DIR_OR_ID] [--device cpu|cuda] [--mode M]
        [--batch-size N] [--workers N] [--pool threads|processes] [--no-rss]
Prints a markdown table. Goals: end to end / model only >= 0.9 on the CPU (decoding hides behind
the model); on a GPU, end to end / decode only >= 0.85 (the decoders are the limit);
cosine(draft, full decode) >= 0.99; peak RSS at 2N images no higher than at N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from index_speed import (  # the CPU benchmark's photos, model and measures
    DEMO_MODEL,
    REPO,
    draft_cosines,
    make_jpeg,
    peak_rss_mb,
    random_base_checkpoint,
    rss_mb,
    time_decodes,
)

sys.path.insert(0, str(REPO))


class RssSampler(threading.Thread):
    """Highest resident set size seen while indexing (the process peak is set by model loading)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = rss_mb()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_mb = max(self.peak_mb, rss_mb())


@dataclass
class Setup:
    """How to index: the model, where and how it runs, and the decode pool."""

    model: str
    device: str
    mode: str | None
    batch_size: int | None
    workers: int
    pool: str

    def arguments(self) -> list[str]:
        args = ["--model", self.model, "--device", self.device, "--workers", str(self.workers)]
        args += ["--pool", self.pool] + (["--mode", self.mode] if self.mode else [])
        return args + (["--batch-size", str(self.batch_size)] if self.batch_size else [])


def index_folder(folder: Path, embedder, setup: Setup):
    """index_paths into a fresh library: (summary, seconds)."""
    from indexer.jobs import index_paths
    from indexer.library import lock_library, open_library

    with tempfile.TemporaryDirectory() as lib_dir, open_library(lib_dir) as library:
        with lock_library(library):
            start = time.perf_counter()
            summary = index_paths(
                library,
                [folder],
                embedder,
                batch_size=setup.batch_size,
                workers=setup.workers,
                pool=setup.pool,
                progress=False,
            )
            return summary, time.perf_counter() - start


def child_index(folder: str, setup: Setup) -> None:
    """Index `folder` into a fresh library in this process; print JSON with peak RSS."""
    from siglip_search.embedder import Embedder

    embedder = Embedder.from_pretrained(setup.model, mode=setup.mode, device=setup.device)
    loaded_mb = rss_mb()
    sampler = RssSampler()
    sampler.start()
    summary, _ = index_folder(Path(folder), embedder, setup)
    sampler.done.set()
    sampler.join()
    report = {"images": summary.embedded, "failed": summary.failed, "loaded_mb": loaded_mb}
    report |= {"indexing_peak_mb": sampler.peak_mb, "process_peak_mb": peak_rss_mb()}
    print(json.dumps(report))


def measure_peak_rss(folder: Path, setup: Setup) -> dict:
    cmd = [sys.executable, __file__, "--child-index", str(folder), *setup.arguments()]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def decode_only_rate(
    embedder, folder: Path, workers: int, pool: str, repeats: int = 2
) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of what the decode workers do for indexing (fingerprint,
    decode, reduce, preprocess), through the indexer's own pool and prefetch queue, without the
    model: the best of `repeats` passes (a pool of processes starts in the first), over 16 photos
    a worker at most. CPU seconds a photo that stay flat from 1 to N workers mean the workers do
    not get in each other's way (no lock, no copies): then only free cores limit the rate, which
    on a shared machine the wall clock alone cannot show."""
    from indexer.pipeline import decode_pool, prefetch
    from indexer.prepare import Preparer, Work
    from indexer.scan import scan_folder

    work = [Work(1, f) for f in scan_folder(str(folder)).files][: 16 * workers]
    preparer = Preparer(embedder.image_processor, embedder.image_size, None)
    best, cpu_per_image = 0.0, 0.0
    with decode_pool(workers, pool) as executor:
        for _ in range(repeats):
            start, cpu = time.perf_counter(), cpu_seconds(executor)
            for prepared in prefetch(executor, preparer, work, window=4 * workers):
                assert prepared.error is None, prepared.error
            rate = len(work) / (time.perf_counter() - start)
            if rate > best:
                best, cpu_per_image = rate, (cpu_seconds(executor) - cpu) / len(work)
    return best, cpu_per_image


def cpu_seconds(executor) -> float:
    """CPU seconds used so far by a pool's workers: this process's (threads; the main thread
    waits) or its worker processes' (read from /proc)."""
    processes = getattr(executor, "_processes", None)
    if not processes:
        return time.process_time()
    ticks = 0
    for pid in list(processes):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def model_only_rate(embedder, paths: list[Path], n: int, batch_size: int) -> float:
    """Images/s of embed_pixels alone on a decoded batch, copied in from (pinned) host memory as
    indexing does, the batch repeated for about n images (the ceiling for indexing)."""
    from indexer.decode import decode_image

    batch = embedder.pixel_array(batch_size)
    for row in range(batch_size):
        image = decode_image(paths[row % len(paths)], target_size=embedder.image_size).image
        batch[row] = embedder.preprocess_image(image)
    embedder.embed_pixels(batch)  # warm-up
    batches = max(2, round(n / batch_size))
    start = time.perf_counter()
    for _ in range(batches):
        embedder.embed_pixels(batch)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = Setup(args.model, args.device, args.mode, args.batch_size, args.workers, args.pool)
    if args.child_index:
        child_index(args.child_index, setup)
        return 0

    import torch

    from indexer.pipeline import default_workers
    from siglip_search.embedder import Embedder

    cores = default_workers()
    setup.workers = setup.workers or cores
    with tempfile.TemporaryDirectory(prefix="index-speed-") as tmp_dir:
        tmp = Path(tmp_dir)
        model_name = setup.model or "random SigLIP B/16-224 weights"
        setup.model = setup.model or str(random_base_checkpoint(tmp / "model"))
        photos = make_photos(tmp, args.n, 1 if args.no_rss else 2)
        small = photos[0].parent.parent / "small"
        mb_per_file = sum(p.stat().st_size for p in photos) / len(photos) / 1e6

        embedder = Embedder.from_pretrained(setup.model, mode=setup.mode, device=setup.device)
        batch_size = setup.batch_size or embedder.batch_size
        rates = {"model": model_only_rate(embedder, photos, args.n, batch_size)}
        cpu = {}
        for pool in ("threads", "processes"):
            for workers in sorted({1, setup.workers}):
                key = f"decode {pool} {workers}"
                rates[key], cpu[key] = decode_only_rate(embedder, small, workers, pool)
        summary, seconds = index_folder(small, embedder, setup)
        rates["e2e"] = summary.embedded / seconds
        draft_ms, full_ms = time_decodes(photos[:8], embedder.image_size)
        cosines, between = draft_cosines(embedder, photos[:8])
        rss = {} if args.no_rss else {n: measure_peak_rss(folder, setup) for n, folder in (
            (args.n, small), (2 * args.n, photos[0].parent))}  # fmt: skip

    decode = rates[f"decode {setup.pool} {setup.workers}"]
    rows = [
        ("model", f"{model_name} (dim {embedder.dim}, {embedder.image_size[0]}px)"),
        ("machine", f"{cores} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"),
        ("model runs on", f"{embedder.describe()}, batch {batch_size}"),
        ("images", f"{args.n} x 4000x3000 JPEG q90, {mb_per_file:.1f} MB each"),
        ("model only (embed_pixels on decoded batches)", f"{rates['model']:.2f} img/s"),
        *[
            (
                f"decode only, {key.split()[1]}: {key.split()[2]} worker(s)",
                f"{rate:.2f} img/s ({cpu[key] * 1000:.0f} CPU ms per image)",
            )
            for key, rate in rates.items()
            if key.startswith("decode")
        ],
        (
            f"end to end (index_paths: scan, decode, embed, write; {setup.workers} {setup.pool})",
            f"{rates['e2e']:.2f} img/s ({summary.failed} failed)",
        ),
        ("end to end / model only (CPU goal >= 0.9)", f"{rates['e2e'] / rates['model']:.2f}"),
        ("end to end / decode only (GPU goal >= 0.85)", f"{rates['e2e'] / decode:.2f}"),
        ("decode ms/image with draft() / full", f"{draft_ms:.1f} / {full_ms:.1f}"),
        (
            "cosine draft vs full decode, min / mean (goal >= 0.99)",
            f"{cosines.min():.4f} / {cosines.mean():.4f}",
        ),
        ("cosine between different photos, mean (for scale)", f"{between.mean():.4f}"),
    ]
    if rss:
        first, second = rss[args.n], rss[2 * args.n]
        rows += [
            ("RSS after loading the model", f"{first['loaded_mb']:.0f} MB"),
            (f"peak RSS while indexing {args.n} images", f"{first['indexing_peak_mb']:.0f} MB"),
            (
                f"peak RSS while indexing {2 * args.n} images",
                f"{second['indexing_peak_mb']:.0f} MB",
            ),
        ]
    print("| measure | value |\n|---|---|")
    print("\n".join(f"| {name} | {value} |" for name, value in rows))
    return 0


def make_photos(tmp: Path, n: int, sets: int = 2) -> list[Path]:
    """sets * n generated 12 MP JPEGs in tmp/all, the first n also linked into tmp/small."""
    photos = [tmp / "all" / f"IMG_{i:04d}.jpg" for i in range(sets * n)]
    photos[0].parent.mkdir()
    with ThreadPoolExecutor() as pool:
        list(pool.map(make_jpeg, photos, range(len(photos))))
    (tmp / "small").mkdir()
    for p in photos[:n]:
        os.link(p, tmp / "small" / p.name)
    return photos


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=16, help="images in the small set (the large has 2N)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"checkpoint (default: random google/siglip-base-patch16-224-shaped weights; the demo "
        f"model is {DEMO_MODEL})",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--mode", default=None, help="default: fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the device's")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--pool", choices=("threads", "processes"), default="threads")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child runs")
    parser.add_argument("--child-index", metavar="FOLDER", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
