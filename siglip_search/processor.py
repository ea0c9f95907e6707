"""SiglipProcessor: one object that tokenizes text and preprocesses images, like transformers'."""

from __future__ import annotations

import os
from typing import Any

from .errors import CheckpointError, InputError, unexpected_keywords
from .gemma_tokenizer import GemmaSiglipTokenizer
from .hub import hub_options, loader_options, resolve_checkpoint_dir
from .image_processor import OPTIONS, SiglipImageProcessor
from .tokenizer import BatchEncoding, SiglipTokenizer


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipTokenizer:
    """The tokenizer a checkpoint holds: SigLIP's spiece.model, or SigLIP 2's Gemma tokenizer.model."""
    # the rest: the class's loader
    directory = resolve_checkpoint_dir(name_or_path, **hub_options(kwargs))
    if (directory / "spiece.model").is_file():
        return SiglipTokenizer.from_pretrained(directory, **kwargs)
    if (directory / "tokenizer.model").is_file():
        return GemmaSiglipTokenizer.from_pretrained(directory, **kwargs)
    message = (
        f"{directory} has no tokenizer: expected spiece.model (SigLIP) or tokenizer.model "
        "(SigLIP 2, Gemma)"
    )
    if (directory / "tokenizer.json").is_file():
        message += (
            "; its tokenizer.json alone is not read: copy tokenizer.model (or spiece.model) from the "
            "checkpoint it came from"
        )
    raise CheckpointError(message)


class SiglipProcessor:
    def __init__(self, image_processor: SiglipImageProcessor, tokenizer: Any) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        **image_options: Any,
    ) -> BatchEncoding:
        """Text options go to the tokenizer; image_options (image_processor.OPTIONS) to the image
        processor."""
        unknown = [key for key in image_options if key not in OPTIONS]
        if unknown:
            raise unexpected_keywords(f"{type(self).__name__}.__call__", unknown)
        if text is None and images is None:
            raise InputError("pass text=..., images=... or both")
        out = BatchEncoding()
        if text is not None:
            out.update(
                self.tokenizer(
                    text,
                    padding=padding,
                    truncation=truncation,
                    max_length=max_length,
                    return_tensors=return_tensors,
                    pad_to_multiple_of=pad_to_multiple_of,
                    return_attention_mask=return_attention_mask,
                )
            )
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors, **image_options))
        return out

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return list(
            dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names)
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipProcessor:
        hub = hub_options(kwargs)
        # the ignored ones; a typo is a TypeError
        loader_options(kwargs, f"{cls.__name__}.from_pretrained")
        directory = resolve_checkpoint_dir(name_or_path, **hub)  # one snapshot for both
        return cls(SiglipImageProcessor.from_pretrained(directory), load_tokenizer(directory))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
