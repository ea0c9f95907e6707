"""AutoModel / AutoProcessor / AutoTokenizer for SigLIP checkpoints, picking classes from the files."""

from __future__ import annotations

import os
from typing import Any

from .config import read_config_json, unsupported_model_type
from .hub import hub_options, resolve_checkpoint_dir
from .image_processor import SiglipImageProcessor
from .model import SiglipModel, SiglipPreTrainedModel, SiglipTextModel, SiglipVisionModel
from .processor import SiglipProcessor, load_tokenizer
from .tokenizer import SiglipTokenizer

_MODELS: dict[str, type[SiglipPreTrainedModel]] = {
    "siglip": SiglipModel,
    "siglip_text_model": SiglipTextModel,
    "siglip_vision_model": SiglipVisionModel,
}


class AutoModel:
    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any):
        directory = resolve_checkpoint_dir(name_or_path, **hub_options(kwargs))
        model_type = read_config_json(directory / "config.json").get("model_type", "siglip")
        if model_type not in _MODELS:
            raise unsupported_model_type(
                directory / "config.json", model_type, "a SigLIP model type"
            )
        return _MODELS[model_type].from_pretrained(directory, **kwargs)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipTokenizer:
        return load_tokenizer(name_or_path, **kwargs)


class AutoImageProcessor:
    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipImageProcessor:
        return SiglipImageProcessor.from_pretrained(name_or_path, **kwargs)


class AutoProcessor:
    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipProcessor:
        return SiglipProcessor.from_pretrained(name_or_path, **kwargs)
