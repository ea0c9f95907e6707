"""Embedding modes: which ones give interchangeable vectors, and which ones `auto` runs on this machine.

The one place for both rules. A mode's *family* names the vectors it makes: modes of one family give
vectors a library can mix (a measured minimum cosine to fp32 of at least 0.999 on photo-like images;
figures in docs/performance.md), so a library indexed in one mode is searched in another mode of its
family without re-indexing. `auto` picks, for images and for texts apart, the fastest mode whose
vectors are interchangeable with fp32 on this hardware.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

AUTO = "auto"
MODES = ("fp32", "int8", "bf16", "compile")  # what an Embedder runs; `auto` resolves to these
CHOICES = (AUTO, *MODES)

# Measured minimum cosines to fp32 on photo-like images (benchmarks/embed_speed.py, base-sized
# weights; the demo model in brackets): int8 0.9997 (0.9998), bf16 0.99997 (0.99998); compile runs
# the fp32 arithmetic. All are interchangeable with fp32, so all share its family. A mode whose
# vectors are not gets a family of its own here, and libraries keep the two apart.
FAMILIES = {"fp32": "fp32", "compile": "fp32", "int8": "fp32", "bf16": "fp32"}

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
    """`mode`, or InputError naming the choices."""
    if mode not in CHOICES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(CHOICES)}")
    return mode


def family(mode: str) -> str:
    """The family of a concrete mode's vectors (also of a mode an older library recorded)."""
    if mode not in FAMILIES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return FAMILIES[mode]


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
    """What `mode` runs on `device`: itself when it is a mode, this hardware's choice for auto.

    auto on the CPU: images in int8 where oneDNN's int8 matmuls run on AVX2 or better (VNNI or AMX
    make them faster still); else bf16 where the CPU computes in bf16 (AVX512-BF16, AMX); else fp32.
    Texts in bf16 where the CPU has it, else fp32.
    `flags` and `int8_kernels` default to this machine's.
    """
    check_mode(mode)
    if mode != AUTO:
        return Picked(mode, mode, "as asked")
    if device != "cpu":
        return Picked("fp32", "fp32", f"on {device}")
    flags = cpu_flags() if flags is None else flags
    if int8_kernels is None:
        from .quantized import onednn_int8_available

        int8_kernels = onednn_int8_available()
    bf16 = bool(flags & BF16_FLAGS)
    # Never int8 for texts: their int8 vectors measured a minimum cosine of 0.9993 on base-sized
    # weights but 0.9986 on the demo model, below 0.999.
    text_mode = "bf16" if bf16 else "fp32"
    if int8_kernels and flags & INT8_DOT_FLAGS:
        return Picked("int8", text_mode, "CPU with int8 dot products (VNNI/AMX)")
    if int8_kernels and "avx2" in flags:
        return Picked("int8", text_mode, "AVX2 CPU without VNNI: int8 about 2x fp32")
    if bf16:
        return Picked("bf16", "bf16", "CPU with bf16 arithmetic")
    return Picked("fp32", "fp32", "no faster interchangeable mode on this CPU")
