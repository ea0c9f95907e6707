"""Where the model runs: `auto` (the first CUDA GPU, then Apple's MPS, then the CPU) or a named
device, checked before any weights are read; which half precision a device supports; host memory
that copies to a GPU without stopping the host; and the batch size that suits a device."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .errors import InputError

AUTO = "auto"


def available_devices() -> list[str]:
    """This machine's devices in the order `auto` tries them, e.g. ['cuda:0', 'cuda:1', 'cpu']."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """None leaves a model where it is; 'auto' is the first of available_devices(); any other
    device is checked here, before any weights are read, and refused in one line naming the
    devices this machine has (torch's own errors name no remedy)."""
    if device is None:
        return None
    if device == AUTO:
        return torch.device(available_devices()[0])
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise _unusable(device, _first_line(exc)) from None
    reason = _why_missing(resolved)
    if reason is not None:
        raise _unusable(device, reason)
    return resolved


def _why_missing(device: torch.device) -> str | None:
    """Why `device` cannot be used here, or None when it can."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "" if torch.backends.cuda.is_built() else ": this torch was built without CUDA"
            return f"no CUDA GPU is visible{built}"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''}, numbered from 0"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "Apple's MPS backend is not available"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as exc:
        return _first_line(exc)[:200]
    return None


def _unusable(device: object, reason: str) -> InputError:
    here = ", ".join(available_devices())
    return InputError(
        f"device {str(device)!r} cannot be used on this machine ({reason}); use device='cpu' "
        f"or 'auto' (this machine has: {here})"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H200)', 'mps (Apple GPU)' or 'cpu', for progress lines."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return str(device)


def check_dtype(device: torch.device, dtype: torch.dtype, mode: str) -> None:
    """InputError when `device` cannot compute in `dtype` (bf16 needs an Ampere or later NVIDIA GPU,
    or macOS 14 on MPS); the CPU computes every float dtype (bf16 and fp16 slowly without native
    support)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "mps":
        try:
            supported = bool(torch.ones(1, dtype=dtype, device=device).add(1).isfinite().all())
        except (RuntimeError, TypeError):
            supported = False
    else:
        return
    if not supported:
        raise InputError(
            f"mode {mode!r} is not supported on {describe_device(device)}; use fp16 or fp32"
        )


def host_array(shape: tuple[int, ...], device: torch.device) -> np.ndarray:
    """A float32 array for inputs bound for `device`: page-locked (pinned) when it is a CUDA GPU, so
    that to_device copies it by DMA while the host goes on; plain memory otherwise."""
    pinned = device.type == "cuda"
    return torch.empty(shape, dtype=torch.float32, pin_memory=pinned).numpy()


def to_device(values: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """values on `device`; a copy from pinned memory does not wait (the results' copy back does)."""
    tensor = torch.as_tensor(values)
    if device.type == "cpu":
        return tensor
    return tensor.to(device, non_blocking=device.type == "cuda" and tensor.is_pinned())


# The CPU's batch: the embedder splits it into one chunk per core (parallel.py), and on this
# project's 2-core CPU images/s of a base-sized model did not grow past 8 images per batch.
CPU_BATCH_SIZE = 32
GPU_FIRST_BATCH, GPU_MAX_BATCH = 32, 1024
BATCH_GAIN = 1.05  # a doubled batch must be this much faster per image to be kept


def grow_batch_size(
    images_per_s: Callable[[int], float],
    first: int = GPU_FIRST_BATCH,
    largest: int = GPU_MAX_BATCH,
) -> int:
    """The batch size to use on a GPU: doubled from `first` while images_per_s(batch) improves by
    BATCH_GAIN and memory lasts, up to `largest`. images_per_s runs the model on one batch."""
    best, best_rate = first, images_per_s(first)
    size = first * 2
    while size <= largest:
        try:
            rate = images_per_s(size)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError, as is MPS's
            if not is_out_of_memory(exc):
                raise
            break
        if rate < best_rate * BATCH_GAIN:
            break
        best, best_rate, size = size, rate, size * 2
    return best


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)
