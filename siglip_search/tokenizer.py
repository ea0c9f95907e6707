"""SigLIP's SentencePiece tokenizer, reproducing transformers' SiglipTokenizer id for id.

Canonicalisation is big_vision's prompt_engineering.canonicalize_text: lower-case, delete ASCII
punctuation, collapse whitespace. Sequences end with </s>, which is also the pad token.

Above ~400 lines as one class: transformers' SiglipTokenizer API method for method (tokenize,
encode, __call__ with its padding and truncation options, decode, save and load), addressed by
those names by callers and by the id-for-id tests against transformers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

from .atomic import atomic_path, write_atomic
from .errors import CheckpointError, InputError
from .hub import hub_options, loader_options, resolve_checkpoint_dir

SPIECE_UNDERLINE = "\u2581"
VOCAB_FILE = "spiece.model"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A model_max_length above transformers' LARGE_INTEGER (1e20) means "no limit": transformers writes
# VERY_LARGE_INTEGER (1e30) into tokenizer_config.json when a tokenizer has none, and then neither
# pads to it nor truncates at it.
_NO_LIMIT = int(1e20)
# What tokenizer_config.json, special_tokens_map.json or a from_pretrained call may set.
INIT_OPTIONS = frozenset(
    {
        "eos_token",
        "unk_token",
        "pad_token",
        "additional_special_tokens",
        "model_max_length",
        "do_lower_case",
        "model_input_names",
    }
)


class BatchEncoding(dict):
    """A dict of model inputs that also allows attribute access and `.to(device)`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device) -> BatchEncoding:
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


def canonicalize_text(text: str, do_lower_case: bool = True) -> str:
    if do_lower_case:
        text = text.lower()
    text = text.translate(_PUNCTUATION)
    return re.sub(r"\s+", " ", text).strip()


class SiglipTokenizer:
    vocab_files_names = {"vocab_file": VOCAB_FILE}

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "</s>",
        additional_special_tokens: Sequence[str] | None = None,
        model_max_length: int = 64,
        do_lower_case: bool = True,
        model_input_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_file = str(vocab_file)
        self.sp_model = spm.SentencePieceProcessor()
        try:
            self.sp_model.Load(self.vocab_file)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load SentencePiece model {vocab_file}: {exc}") from None
        self.eos_token, self.unk_token, self.pad_token = eos_token, unk_token, pad_token
        self.additional_special_tokens = list(additional_special_tokens or [])
        self.model_max_length = int(model_max_length)
        self.do_lower_case = do_lower_case
        self.model_input_names = list(model_input_names or ["input_ids", "attention_mask"])
        self.init_kwargs = dict(kwargs)
        specials = sorted(set(self.all_special_tokens), key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._unk_length = len(self.sp_model.encode(self.unk_token))

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def all_special_tokens(self) -> list[str]:
        return list(
            dict.fromkeys(
                [self.eos_token, self.unk_token, self.pad_token, *self.additional_special_tokens]
            )
        )

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def _default_max_length(self) -> int | None:
        """model_max_length, or None where it stands for "no limit"."""
        return None if self.model_max_length > _NO_LIMIT else self.model_max_length

    @property
    def eos_token_id(self) -> int:
        return self.sp_model.piece_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int:
        return self.sp_model.piece_to_id(self.pad_token)

    @property
    def unk_token_id(self) -> int:
        return self.sp_model.piece_to_id(self.unk_token)

    def get_vocab(self) -> dict[str, int]:
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        if isinstance(tokens, str):
            return self.sp_model.piece_to_id(tokens)
        return [self.sp_model.piece_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]):
        if isinstance(ids, int):
            return self.sp_model.id_to_piece(ids)
        return [self.sp_model.id_to_piece(int(i)) for i in ids]

    # --- encoding -------------------------------------------------------------------------
    def canonicalize_text(self, text: str) -> str:
        return canonicalize_text(text, self.do_lower_case)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of one text, without </s>, exactly as transformers' slow tokenizer."""
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        # Special-token strings typed in the text are split out before canonicalisation
        # (a transformers quirk we keep for id-for-id agreement); they strip spaces around them.
        chunks = self._special_split.split(text)
        specials = set(self.all_special_tokens)
        for i, chunk in enumerate(chunks):
            if chunk in specials:
                if i + 1 < len(chunks) and chunks[i + 1]:
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if i > 0 and chunks[i - 1]:
                    chunks[i - 1] = chunks[i - 1].rstrip()
        tokens: list[str] = []
        for chunk in chunks:
            if not chunk:
                continue
            tokens.extend([chunk] if chunk in specials else self._tokenize(chunk))
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in specials:
            tokens = tokens[1:]
        return tokens

    def _tokenize(self, text: str) -> list[str]:
        text = self.canonicalize_text(text)
        # Encode "<unk>" + text and drop the <unk> pieces, so the text is segmented as if it
        # followed other text (the way transformers does it).
        pieces = self.sp_model.encode(self.unk_token + text, out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool | str = False,
    ) -> list[int]:
        return self._encode_batch([text], add_special_tokens, truncation, max_length, padding)[0]

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        out = self._add_eos(list(token_ids_0))
        return out if token_ids_1 is None else out + self._add_eos(list(token_ids_1))

    def _add_eos(self, ids: list[int]) -> list[int]:
        return ids if ids and ids[-1] == self.eos_token_id else ids + [self.eos_token_id]

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        if token_ids_1 is None:
            return [0] * len(token_ids_0) + [1]
        return [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    def _encode_rows(self, texts, add_special_tokens, truncation, max_length) -> list[list[int]]:
        """Ids per text with </s> and truncation, before any padding."""
        if truncation and max_length is None:
            max_length = self._default_max_length
        rows = []
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"text must be a string, got {type(text).__name__}")
            ids = self.convert_tokens_to_ids(self.tokenize(text))
            if add_special_tokens:
                ids = self.build_inputs_with_special_tokens(ids)
            if truncation and max_length is not None and len(ids) > max_length:
                # Keep the first L-1 pieces and then </s>: EOS is "sticky" as in big_vision.
                ids = (
                    ids[: max_length - 1] + [self.eos_token_id]
                    if add_special_tokens
                    else ids[:max_length]
                )
            rows.append(ids)
        return rows

    def _pad_length(
        self,
        rows: list[list[int]],
        padding: bool | str,
        max_length: int | None,
        pad_to_multiple_of: int | None = None,
    ) -> int | None:
        if padding in (False, None, "do_not_pad"):
            return None
        if padding is True or padding == "longest":
            length = max(len(r) for r in rows)
        elif padding == "max_length":
            limit = max_length or self._default_max_length
            if limit is None:
                return None  # as transformers: no max_length anywhere, so no padding
            length = limit
        else:
            raise InputError(
                f"padding must be True, False, 'longest' or 'max_length', got {padding!r}"
            )
        if pad_to_multiple_of:  # as transformers: the padded length rounded up to a multiple
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        return length

    def _pad(self, row: list[int], length: int, value: int) -> list[int]:
        return row + [value] * (length - len(row))

    def _encode_batch(
        self, texts, add_special_tokens, truncation, max_length, padding
    ) -> list[list[int]]:
        rows = self._encode_rows(texts, add_special_tokens, truncation, max_length)
        length = self._pad_length(rows, padding, max_length)
        return rows if length is None else [self._pad(r, length, self.pad_token_id) for r in rows]

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool | None = None,
        pad_to_multiple_of: int | None = None,
        verbose: bool = True,  # accepted and ignored: transformers' switch for its warnings
    ) -> BatchEncoding:
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        limit = max_length or self._default_max_length
        if (
            truncation
            and padding not in (False, None, "do_not_pad")
            and pad_to_multiple_of
            and limit
            and limit % pad_to_multiple_of
        ):
            raise InputError(
                f"truncation length {limit} is not a multiple of pad_to_multiple_of {pad_to_multiple_of}"
            )
        unpadded = self._encode_rows(texts, add_special_tokens, bool(truncation), max_length)
        length = self._pad_length(unpadded, padding, max_length, pad_to_multiple_of)
        rows = (
            unpadded
            if length is None
            else [self._pad(r, length, self.pad_token_id) for r in unpadded]
        )
        out = BatchEncoding(input_ids=rows[0] if single else rows)
        if return_attention_mask or (
            return_attention_mask is None and "attention_mask" in self.model_input_names
        ):
            masks = [
                [1] * len(r) if length is None else self._pad([1] * len(r), length, 0)
                for r in unpadded
            ]
            out["attention_mask"] = masks[0] if single else masks
        if return_tensors not in (None, "pt", "np"):
            raise InputError(
                f"return_tensors={return_tensors!r} is not supported (use 'pt', 'np' or None)"
            )
        if return_tensors is not None:
            if len({len(r) for r in rows}) > 1:
                raise InputError(
                    "texts have different lengths; pass padding='max_length' (and max_length= "
                    "where the tokenizer has no model_max_length) to make a tensor"
                )
            batch = {k: [v] if single else v for k, v in out.items()}
            if return_tensors == "pt":
                out = BatchEncoding(
                    {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
                )
            else:
                out = BatchEncoding({k: np.array(v, dtype=np.int64) for k, v in batch.items()})
        return out

    # --- decoding -------------------------------------------------------------------------
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        specials = set(self.all_special_tokens)
        out, prev_special = "", False
        current: list[str] = []
        for token in tokens:
            if token in specials:
                if not prev_special:
                    out += " "
                out += self.sp_model.decode(current) + token
                prev_special, current = True, []
            else:
                current.append(token)
                prev_special = False
        return (out + self.sp_model.decode(current)).strip()

    def decode(
        self,
        token_ids,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """The text of token_ids (clean_up_tokenization_spaces is transformers' argument, accepted
        and ignored)."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if skip_special_tokens:
            special = set(self.all_special_ids)
            token_ids = [i for i in token_ids if i not in special]
        return self.convert_tokens_to_string(self.convert_ids_to_tokens(token_ids))

    def batch_decode(
        self,
        sequences,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # --- files ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipTokenizer:
        hub = hub_options(kwargs)
        overrides = loader_options(kwargs, f"{cls.__name__}.from_pretrained", accepted=INIT_OPTIONS)
        directory = resolve_checkpoint_dir(name_or_path, **hub)
        vocab = directory / VOCAB_FILE
        if not vocab.is_file():
            raise CheckpointError(
                f"{directory} has no {VOCAB_FILE} (the SigLIP SentencePiece vocabulary)"
            )
        config = _special_tokens(directory / "tokenizer_config.json")
        config.update(_special_tokens(directory / "special_tokens_map.json"))
        return cls(vocab, **{k: v for k, v in config.items() if k in INIT_OPTIONS} | overrides)

    def save_vocabulary(
        self, save_directory: str | os.PathLike, filename_prefix: str | None = None
    ) -> tuple[str]:
        name = self.vocab_files_names["vocab_file"]
        out = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + name)
        if Path(self.vocab_file).resolve() != out.resolve():
            with atomic_path(out) as temp:
                shutil.copyfile(self.vocab_file, temp)
        return (str(out),)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        (vocab,) = self.save_vocabulary(directory)
        config = {
            "tokenizer_class": "SiglipTokenizer",
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
            "additional_special_tokens": self.additional_special_tokens,
            "model_max_length": self.model_max_length,
            "do_lower_case": self.do_lower_case,
            "model_input_names": self.model_input_names,
        }
        write_atomic(
            directory / "tokenizer_config.json", (json.dumps(config, indent=2) + "\n").encode()
        )
        specials = {
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
        }
        write_atomic(
            directory / "special_tokens_map.json", (json.dumps(specials, indent=2) + "\n").encode()
        )
        return (
            vocab,
            str(directory / "tokenizer_config.json"),
            str(directory / "special_tokens_map.json"),
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _special_tokens(path: Path) -> dict[str, Any]:
    """special_tokens_map.json values may be plain strings or AddedToken dicts."""
    out = {}
    for key, value in _read_json(path).items():
        if isinstance(value, dict) and "content" in value:
            value = value["content"]
        elif isinstance(value, list):
            value = [v["content"] if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out
