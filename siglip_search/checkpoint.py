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
    read_config_json,
)
from .errors import CheckpointError, ModelNotCachedError

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
    config = load_config(directory / "config.json") if cls.config_class is SiglipConfig else None
    if config is not None:
        return config
    data = read_config_json(directory / "config.json")
    key = "text_config" if cls.config_class is SiglipTextConfig else "vision_config"
    if data.get("model_type", "siglip") == "siglip":
        return cls.config_class.from_dict(data.get(key, {}))
    return cls.config_class.from_dict(data)


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


def save_model(model, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    data = config.to_dict()
    if isinstance(config, (SiglipTextConfig, SiglipVisionConfig)):
        data.setdefault("architectures", [type(model).__name__])
    (directory / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
