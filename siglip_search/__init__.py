"""SigLIP in plain PyTorch, with the public API of Hugging Face transformers' SigLIP.

Names are imported on first use, so `siglip_search.errors` or the command line's `--help` do not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AutoImageProcessor": "auto",
    "AutoModel": "auto",
    "AutoProcessor": "auto",
    "AutoTokenizer": "auto",
    "SiglipConfig": "config",
    "SiglipTextConfig": "config",
    "SiglipVisionConfig": "config",
    "CheckpointError": "errors",
    "InputError": "errors",
    "ModelNotCachedError": "errors",
    "SiglipSearchError": "errors",
    "SiglipImageProcessor": "image_processor",
    "sigmoid_loss": "loss",
    "SiglipModel": "model",
    "SiglipTextModel": "model",
    "SiglipVisionModel": "model",
    "pipeline": "zero_shot",
    "SiglipProcessor": "processor",
    "SiglipTokenizer": "tokenizer",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'siglip_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
