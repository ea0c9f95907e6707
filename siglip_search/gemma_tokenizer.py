"""Tokenizer for fixed-resolution SigLIP 2 checkpoints: Gemma SentencePiece, lower-case only.

The defaults are big_vision's SigLIP 2 text pipeline (SigLIP2_demo.ipynb: `lower|tok(length=64,
model="gemma", bos="no", eos="sticky")`; pp/proj/paligemma/ops.py: EOS appended, right-padded with
the pad id, EOS kept last on truncation). tokenizer_config.json may override `add_bos_token`,
`add_eos_token` and `padding_side`; what the hub files set is unverified offline (see README).
Lower-casing follows transformers' Siglip2Tokenizer (Unicode, one character at a time); big_vision's
tf.strings.lower lower-cases ASCII letters only.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import CheckpointError
from .hub import hub_options, loader_options, resolve_checkpoint_dir
from .tokenizer import SiglipTokenizer, _special_tokens

VOCAB_FILE = "tokenizer.model"
# What tokenizer_config.json or special_tokens_map.json may set.
INIT_OPTIONS = frozenset(
    {
        "eos_token",
        "unk_token",
        "pad_token",
        "bos_token",
        "add_bos_token",
        "add_eos_token",
        "padding_side",
        "model_max_length",
        "model_input_names",
    }
)


class GemmaSiglipTokenizer(SiglipTokenizer):
    vocab_files_names = {"vocab_file": VOCAB_FILE}

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        eos_token: str = "<eos>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        bos_token: str = "<bos>",
        add_bos_token: bool = False,
        add_eos_token: bool = True,
        padding_side: str = "right",
        model_max_length: int = 64,
        **kwargs: Any,
    ) -> None:
        self.bos_token = bos_token
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        if padding_side not in ("left", "right"):
            raise CheckpointError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.padding_side = padding_side
        kwargs.pop("do_lower_case", None)
        super().__init__(
            vocab_file,
            eos_token,
            unk_token,
            pad_token,
            model_max_length=model_max_length,
            do_lower_case=True,
            **kwargs,
        )

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([self.bos_token, *super().all_special_tokens]))

    def canonicalize_text(self, text: str) -> str:
        # SigLIP 2 lower-cases but keeps punctuation. Character by character, as the tokenizers library's
        # Lowercase() does: str.lower() alone would turn a word-final capital sigma into "ς", not "σ".
        return text.replace("\u03a3", "\u03c3").lower()

    def tokenize(self, text: str) -> list[str]:
        return self.sp_model.encode(self.canonicalize_text(text), out_type=str)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        ids = list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])
        if self.add_bos_token:
            ids = [self.sp_model.piece_to_id(self.bos_token)] + ids
        return self._add_eos(ids) if self.add_eos_token else ids

    def _pad(self, row: list[int], length: int, value: int) -> list[int]:
        filler = [value] * (length - len(row))
        return filler + row if self.padding_side == "left" else row + filler

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, **kwargs: Any
    ) -> GemmaSiglipTokenizer:
        hub = hub_options(kwargs)
        # additional_special_tokens and do_lower_case (which __init__ drops) as SiglipTokenizer takes them
        accepted = INIT_OPTIONS | {"additional_special_tokens", "do_lower_case"}
        overrides = loader_options(kwargs, f"{cls.__name__}.from_pretrained", accepted=accepted)
        directory = resolve_checkpoint_dir(name_or_path, **hub)
        config = _special_tokens(directory / "tokenizer_config.json")
        config.update(_special_tokens(directory / "special_tokens_map.json"))
        return cls(
            directory / VOCAB_FILE,
            **{k: v for k, v in config.items() if k in INIT_OPTIONS} | overrides,
        )
