"""Hugging Face checkpoint layout: resolve local dirs or hub ids, strict load, save."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import (
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
    load_config,
    load_tower_config,
)
from .errors import CheckpointError, InputError, ModelNotCachedError

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CHECKPOINT_FILES = [
    "config.json",
    WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    "model-*.safetensors",
    "spiece.model",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
]
# Buffers that old checkpoints carry and that the model recomputes.
_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_checkpoint_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint directory, or the cached snapshot of a hub id (downloaded if allowed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{text} is a file; pass the checkpoint directory that holds config.json")
    if not _HUB_ID.match(text):
        raise CheckpointError(f"checkpoint directory {text} does not exist")
    return _snapshot(text, revision)


def _snapshot(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(f"{repo_id} is not a local directory and huggingface_hub is not installed") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILES, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotCachedError(_not_cached(repo_id, "HF_HUB_OFFLINE is set")) from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotCachedError(_not_cached(repo_id, reason)) from None


def _not_cached(repo_id: str, reason: str) -> str:
    return (
        f"model {repo_id} is not in the local Hugging Face cache and could not be downloaded ({reason}). "
        "Download it on a machine with network access (huggingface-cli download "
        f"{repo_id}) or pass a local checkpoint directory that holds config.json and model.safetensors"
    )


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / WEIGHTS_INDEX_NAME
    if (directory / WEIGHTS_NAME).is_file():
        files = [directory / WEIGHTS_NAME]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(f"{directory} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_read_safetensors(file))
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


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
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


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str):
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise CheckpointError(f"unknown torch_dtype {dtype!r}") from None
    return dtype


def load_model(cls, name_or_path, dtype=None, device=None, revision=None, **_):
    directory = resolve_checkpoint_dir(name_or_path, revision)
    config = config_for(cls, directory)
    model = cls(config)
    found = {k: v for k, v in read_state_dict(directory).items() if not _IGNORED_KEYS.search(k)}
    expected = model.state_dict()
    if cls.key_prefix and any(k.startswith(cls.key_prefix) for k in found):
        # a tower alone loads from a full SiglipModel checkpoint too
        found = {k: v for k, v in found.items() if k.startswith(cls.key_prefix)}
    elif cls.key_prefix:  # transformers 5 saves a tower alone without the prefix
        found = {cls.key_prefix + k: v for k, v in found.items()}
    check_state_dict(expected, found, str(directory))
    target = _resolve_dtype(dtype)
    if dtype == "auto":
        target = next(iter(found.values())).dtype
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in found.items()}, strict=True)
    if target is not None:
        model.to(target)
    if device is not None and device != "auto":
        model.to(device)
    model.name_or_path = str(name_or_path)
    return model.eval()


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
        raise InputError("safe_serialization=False is not supported: siglip_search writes only safetensors")
    limit = parse_shard_size(max_shard_size) if max_shard_size is not None else None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    data = config.to_dict()
    if isinstance(config, (SiglipTextConfig, SiglipVisionConfig)):
        data.setdefault("architectures", [type(model).__name__])
    (directory / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    shards = split_into_shards(state, limit) if limit is not None else [state]
    names = [WEIGHTS_NAME] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]
    _remove_stale_weights(directory, keep=set(names))
    for name, shard in zip(names, shards, strict=True):
        tmp = directory / (name + ".tmp")
        save_file(shard, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / name)
    if len(shards) > 1:
        index = {
            "metadata": {
                "total_parameters": sum(v.numel() for v in state.values()),
                "total_size": sum(v.numel() * v.element_size() for v in state.values()),
            },
            "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard},
        }
        (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


_SHARD_FILE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B)\s*", re.IGNORECASE)
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_shard_size(size: int | str) -> int:
    """Bytes from an int or "50KB" / "5GB" (powers of 1000, as transformers) or "64MiB" (powers of 1024)."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise InputError(f"max_shard_size must be a positive int of bytes or like '5GB' or '500MiB', got {size!r}")
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
