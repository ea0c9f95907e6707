"""Model output containers that behave like Hugging Face's ModelOutput (attributes, keys, indices)."""

from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

import torch


class ModelOutput:
    """Fields that are None are skipped by indexing and iteration, as in transformers."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass is a dataclass

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v for _, v in self.items())

    def items(self):
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]

    def keys(self):
        return [k for k, _ in self.items()]

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SiglipOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
