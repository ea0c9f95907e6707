"""Indexing speed and memory on large JPEGs: end-to-end vs model-only images/s, draft() decode, peak RSS.

Run by hand (not a test):
  python benchmarks/index_speed.py [--n 16] [--model DIR_OR_ID | --base] [--mode auto] [--turns 3]
Prints a markdown table. Goals: end-to-end / model-only >= 0.85 (decoding hides behind the
model), cosine(draft, full decode) >= 0.99, peak RSS at 2N images no higher than at N, and indexing
with the default options (--mode auto) >= 2.5x as fast as with the default before it (fp32),
measured end to end in alternating turns (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO_MODEL = REPO / "data" / "models" / "siglip-demo"


def make_jpeg(path: Path, seed: int, size: tuple[int, int] = (4000, 3000)) -> None:
    """A 12 MP 'photo': smooth colour field, shapes, sensor-like noise; ~3 MB at quality 90."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    pixels = np.asarray(low.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    pixels = pixels + rng.integers(-10, 11, (h, w, 1), dtype=np.int16)
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, [w - 800, h - 800]))
        dx, dy = (int(v) for v in rng.integers(200, 800, 2))
        draw.ellipse((x, y, x + dx, y + dy), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    im.save(path, "JPEG", quality=90)


def random_base_checkpoint(directory: Path) -> Path:
    """SigLIP B/16-224 shapes with random weights, when no trained model is at hand."""
    from siglip_search import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipTokenizer,
    )
    from siglip_search.training import synthetic

    directory.mkdir(parents=True, exist_ok=True)
    synthetic.train_sentencepiece(
        synthetic.caption_corpus(0, 2000), directory / "spiece.model", vocab_size=128
    )
    tokenizer = SiglipTokenizer(
        directory / "spiece.model", model_max_length=64, model_input_names=["input_ids"]
    )
    tokenizer.save_pretrained(directory)
    SiglipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(directory)
    config = SiglipConfig.from_dict(
        {"text_config": {"vocab_size": tokenizer.vocab_size}, "vision_config": {}}
    )
    SiglipModel(config).save_pretrained(directory)
    return directory


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    """Highest resident set size seen while indexing (the process peak is set by model loading)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = rss_mb()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_mb = max(self.peak_mb, rss_mb())


def child_index(folder: str, model: str, batch_size: int, workers: int | None) -> None:
    """Index `folder` into a fresh library in this process; print JSON with peak RSS."""
    from indexer.jobs import index_paths
    from indexer.library import lock_library, open_library

    with tempfile.TemporaryDirectory() as lib_dir:
        library = open_library(lib_dir)
        embedder = library.load_embedder(model)
        loaded_mb = rss_mb()
        sampler = RssSampler()
        sampler.start()
        with lock_library(library):
            summary = index_paths(
                library, [folder], embedder, batch_size=batch_size, workers=workers, progress=False
            )
        sampler.done.set()
        sampler.join()
        library.close()
    print(
        json.dumps(
            {
                "images": summary.embedded,
                "failed": summary.failed,
                "loaded_mb": loaded_mb,
                "indexing_peak_mb": sampler.peak_mb,
                "process_peak_mb": peak_rss_mb(),
            }
        )
    )


def measure_peak_rss(folder: Path, model: str, batch_size: int, workers: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child-index",
        str(folder),
        "--model",
        model,
        "--batch-size",
        str(batch_size),
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_decodes(paths: list[Path], target: tuple[int, int]) -> tuple[float, float]:
    from indexer.decode import decode_image

    def mean_ms(**kw) -> float:
        start = time.perf_counter()
        for p in paths:
            decode_image(p, **kw)
        return (time.perf_counter() - start) * 1000 / len(paths)

    return mean_ms(target_size=target), mean_ms()


def decode_rates(embedder, paths: list[Path], workers: int) -> tuple[float, float]:
    """Images/s of decode + preprocess on 1 thread and on `workers` threads (does the GIL bite?)."""
    from indexer.decode import decode_image

    def prepare(path: Path) -> np.ndarray:
        return embedder.preprocess_image(decode_image(path, target_size=embedder.image_size).image)

    start = time.perf_counter()
    for p in paths:
        prepare(p)
    serial = len(paths) / (time.perf_counter() - start)
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        list(pool.map(prepare, paths))
        threaded = len(paths) / (time.perf_counter() - start)
    return serial, threaded


def draft_cosines(embedder, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each photo's draft and full-decode embeddings, and (for scale) the cosines
    between different photos: a model that maps everything alike makes the first meaningless."""
    from indexer.decode import decode_image

    target = embedder.image_size
    drafted = np.stack(
        [embedder.preprocess_image(decode_image(p, target_size=target).image) for p in paths]
    )
    full = np.stack([embedder.preprocess_image(decode_image(p).image) for p in paths])
    a, b = embedder.embed_pixels(drafted), embedder.embed_pixels(full)  # unit rows
    between = (b @ b.T)[~np.eye(len(paths), dtype=bool)]
    return np.sum(a * b, axis=1), between


def model_only_rate(embedder, paths: list[Path], n: int, batch_size: int) -> float:
    """Images/s of embed_pixels alone on pre-decoded batches (the ceiling for indexing)."""
    from indexer.decode import decode_image

    batch = np.stack(
        [
            embedder.preprocess_image(decode_image(p, target_size=embedder.image_size).image)
            for p in paths[:batch_size]
        ]
    )
    embedder.embed_pixels(batch)  # warm-up
    batches = max(1, round(n / batch_size))
    start = time.perf_counter()
    for _ in range(batches):
        embedder.embed_pixels(batch)
    return batches * len(batch) / (time.perf_counter() - start)


def end_to_end_rate(
    folder: Path, embedder, batch_size: int, workers: int | None
) -> tuple[float, int]:
    from indexer.jobs import index_paths
    from indexer.library import lock_library, open_library

    with tempfile.TemporaryDirectory() as lib_dir:
        library = open_library(lib_dir)
        with lock_library(library):
            start = time.perf_counter()
            summary = index_paths(
                library, [folder], embedder, batch_size=batch_size, workers=workers, progress=False
            )
            seconds = time.perf_counter() - start
        library.close()
    return summary.embedded / seconds, summary.failed


def default_speedup(
    folder: Path, model: str, batch_size: int, workers: int | None, turns: int
) -> tuple[float, float, str]:
    """End-to-end img/s indexing `folder` with fp32 (the default before auto) and with auto (the
    default now), in alternating turns; medians, and what auto picked."""
    from siglip_search.embedder import Embedder

    fp32 = Embedder.from_pretrained(model, mode="fp32")
    auto = Embedder(fp32.model, fp32.tokenizer, fp32.image_processor, model, mode="auto")
    rates: dict[str, list[float]] = {"fp32": [], "auto": []}
    for _ in range(turns):
        for name, embedder in (("fp32", fp32), ("auto", auto)):
            rates[name].append(end_to_end_rate(folder, embedder, batch_size, workers)[0])
    return statistics.median(rates["fp32"]), statistics.median(rates["auto"]), auto.describe_mode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=16, help="images in the small set (the large one has 2N)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"checkpoint (default: {DEMO_MODEL} if present, else random B/16)",
    )
    parser.add_argument(
        "--base",
        action="store_true",
        help="random google/siglip-base-patch16-224-shaped weights, even where the demo model is",
    )
    parser.add_argument(
        "--mode", default="auto", help="mode of the single-mode rows (default auto)"
    )
    parser.add_argument("--turns", type=int, default=3, help="turns of the fp32 / auto comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--child-index", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_index:
        child_index(args.child_index, args.model, args.batch_size, args.workers)
        return 0

    import torch
    from embed_speed import describe_machine

    from siglip_search.embedder import Embedder

    with tempfile.TemporaryDirectory(prefix="index-speed-") as tmp:
        tmp = Path(tmp)
        demo = DEMO_MODEL.is_dir() and not args.base
        model = args.model or (
            str(DEMO_MODEL) if demo else str(random_base_checkpoint(tmp / "model"))
        )
        model_name = args.model or ("siglip-demo" if demo else "random SigLIP B/16-224")
        photos = [tmp / "all" / f"IMG_{i:04d}.jpg" for i in range(2 * args.n)]
        photos[0].parent.mkdir()
        with ThreadPoolExecutor() as pool:
            list(pool.map(make_jpeg, photos, range(len(photos))))
        small = tmp / "small"
        small.mkdir()
        for p in photos[: args.n]:
            os.link(p, small / p.name)
        mb_per_file = sum(p.stat().st_size for p in photos) / len(photos) / 1e6

        embedder = Embedder.from_pretrained(model, mode=args.mode)
        fp32_rate, auto_rate, picked = default_speedup(
            small, model, args.batch_size, args.workers, args.turns
        )
        model_rate = model_only_rate(embedder, photos, args.n, args.batch_size)
        e2e_rate, failed = end_to_end_rate(small, embedder, args.batch_size, args.workers)
        draft_ms, full_ms = time_decodes(photos[:8], embedder.image_size)
        workers = args.workers or min(8, os.cpu_count() or 1)
        serial_rate, threaded_rate = decode_rates(embedder, photos[: 2 * args.n], workers)
        cosines, between = draft_cosines(embedder, photos[:8])
        rss_n = measure_peak_rss(small, model, args.batch_size, args.workers)
        rss_2n = measure_peak_rss(tmp / "all", model, args.batch_size, args.workers)

    rows = [
        ("model", f"{model_name} (dim {embedder.dim}, {embedder.image_size[0]}px)"),
        (
            "machine",
            f"{describe_machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        ),
        (
            "images",
            f"{args.n} x 4000x3000 JPEG q90, {mb_per_file:.1f} MB each; batch {args.batch_size}",
        ),
        ("mode of the rows below", embedder.describe_mode()),
        ("model-only (embed_pixels on decoded batches)", f"{model_rate:.2f} img/s"),
        (
            "end-to-end (index_paths: scan, decode, embed, write)",
            f"{e2e_rate:.2f} img/s ({failed} failed)",
        ),
        ("ratio end-to-end / model-only (goal >= 0.85)", f"{e2e_rate / model_rate:.2f}"),
        (
            f"end-to-end, fp32 (the default before auto) / auto ({picked}), medians of {args.turns}",
            f"{fp32_rate:.2f} / {auto_rate:.2f} img/s: **{auto_rate / fp32_rate:.2f}x** (goal >= 2.5)",
        ),
        ("decode ms/image with draft()", f"{draft_ms:.1f}"),
        ("decode ms/image full", f"{full_ms:.1f}"),
        (
            f"decode+preprocess img/s, 1 thread / {workers} threads",
            f"{serial_rate:.1f} / {threaded_rate:.1f}",
        ),
        (
            "cosine draft vs full decode, min / mean (goal >= 0.99)",
            f"{cosines.min():.4f} / {cosines.mean():.4f}",
        ),
        ("cosine between different photos, mean (for scale)", f"{between.mean():.4f}"),
        ("RSS after loading the model", f"{rss_n['loaded_mb']:.0f} MB"),
        (f"peak RSS while indexing {args.n} images", f"{rss_n['indexing_peak_mb']:.0f} MB"),
        (f"peak RSS while indexing {2 * args.n} images", f"{rss_2n['indexing_peak_mb']:.0f} MB"),
        (
            "process peak RSS (N / 2N; set by model loading)",
            f"{rss_n['process_peak_mb']:.0f} / {rss_2n['process_peak_mb']:.0f} MB",
        ),
    ]
    print("| measure | value |\n|---|---|")
    print("\n".join(f"| {name} | {value} |" for name, value in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
