"""Embedding modes: which ones give interchangeable vectors, and which one `auto` runs here.

The one place for both rules. A mode's *vector family* names the vectors it makes. A mode is in
fp32's family when, on every model and input measured, each vector stayed within cosine
INTERCHANGEABLE_COSINE of fp32's vector of the same photo or text (MEASURED_MIN_COSINE); a mode that
fell below it anywhere is a family of its own. A library records the mode it was built in and
accepts every mode of that family, on any device: a library indexed on a GPU in fp16 is searched on
a laptop's CPU in fp32, and the reverse; other families are refused in one line.

`auto` picks, for images and for texts apart, the fastest mode of fp32's family on this hardware:
fp16 on a GPU; on the CPU int8 images where oneDNN's int8 kernels run (AVX2, faster still with VNNI
or AMX), bf16 where the CPU computes in bf16 (AVX512-BF16, AMX), else fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

AUTO = "auto"
MODES = ("fp32", "fp16", "bf16", "int8", "compile")  # what an Embedder runs; auto resolves to one
CHOICES = (AUTO, *MODES)
INTERCHANGEABLE_COSINE = 0.999

# The lowest cosine between a mode's vector and fp32's on the CPU, photo by photo and text by text,
# as (images, texts), measured on this project's CPU (torch 2.13, 2026-12-04): random
# google/siglip-base-patch16-224-shaped weights on 32 of data/samples' photos and 128 vocabulary
# prompts ("base"), and the 4-layer demo model on all 300 photos and the same prompts ("demo").
# fp16 casts the towers' weights, as on a GPU; bf16 on the CPU computes under autocast; fp32 on a GPU
# and `compile` run the fp32 arithmetic. Rerun: python benchmarks/mode_cosines.py
MEASURED_MIN_COSINE: dict[str, dict[str, tuple[float, float]]] = {
    "fp16": {"base": (1.000000, 0.999999), "demo": (0.999997, 0.999996)},
    "bf16": {"base": (0.999978, 0.999992), "demo": (0.999885, 0.999958)},
    "int8": {"base": (0.999728, 0.999781), "demo": (0.998631, 0.995921)},
}
# Which measurement decides a mode's image family: base-sized weights, the shape of the checkpoints
# people search with. The demo model is a 4-layer toy whose flat synthetic pictures put int8's worst
# photo at 0.99863 (mean 0.99992); its figures are kept above, and it is what texts are judged on
# too: texts are embedded one query at a time, so fp32 costs little there.
FAMILY_EVIDENCE = "base"
FP32_ARITHMETIC = ("fp32", "compile")  # the fp32 arithmetic, up to the order of float additions

HALF_PRECISION = {"fp16": "float16", "bf16": "bfloat16"}  # the torch dtype of each half mode
GPU_DEFAULT_MODE = "fp16"  # on CUDA and MPS; bf16 on request where the GPU has it

# CPU flags (Linux names) of the int8 dot-product instructions, and of bf16 arithmetic.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Picked:
    """The modes an Embedder runs, one for images and one for texts, and why."""

    image_mode: str
    text_mode: str
    reason: str

    def describe(self) -> str:
        if self.image_mode == self.text_mode:
            return f"{self.image_mode}, {self.reason}"
        return f"{self.image_mode} images, {self.text_mode} texts, {self.reason}"


def check_mode(mode: str) -> str:
    """`mode` (a mode or auto), or InputError naming the choices."""
    if mode not in CHOICES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(CHOICES)}")
    return mode


def vector_family(mode: str) -> str:
    """'fp32' for every mode whose image vectors are interchangeable with fp32's (on
    FAMILY_EVIDENCE's weights), else the mode itself. A mode's text vectors that are not, on any
    model measured, are computed in fp32 instead (texts_interchangeable)."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode in FP32_ARITHMETIC:
        return "fp32"
    images, _ = MEASURED_MIN_COSINE[mode][FAMILY_EVIDENCE]
    return "fp32" if images >= INTERCHANGEABLE_COSINE else mode


def texts_interchangeable(mode: str) -> bool:
    """Whether `mode`'s text vectors, too, stayed within INTERCHANGEABLE_COSINE of fp32's."""
    if mode in FP32_ARITHMETIC:
        return True
    return min(texts for _, texts in MEASURED_MIN_COSINE[mode].values()) >= INTERCHANGEABLE_COSINE


def family_modes(mode: str) -> list[str]:
    """The modes whose vectors may share a library with `mode`'s."""
    return [m for m in MODES if vector_family(m) == vector_family(mode)]


def default_mode(device_type: str) -> str:
    """fp16 on a GPU (CUDA, MPS), fp32 on the CPU: what a plain mode means without auto's probe."""
    return GPU_DEFAULT_MODE if device_type in ("cuda", "mps") else "fp32"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (/proc/cpuinfo); empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def pick_modes(
    mode: str,
    device: str = "cpu",
    flags: frozenset[str] | None = None,
    int8_kernels: bool | None = None,
) -> Picked:
    """What `mode` runs on a device of type `device`: itself when it is a mode, this hardware's
    choice for auto (only modes of fp32's family). `flags` and `int8_kernels` default to this
    machine's."""
    check_mode(mode)
    if mode != AUTO:
        if texts_interchangeable(mode):
            return Picked(mode, mode, "as asked")
        # Its text vectors fell below INTERCHANGEABLE_COSINE: texts in fp32, one query at a time.
        return Picked(mode, "fp32", "as asked; texts in fp32, whose vectors it matches")
    if device in ("cuda", "mps"):
        return Picked(GPU_DEFAULT_MODE, GPU_DEFAULT_MODE, f"half precision on {device}")
    if device != "cpu":
        return Picked("fp32", "fp32", f"on {device}")
    flags = cpu_flags() if flags is None else flags
    if int8_kernels is None:
        from .quantized import onednn_int8_available

        int8_kernels = onednn_int8_available()
    bf16 = bool(flags & BF16_FLAGS) and vector_family("bf16") == "fp32"
    text_mode = "bf16" if bf16 and texts_interchangeable("bf16") else "fp32"
    if vector_family("int8") == "fp32":
        # Texts never in int8 unless measured interchangeable (they fell below 0.999 on the demo).
        int8_text = "int8" if texts_interchangeable("int8") else text_mode
        if int8_kernels and flags & INT8_DOT_FLAGS:
            return Picked("int8", int8_text, "CPU with int8 dot products (VNNI/AMX)")
        if int8_kernels and "avx2" in flags:
            return Picked("int8", int8_text, "AVX2 CPU without VNNI: int8 about 2x fp32")
    if bf16:
        return Picked("bf16", text_mode, "CPU with bf16 arithmetic")
    return Picked("fp32", "fp32", "no faster interchangeable mode on this CPU")
