"""Which modes give interchangeable vectors: the minimum cosine of each mode's vectors to fp32's.

For the demo model and random google/siglip-base-patch16-224-shaped weights, on the bundled sample
photos (data/samples, decoded as the indexer decodes them) and prompts made from the bundled tag
vocabulary: every mode on --device against fp32 on the CPU (the laptop that searches a library
indexed elsewhere), photo by photo and text by text. These figures back
siglip_search/modes.py's MEASURED_MIN_COSINE, which decides which modes share a library: a mode
whose minimum falls below INTERCHANGEABLE_COSINE (0.999) anywhere is a family of its own.

Run by hand (not a test):
    python benchmarks/mode_cosines.py [--device cuda] [--modes fp16,bf16,int8] [--images 300]
        [--base-images 32] [--texts 128] [--models demo,base]
The base-sized model runs at about 2 images/s in fp32 on a 2-core CPU and far slower in fp16 and
bf16 without native support: --base-images keeps it to minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from index_speed import random_base_checkpoint  # noqa: E402

from indexer.decode import decode_image  # noqa: E402
from indexer.vocabulary import load_vocabulary  # noqa: E402
from siglip_search.devices import describe_device, resolve_device  # noqa: E402
from siglip_search.embedder import Embedder  # noqa: E402
from siglip_search.modes import INTERCHANGEABLE_COSINE  # noqa: E402
from siglip_search.resources import DEMO_MODEL, SAMPLES  # noqa: E402


def embed_all(embedder: Embedder, pixels: np.ndarray, texts: list[str]):
    """(image vectors, text vectors, seconds), in batches of 16 images and 32 texts."""
    start = time.perf_counter()
    images = np.concatenate(
        [embedder.embed_pixels(pixels[i : i + 16]) for i in range(0, len(pixels), 16)]
    )
    words = np.concatenate(
        [embedder.embed_texts(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    )
    return images, words, time.perf_counter() - start


def measure(model: str, photos: list[Path], texts: list[str], modes: list[str], device: str):
    reference = Embedder.from_pretrained(model, mode="fp32", device="cpu")
    pixels = np.stack(
        [
            reference.preprocess_image(decode_image(p, target_size=reference.image_size).image)
            for p in photos
        ]
    )
    ref_images, ref_texts, seconds = embed_all(reference, pixels, texts)
    between = (ref_images @ ref_images.T)[~np.eye(len(photos), dtype=bool)]
    print(
        f"  fp32 on the CPU: {seconds:.1f} s; cosine between different photos: mean "
        f"{between.mean():.4f}, max {between.max():.5f}",
        flush=True,
    )
    rows = []
    for mode in modes:
        embedder = Embedder.from_pretrained(model, mode=mode, device=device)
        images, words, seconds = embed_all(embedder, pixels, texts)
        image_cos, text_cos = (images * ref_images).sum(1), (words * ref_texts).sum(1)
        rows.append((mode, embedder.describe(), image_cos, text_cos, seconds))
        print(f"  {mode}: {seconds:.1f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where the modes run (fp32 reference: cpu)")
    parser.add_argument("--modes", default=None, help="default: fp16,bf16,int8 (no int8 on a GPU)")
    parser.add_argument("--images", type=int, default=300, help="sample photos, demo model")
    parser.add_argument("--base-images", type=int, default=32, help="sample photos, base model")
    parser.add_argument("--texts", type=int, default=128, help="vocabulary prompts")
    parser.add_argument("--models", default="demo,base")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    on_cpu = device is None or device.type == "cpu"
    modes = (args.modes or ("fp16,bf16,int8" if on_cpu else "fp16,bf16")).split(",")
    photos = sorted(SAMPLES.glob("*.jpg"))
    texts = [f"a photo of {tag.terms[0]}" for tag in load_vocabulary(None).tags][: args.texts]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "demo":
                model, count = str(DEMO_MODEL), args.images
            else:
                model, count = str(random_base_checkpoint(Path(tmp) / "base")), args.base_images
            print(f"{name}: {count} photos, {len(texts)} texts", flush=True)
            results[name] = measure(model, photos[:count], texts, modes, args.device)
    where = describe_device(device) if device is not None else "cpu"
    print(f"\nEach mode on {where} against fp32 on the CPU; min (mean) cosine, photo by photo\n")
    print("| model | mode | images | texts | interchangeable (>= 0.999) |")
    print("|---|---|---:|---:|---|")
    for name, rows in results.items():
        for mode, described, image_cos, text_cos, _ in rows:
            worst = min(image_cos.min(), text_cos.min())
            print(
                f"| {name} | {mode} ({described}) | {image_cos.min():.6f} ({image_cos.mean():.6f}) "
                f"| {text_cos.min():.6f} ({text_cos.mean():.6f}) "
                f"| {'yes' if worst >= INTERCHANGEABLE_COSINE else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
