"""The embedder's modes (how the model computes) and which of them give interchangeable vectors.

A library records the mode it was built in and accepts every mode of the same *vector family*, on
any device: a library indexed on a GPU in fp16 is searched on a laptop's CPU in fp32, and the
reverse. A mode is in fp32's family when, on every model and input measured, each vector stayed
within cosine INTERCHANGEABLE_COSINE of fp32's vector of the same photo or text
(MEASURED_MIN_COSINE); a mode that fell below it anywhere is a family of its own, and a library
built in it refuses the other families in one line. This is the one place that decides it: the
library (indexer/library.py) and anything that picks a mode for the user ask vector_family().
"""

from __future__ import annotations

from .errors import InputError

MODES = ("fp32", "fp16", "bf16", "int8", "compile")
INTERCHANGEABLE_COSINE = 0.999

# The lowest cosine between a mode's vector and fp32's, photo by photo and text by text, as
# (images, texts), measured on this project's CPU (torch 2.13): the demo model on data/samples'
# 300 photos and 128 vocabulary prompts; random google/siglip-base-patch16-224-shaped weights on 32
# of those photos and the same prompts. fp16 and bf16 cast the towers' weights, as on a GPU; fp32 on
# a GPU and `compile` run the fp32 arithmetic. Rerun: python benchmarks/mode_cosines.py
MEASURED_MIN_COSINE: dict[str, dict[str, tuple[float, float]]] = {
    "fp16": {"demo": (0.999999, 0.999999), "base": (0.999998, 0.999997)},
    "bf16": {"demo": (0.99989, 0.99995), "base": (0.99997, 0.99995)},
    "int8": {"demo": (0.99863, 0.99909), "base": (0.99973, 0.99976)},
}
# Modes that compute the fp32 arithmetic, up to the order of float additions.
FP32_ARITHMETIC = ("fp32", "compile")

HALF_PRECISION = {"fp16": "float16", "bf16": "bfloat16"}  # the torch dtype of each half mode
GPU_DEFAULT_MODE = "fp16"  # on CUDA and MPS; bf16 on request where the GPU has it


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def vector_family(mode: str) -> str:
    """'fp32' for every mode whose vectors are interchangeable with fp32's, else the mode itself."""
    check_mode(mode)
    if mode in FP32_ARITHMETIC:
        return "fp32"
    worst = min(min(pair) for pair in MEASURED_MIN_COSINE[mode].values())
    return "fp32" if worst >= INTERCHANGEABLE_COSINE else mode


def family_modes(mode: str) -> list[str]:
    """The modes whose vectors may share a library with `mode`'s."""
    return [m for m in MODES if vector_family(m) == vector_family(mode)]


def default_mode(device_type: str) -> str:
    """fp16 on a GPU (CUDA, MPS), fp32 on the CPU."""
    return GPU_DEFAULT_MODE if device_type in ("cuda", "mps") else "fp32"


def mode_for_library(recorded: str | None, device_type: str) -> str:
    """The mode to embed with for a library built in `recorded` (None: a new library), on a device
    of `device_type`: the device's default when it is in the library's family, else the recorded
    mode (int8, which only the CPU runs)."""
    default = default_mode(device_type)
    if recorded is None or vector_family(recorded) == vector_family(default):
        return default
    return recorded
