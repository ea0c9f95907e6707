"""Hugging Face checkpoint layout: strict load (one file or shards) and save of a model's weights."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path, write_atomic
from .config import (
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
    load_config,
    load_tower_config,
    read_config_json,
)
from .devices import resolve_device
from .errors import CheckpointError, InputError
from .hub import resolve_checkpoint_dir

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Buffers that old checkpoints carry and that the model recomputes.
_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / WEIGHTS_NAME).is_file():
        return _read_safetensors(directory / WEIGHTS_NAME)
    if (directory / WEIGHTS_INDEX_NAME).is_file():
        return _read_shards(directory)
    raise CheckpointError(_no_safetensors(directory))


def _no_safetensors(directory: Path) -> str:
    message = f"{directory} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}"
    pickles = [p.name for p in sorted(directory.glob("pytorch_model*.bin"))]
    if pickles:
        # torch.load of a pickle can run code; safetensors cannot, so only safetensors is read.
        message += (
            f"; it has {', '.join(pickles[:2])}{' ...' if len(pickles) > 2 else ''} (PyTorch pickle), which "
            "siglip_search does not read. Convert it once where you trust the file, e.g. "
            'python -c "import torch; from safetensors.torch import save_file; '
            "save_file(torch.load('pytorch_model.bin', weights_only=True), "
            "'model.safetensors', metadata={'format': 'pt'})\" in that directory"
        )
    return message


def _read_shards(directory: Path) -> dict[str, torch.Tensor]:
    """The shards an index names. The index says which file holds each tensor; a shard that holds a
    tensor the index gives to another file (or to none) comes from a different save and is refused,
    instead of letting whichever file is read last win."""
    index = directory / WEIGHTS_INDEX_NAME
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v == Path(v).name and v not in ("", ".", "..")
        for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"{index} is not a valid safetensors index: weight_map must map tensor names "
            "to shard file names in the same directory"
        )
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        shard = _read_safetensors(directory / name)
        listed = {k for k, v in weight_map.items() if v == name}
        stray = sorted(set(shard) - listed - {k for k in shard if _IGNORED_KEYS.search(k)})
        absent = sorted(listed - set(shard))
        if stray or absent:
            what = (
                f"holds {_first(stray)}, which {WEIGHTS_INDEX_NAME} does not assign to it"
                if stray
                else f"lacks {_first(absent)}, which {WEIGHTS_INDEX_NAME} assigns to it"
            )
            raise CheckpointError(
                f"{directory / name} {what}: the shards and the index come from different "
                "saves; download the checkpoint again"
            )
        state.update(shard)
    return state


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"weights file {file} is missing")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{file} is corrupt or truncated: {exc}") from None


def config_for(cls, directory: Path):
    if cls.config_class is SiglipConfig:
        return load_config(directory / "config.json")
    return load_tower_config(cls.config_class, directory / "config.json")


def check_state_dict(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str
) -> None:
    """Strict matching: names what is in the code but not in the checkpoint, and the reverse."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + _first(missing))
    if unexpected:
        problems.append("unexpected tensors: " + _first(unexpected))
    if shapes:
        problems.append("shape mismatches: " + _first(shapes))
    if problems:
        raise CheckpointError(f"{where} does not match the model config; " + "; ".join(problems))


def _first(items: list[str], n: int = 8) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _resolve_dtype(dtype) -> torch.dtype | str | None:
    """None, "auto", or a floating torch dtype (a name such as "bfloat16" is looked up in torch)."""
    if dtype is None or dtype == "auto":
        return dtype
    return _floating_dtype(dtype)


def _floating_dtype(dtype) -> torch.dtype:
    """A floating torch dtype, or its name looked up in torch."""
    resolved = (
        getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    )
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise InputError(
            f"torch_dtype must be 'auto', a floating-point torch dtype or its name ('float32', 'float16', "
            f"'bfloat16'), got {dtype!r}"
        )
    return resolved


def _auto_dtype(directory: Path, state: dict[str, torch.Tensor]) -> torch.dtype:
    """transformers' dtype="auto": config.json's dtype (torch_dtype before transformers 5), else the first
    floating-point tensor's dtype."""
    data = read_config_json(directory / "config.json")
    named = data.get("dtype") or data.get("torch_dtype")
    if named not in (None, "auto"):
        try:
            return _floating_dtype(named)
        except InputError:
            raise CheckpointError(
                f"{directory / 'config.json'}: dtype {named!r} is not a floating torch dtype"
            ) from None
    return next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)


def load_model(
    cls,
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
):
    """dtype None loads float32 whatever the file holds (transformers 4's default); "auto" keeps the
    checkpoint's dtype as transformers 5 does by default; a dtype casts to it. The keyword-only
    arguments are the hub options (see hub.resolve_checkpoint_dir)."""
    target = _resolve_dtype(dtype)
    target_device = resolve_device(device)
    directory = resolve_checkpoint_dir(
        name_or_path, revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    config = config_for(cls, directory)
    model = cls(config)
    found = {k: v for k, v in read_state_dict(directory).items() if not _IGNORED_KEYS.search(k)}
    expected = model.state_dict()
    if cls.key_prefix and any(k.startswith(cls.key_prefix) for k in found):
        # a tower alone loads from a full SiglipModel checkpoint too
        found = {k: v for k, v in found.items() if k.startswith(cls.key_prefix)}
    elif cls.key_prefix:  # transformers 5 saves a tower alone without the prefix
        found = {cls.key_prefix + k: v for k, v in found.items()}
    try:
        check_state_dict(expected, found, str(directory))
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + _defaulted_note(cls, directory)) from None
    if target == "auto":
        target = _auto_dtype(directory, found)
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in found.items()}, strict=True)
    if target is not None:
        model.to(target)
    if target_device is not None:
        model.to(target_device)
    model.name_or_path = str(name_or_path)
    return model.eval()


def _defaulted_note(cls, directory: Path) -> str:
    """Why the shapes may be off: a config.json without a tower's settings gets base-size defaults."""
    if cls.config_class is not SiglipConfig:
        return ""
    data = read_config_json(directory / "config.json")
    absent = [key for key in ("text_config", "vision_config") if not data.get(key)]
    if not absent:
        return ""
    return f" ({' and '.join(absent)} absent from config.json, so the base-size defaults were used)"


def save_model(
    model,
    directory: str | os.PathLike,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str | None = None,
    safe_serialization: bool = True,
) -> None:
    """config.json and safetensors weights, split like transformers when max_shard_size is given:
    model-00001-of-0000N.safetensors files and model.safetensors.index.json."""
    if not safe_serialization:
        raise InputError(
            "safe_serialization=False is not supported: siglip_search writes only safetensors"
        )
    limit = parse_shard_size(max_shard_size) if max_shard_size is not None else None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    data = config.to_dict()
    if isinstance(config, (SiglipTextConfig, SiglipVisionConfig)):
        data.setdefault("architectures", [type(model).__name__])
    state = {
        k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()
    }
    _record_dtype(
        data, next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    )
    write_atomic(directory / "config.json", _json_bytes(data))
    shards = split_into_shards(state, limit) if limit is not None else [state]
    names = (
        [WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    _remove_stale_weights(directory, keep=set(names))
    for name, shard in zip(names, shards, strict=True):
        with atomic_path(directory / name) as temp:
            save_file(shard, str(temp), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {
            "metadata": {
                "total_parameters": sum(v.numel() for v in state.values()),
                "total_size": sum(v.numel() * v.element_size() for v in state.values()),
            },
            "weight_map": {
                key: name for name, shard in zip(names, shards, strict=True) for key in shard
            },
        }
        write_atomic(directory / WEIGHTS_INDEX_NAME, _json_bytes(index))


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _record_dtype(data: dict, dtype: torch.dtype) -> None:
    """config.json's dtype names the weights written, as transformers 5 writes it: a value kept from
    the loaded file would make transformers' dtype="auto" (its default) cast float32 weights to float16."""
    name = str(dtype).removeprefix("torch.")
    data.pop("torch_dtype", None)
    data["dtype"] = name
    for part in ("text_config", "vision_config"):
        sub = data.get(part)
        if isinstance(sub, dict) and ("dtype" in sub or "torch_dtype" in sub):
            sub.pop("torch_dtype", None)
            sub["dtype"] = name


_SHARD_FILE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B)\s*", re.IGNORECASE)
_UNITS = {
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_shard_size(size: int | str) -> int:
    """Bytes from an int or "50KB" / "5GB" (powers of 1000, as transformers) or "64MiB" (powers of 1024)."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise InputError(
            f"max_shard_size must be a positive int of bytes or like '5GB' or '500MiB', got {size!r}"
        )
    return int(float(match[1]) * _UNITS[match[2].upper()])


def split_into_shards(state: dict[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """huggingface_hub's split (what transformers uses): tensors in order; a shard is closed when the next
    tensor would take it past the limit; a tensor larger than the limit gets a shard of its own."""
    shards: list[dict[str, torch.Tensor]] = []
    current: dict[str, torch.Tensor] = {}
    current_size = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if size > limit:
            shards.append({key: tensor})
            continue
        if current and current_size + size > limit:
            shards.append(current)
            current, current_size = {}, 0
        current[key] = tensor
        current_size += size
    if current:
        shards.append(current)
    return shards


def _remove_stale_weights(directory: Path, keep: set[str]) -> None:
    """Weights of an earlier save that this one does not overwrite (the loader prefers model.safetensors
    over an index, so a stale single file would shadow new shards)."""
    for path in directory.iterdir():
        stale = path.name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD_FILE.fullmatch(path.name)
        if stale and path.name not in keep and path.is_file():
            path.unlink()
