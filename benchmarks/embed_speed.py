"""Embedding speed on CPU: transformers fp32 and ONNX Runtime against our Embedder modes, in one run.

Builds random google/siglip-base-patch16-224-shaped weights once (transformers SiglipModel(SiglipConfig()),
saved to a temporary directory with a small SentencePiece vocabulary and the hub's preprocessing
files), loads them into transformers and ours, exports transformers' towers to ONNX Runtime (fp32,
and int8 by quantize_dynamic: see onnx_engine.py) and measures, on the same inputs:
  - images/s: a batch of 8 photo-like 224x224 images (smooth colour fields, shapes and sensor-like
    noise), as pixel arrays: preprocessing excluded everywhere;
  - texts/s: a batch of 32 texts, tokenized to 64 tokens (padding="max_length", truncation=True);
plus the minimum cosine of each one's unit embeddings to our fp32 embeddings, and the CPU's flags.

Run by hand (not a test):
  python benchmarks/embed_speed.py [--quick] [--modes auto,fp32,int8,...] [--cpu-time] [--no-onnx]

On a machine shared with other jobs, wall-clock rates swing by 2-3x from turn to turn; the turns are
interleaved and the best one is reported, but `--cpu-time` (one thread, per-thread CPU seconds) gives
ratios that do not depend on the neighbours.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_engine
import sentencepiece as spm
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siglip_search import SiglipImageProcessor, SiglipModel, SiglipTokenizer  # noqa: E402
from siglip_search.embedder import Embedder  # noqa: E402
from siglip_search.modes import CHOICES, cpu_flags  # noqa: E402

# The flags that decide the fast modes (siglip_search/modes.py), printed with the results.
SPEED_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
)
SPEED_FLAGS += ("amx_int8", "amx_bf16")

IMAGE_BATCH, TEXT_BATCH, TEXT_LENGTH, IMAGE_SIZE = 8, 32, 64, 224
WORDS = (
    "a photo of the red blue green small large dog cat bird car street beach mountain river city "
    "night sunset forest snow people child boat bicycle house garden flower tree sky cloud"
).split()


def build_checkpoint(directory: Path) -> None:
    """Random base-sized SigLIP weights saved by transformers, plus tokenizer and preprocessor files."""
    import transformers

    torch.manual_seed(0)
    model = transformers.SiglipModel(transformers.SiglipConfig()).eval()
    model.save_pretrained(directory)
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(WORDS, 12)) for _ in range(400)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buffer,
        vocab_size=120,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    (directory / "spiece.model").write_bytes(buffer.getvalue())
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": TEXT_LENGTH, "model_input_names": ["input_ids"]})
    )
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                "resample": 3,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )
    )


def photo_like(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """(3, size, size) pixel values in [-1, 1] (SigLIP's mean and std 0.5) of a photo-like picture: a
    smooth colour field, a few filled shapes and sensor-like noise. Cosines between embeddings are
    measured on these, not on uniform noise, which no camera makes."""
    low = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
    pixels = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    image = Image.fromarray(
        np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    )
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, size - 40, 2))
        dx, dy = (int(v) for v in rng.integers(20, size // 2, 2))
        draw.ellipse((x, y, x + dx, y + dy), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5


def make_inputs() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(1)
    pixels = np.stack([photo_like(rng) for _ in range(IMAGE_BATCH)])
    # 40 words per text: always more than 64 pieces, so every row is 63 pieces + </s>.
    texts = [" ".join(rng.choice(WORDS, 40)) for _ in range(TEXT_BATCH)]
    return pixels, texts


def run_round_robin(
    runners: dict[str, tuple[Callable, Callable]],
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
):
    """Seconds per batch for every runner, measured in turns so that a noisy neighbour hits all alike."""
    times = {name: ([], []) for name in runners}
    outputs = {}
    for name, (images, texts) in runners.items():
        start = time.perf_counter()
        for _ in range(warmup):
            outputs[name] = (images(), texts())
        print(f"  warm-up {name}: {time.perf_counter() - start:.0f}s", flush=True)
    for _ in range(repeats):
        for name, (images, texts) in runners.items():
            for fn, bucket in ((images, times[name][0]), (texts, times[name][1])):
                start = clock()
                fn()
                bucket.append(clock() - start)
    return times, outputs


def unit(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


def transformers_runner(directory: Path, pixels: np.ndarray, texts: list[str]):
    import transformers

    model = transformers.SiglipModel.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = transformers.SiglipTokenizer.from_pretrained(directory)
    pixel_tensor = torch.from_numpy(pixels)

    @torch.inference_mode()
    def images() -> np.ndarray:
        return unit(model.get_image_features(pixel_values=pixel_tensor).pooler_output)

    @torch.inference_mode()
    def text() -> np.ndarray:
        ids = tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=TEXT_LENGTH,
            return_tensors="pt",
        )["input_ids"]
        return unit(model.get_text_features(input_ids=ids).pooler_output)

    return images, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed iterations")
    parser.add_argument(
        "--modes",
        default=",".join(CHOICES),
        help=f"comma-separated Embedder modes ({', '.join(CHOICES)})",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed in per-thread CPU seconds (stable on a busy machine)",
    )
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed turns (default 10, --quick 3)"
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in CHOICES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(CHOICES)}")
    if "fp32" not in modes:
        modes.insert(0, "fp32")  # the cosine reference
    warmup, repeats = (1, 3) if args.quick else (2, 10)
    repeats = args.repeats or repeats
    threads = 1 if args.cpu_time else os.cpu_count() or 1
    torch.set_num_threads(threads)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    warnings.filterwarnings("ignore")

    pixels, texts = make_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"building a base-sized random checkpoint in {directory} ...", flush=True)
        build_checkpoint(directory)
        runners = {"transformers fp32": transformers_runner(directory, pixels, texts)}
        model = SiglipModel.from_pretrained(directory, torch_dtype=torch.float32)
        tokenizer = SiglipTokenizer.from_pretrained(directory)
        processor = SiglipImageProcessor.from_pretrained(directory)
        if not args.no_onnx:
            runners.update(onnx_runners(directory, tokenizer, pixels, texts, threads))
        for mode in modes:
            embedder = Embedder(model, tokenizer, processor, str(directory), mode=mode)
            name = f"ours {mode}" + (f" ({embedder.picked.describe()})" if mode == "auto" else "")
            runners[name] = (
                lambda e=embedder: e.embed_pixels(pixels),
                lambda e=embedder: e.embed_texts(texts),
            )
        times, outputs = run_round_robin(runners, warmup, repeats, clock)
    clock_name = "CPU seconds of one thread" if args.cpu_time else "wall clock"
    print_table(times, outputs, warmup, repeats, clock_name)


def onnx_runners(directory: Path, tokenizer, pixels: np.ndarray, texts: list[str], threads: int):
    out = directory / "onnx"
    out.mkdir()
    start = time.perf_counter()
    onnx_engine.export_towers(directory, out, IMAGE_SIZE, TEXT_LENGTH)
    print(f"  exported to ONNX and quantized: {time.perf_counter() - start:.0f}s", flush=True)
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_LENGTH)[
        "input_ids"
    ]
    input_ids = np.asarray(ids, dtype=np.int64)
    return {
        name: onnx_engine.runner(out, suffix, pixels, input_ids, threads)
        for name, (suffix, _) in onnx_engine.VARIANTS.items()
    }


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def describe_machine() -> str:
    flags = cpu_flags()
    have = [f for f in SPEED_FLAGS if f in flags]
    lacking = [f for f in SPEED_FLAGS if f not in flags]
    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs; "
        f"flags: {' '.join(have) or '(none read)'}; without: {' '.join(lacking) or '-'}"
    )


def print_table(times, outputs, warmup: int, repeats: int, clock: str) -> None:
    """Rates by the medians of the timed turns (best turn in brackets), against transformers fp32,
    ONNX Runtime fp32 and ONNX Runtime's fastest variant whose cosine to fp32 is >= 0.999."""
    ref_img, ref_txt = outputs["ours fp32"]
    cosines = {
        name: tuple(
            float(np.min(np.sum(e * r, axis=1)))
            for e, r in zip(outputs[name], (ref_img, ref_txt), strict=True)
        )
        for name in times
    }
    median = {name: tuple(statistics.median(t) for t in pair) for name, pair in times.items()}
    base = median["transformers fp32"]
    onnx_names = [n for n in times if n.startswith("ONNX Runtime")]
    ort_fp32 = median.get("ONNX Runtime fp32")
    # ONNX Runtime's best safe mode, for images and for texts apart
    ort_best = [
        min((median[n][i] for n in onnx_names if cosines[n][i] >= 0.999), default=None)
        for i in (0, 1)
    ]
    print(
        f"\n{describe_machine()}\n{torch.get_num_threads()} threads, torch {torch.__version__}"
        + (f", {onnx_engine.version()}" if onnx_names else "")
        + f"; batches of {IMAGE_BATCH} images {IMAGE_SIZE}px and {TEXT_BATCH} texts x {TEXT_LENGTH} tokens; "
        f"median (best) of {repeats} turns after {warmup} warm-up, {clock}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print(
        "| engine / mode | images/s | texts/s | vs transformers fp32 (images / texts) "
        "| vs ONNX Runtime fp32 | vs ONNX Runtime's best with cosine >= 0.999 "
        "| min cosine to ours fp32 (images / texts) |"
    )
    print("|---|---:|---:|---|---|---|---|")
    for name, (t_img, t_txt) in times.items():
        m_img, m_txt = median[name]

        def ratio(ref: float | None, mine: float) -> str:
            return f"{ref / mine:.2f}x" if ref else "-"

        print(
            f"| {name} | {IMAGE_BATCH / m_img:.2f} ({IMAGE_BATCH / min(t_img):.2f}) "
            f"| {TEXT_BATCH / m_txt:.2f} ({TEXT_BATCH / min(t_txt):.2f}) "
            f"| {ratio(base[0], m_img)} / {ratio(base[1], m_txt)} "
            f"| {ratio(ort_fp32 and ort_fp32[0], m_img)} / {ratio(ort_fp32 and ort_fp32[1], m_txt)} "
            f"| {ratio(ort_best[0], m_img)} / {ratio(ort_best[1], m_txt)} "
            f"| {cosines[name][0]:.5f} / {cosines[name][1]:.5f} |"
        )


if __name__ == "__main__":
    main()
