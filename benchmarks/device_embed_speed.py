"""Embedding speed on a device: transformers' SiglipModel against our Embedder modes, in one run
(the GPU benchmark; embed_speed.py is the CPU one with ONNX Runtime): on the CPU transformers
fp32 is the reference, on a GPU (`--device cuda`) transformers fp16.

Builds random google/siglip-base-patch16-224-shaped weights once (transformers SiglipModel(SiglipConfig()),
saved to a temporary directory with a small SentencePiece vocabulary and the hub's preprocessing
files), loads them into both implementations and measures, on the same inputs:
  - images/s: a batch of 8 pixel arrays of 224x224 (256 on a GPU; preprocessing excluded on both
    sides; on a GPU the pixels wait on the GPU for both, and a last row copies them from pinned
    host memory at every batch, as indexing does);
  - texts/s: a batch of 32 texts (256 on a GPU), tokenized to 64 tokens (padding="max_length",
    truncation=True);
plus the minimum cosine of each mode's unit embeddings to our fp32 embeddings.

Run by hand (not a test):  python benchmarks/device_embed_speed.py [--quick] [--cpu-time]
                           python benchmarks/device_embed_speed.py --device cuda [--modes fp32,fp16,bf16]

On a machine shared with other jobs, wall-clock rates swing by 2-3x from turn to turn; the turns are
interleaved and the best one is reported, but `--cpu-time` (one thread, per-thread CPU seconds) gives
ratios that do not depend on the neighbours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embed_speed import (  # noqa: E402  the CPU benchmark's inputs and timing
    IMAGE_BATCH,
    IMAGE_SIZE,
    TEXT_BATCH,
    TEXT_LENGTH,
    WORDS,
    build_checkpoint,
    run_round_robin,
)

from siglip_search import SiglipImageProcessor, SiglipModel, SiglipTokenizer  # noqa: E402
from siglip_search.devices import describe_device, resolve_device  # noqa: E402
from siglip_search.embedder import MODES, Embedder  # noqa: E402

GPU_IMAGE_BATCH, GPU_TEXT_BATCH = 256, 256


def make_inputs(
    image_batch: int = IMAGE_BATCH, text_batch: int = TEXT_BATCH
) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(1)
    pixels = rng.uniform(-1, 1, (image_batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    # 40 words per text: always more than 64 pieces, so every row is 63 pieces + </s>.
    texts = [" ".join(rng.choice(WORDS, 40)) for _ in range(text_batch)]
    return pixels, texts


def unit(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True)).cpu().numpy()  # .cpu() waits for a GPU


def transformers_runner(
    directory: Path,
    pixels: torch.Tensor,
    texts: list[str],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
):
    import transformers

    model = transformers.SiglipModel.from_pretrained(directory, dtype=dtype).eval().to(device)
    tokenizer = transformers.SiglipTokenizer.from_pretrained(directory)
    pixel_tensor = pixels.to(device=device, dtype=dtype)

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
        return unit(model.get_text_features(input_ids=ids.to(device)).pooler_output)

    return images, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed iterations")
    parser.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated Embedder modes ({', '.join(MODES)}; default: all on the CPU, "
        "fp32,fp16,bf16 on a GPU)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed in per-thread CPU seconds (stable on a busy machine)",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device) or torch.device("cpu")
    on_gpu = device.type != "cpu"
    default_modes = "fp32,fp16,bf16" if on_gpu else ",".join(MODES)
    modes = [m.strip() for m in (args.modes or default_modes).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    if "fp32" not in modes:
        modes.insert(0, "fp32")  # the cosine reference
    warmup, repeats = (1, 3) if args.quick else (2, 10)
    torch.set_num_threads(1 if args.cpu_time else os.cpu_count() or 1)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    warnings.filterwarnings("ignore")

    host_pixels, texts = make_inputs(*((GPU_IMAGE_BATCH, GPU_TEXT_BATCH) if on_gpu else ()))
    pixels = torch.from_numpy(host_pixels).to(device)  # model-only: the inputs wait on the device
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"building a base-sized random checkpoint in {directory} ...", flush=True)
        build_checkpoint(directory)
        runners = {
            "transformers fp32": transformers_runner(directory, pixels, texts, device=device)
        }
        if on_gpu:
            runners["transformers fp16"] = transformers_runner(
                directory, pixels, texts, torch.float16, device
            )
        model = SiglipModel.from_pretrained(directory, torch_dtype=torch.float32)
        tokenizer = SiglipTokenizer.from_pretrained(directory)
        processor = SiglipImageProcessor.from_pretrained(directory)
        for mode in modes:
            embedder = Embedder(
                model, tokenizer, processor, str(directory), mode=mode, device=device
            )
            runners[f"ours {mode}"] = (
                lambda e=embedder: e.embed_pixels(pixels),
                lambda e=embedder: e.embed_texts(texts),
            )
        if on_gpu and "fp16" in modes:
            # As indexing feeds it: each batch copied from pinned host memory, then embedded.
            fp16 = Embedder(model, tokenizer, processor, str(directory), mode="fp16", device=device)
            pinned = fp16.pixel_array(len(host_pixels))
            pinned[:] = host_pixels
            runners["ours fp16, pixels from pinned host memory"] = (
                lambda: fp16.embed_pixels(pinned),
                lambda: fp16.embed_texts(texts),
            )
        times, outputs = run_round_robin(runners, warmup, repeats, clock)
    print_table(
        times,
        outputs,
        warmup,
        repeats,
        "CPU seconds of one thread" if args.cpu_time else "wall clock",
        reference="transformers fp16" if on_gpu else "transformers fp32",
        where=describe_device(device),
        batches=(len(host_pixels), len(texts)),
    )


def print_table(
    times,
    outputs,
    warmup: int,
    repeats: int,
    clock: str,
    reference: str = "transformers fp32",
    where: str = "cpu",
    batches: tuple[int, int] = (IMAGE_BATCH, TEXT_BATCH),
) -> None:
    """Rates from the best of the timed turns (the least disturbed one); medians alongside."""
    ref_img, ref_txt = outputs["ours fp32"]
    base_img, base_txt = (min(t) for t in times[reference])
    images, texts = batches
    print(
        f"\n{where}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; batches of "
        f"{images} images {IMAGE_SIZE}px and {texts} texts x {TEXT_LENGTH} tokens; best (median) of "
        f"{repeats} turns after {warmup} warm-up, {clock}\n"
    )
    print(
        f"| implementation / mode | images/s | texts/s | images vs {reference} "
        f"| texts vs {reference} | min cosine to ours fp32 (images / texts) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, (t_img, t_txt) in times.items():
        e_img, e_txt = outputs[name]
        cos_img = float(np.min(np.sum(e_img * ref_img, axis=1)))
        cos_txt = float(np.min(np.sum(e_txt * ref_txt, axis=1)))
        print(
            f"| {name} | {images / min(t_img):.2f} ({images / statistics.median(t_img):.2f}) "
            f"| {texts / min(t_txt):.2f} ({texts / statistics.median(t_txt):.2f}) "
            f"| {base_img / min(t_img):.2f}x | {base_txt / min(t_txt):.2f}x | {cos_img:.5f} / {cos_txt:.5f} |"
        )


if __name__ == "__main__":
    main()
