"""Where a checkpoint lives: a local directory, or a hub id's snapshot in the Hugging Face cache.

The loaders (config, model, tokenizer, image processor, processor) all resolve their path here, so a
hub id is downloaded once for all of them and a missing one fails with the same remedy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .errors import CheckpointError, InputError, ModelNotCachedError, unexpected_keywords

# What a snapshot download fetches: the files the loaders read (checkpoint.py's weight file names).
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "spiece.model",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# transformers' from_pretrained download options, honoured for hub ids (a local directory needs none).
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token")
# transformers' loading options that change nothing here, accepted by name so that code written for
# transformers runs as it is: no remote code is ever run, only safetensors are read, there is one attention
# implementation and one tokenizer (exact, so use_fast has no choice to make), and downloads go with
# huggingface_hub's defaults. `subfolder` is accepted empty only (see loader_options).
IGNORED_OPTIONS = frozenset(
    {
        "trust_remote_code",
        "low_cpu_mem_usage",
        "attn_implementation",
        "use_safetensors",
        "force_download",
        "resume_download",
        "proxies",
        "subfolder",
        "_from_auto",
        "use_fast",
    }
)


def hub_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Takes the HUB_OPTIONS out of a from_pretrained's kwargs, for resolve_checkpoint_dir."""
    return {key: kwargs.pop(key) for key in HUB_OPTIONS if key in kwargs}


def loader_options(
    kwargs: dict[str, Any], where: str, accepted: Collection[str] = ()
) -> dict[str, Any]:
    """The loader's own options among what is left of its kwargs once hub_options took the hub ones:
    those named in `accepted`. IGNORED_OPTIONS are dropped; any other name (a typo such as revison="v2")
    is a TypeError naming it, as Python raises for an unknown keyword argument."""
    if kwargs.get("subfolder"):
        raise InputError(
            f"subfolder={kwargs['subfolder']!r} is not supported: pass the path of the folder "
            "that holds config.json (download a hub checkpoint first)"
        )
    unknown = [key for key in kwargs if key not in accepted and key not in IGNORED_OPTIONS]
    if unknown:
        raise unexpected_keywords(where, unknown)
    return {key: value for key, value in kwargs.items() if key in accepted}


def resolve_checkpoint_dir(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """A local checkpoint directory, or the cached snapshot of a hub id (downloaded if allowed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(name_or_path)
    if path.exists():
        raise CheckpointError(
            f"{text} is a file; pass the checkpoint directory that holds config.json"
        )
    if not _HUB_ID.match(text):
        raise CheckpointError(f"checkpoint directory {text} does not exist")
    options = {
        "revision": revision,
        "cache_dir": cache_dir,
        "token": token,
        "allow_patterns": CHECKPOINT_FILES,
    }
    return _snapshot(text, options, local_files_only)


def _snapshot(repo_id: str, options: dict[str, Any], local_files_only: bool) -> Path:
    # Imported here: a local directory never needs huggingface_hub, which takes 0.45 s to import
    # (measured after torch, on this project's 2-core machine).
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(
            f"{repo_id} is not a local directory and huggingface_hub is not installed"
        ) from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **options))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if local_files_only:
        raise ModelNotCachedError(_not_cached(repo_id, "local_files_only=True")) from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotCachedError(_not_cached(repo_id, "HF_HUB_OFFLINE is set")) from None
    try:
        return Path(snapshot_download(repo_id, **options))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotCachedError(_not_cached(repo_id, reason)) from None


def _not_cached(repo_id: str, reason: str) -> str:
    return (
        f"model {repo_id} is not in the local Hugging Face cache and could not be downloaded ({reason}). "
        f"Download it on a machine with network access (hf download {repo_id}) "
        "or pass a local checkpoint directory that holds config.json and model.safetensors"
    )
