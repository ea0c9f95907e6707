"""The SigLIP 2 (fixed resolution) tokenizer: Gemma SentencePiece, lower-case only, EOS, pad with <pad>.

A tiny SentencePiece model with Gemma's layout is trained here (BPE, <pad>=0, <eos>=1, <bos>=2,
<unk>=3, no dummy prefix, identity normaliser, whitespace kept, digits split, byte fallback) and
saved as `tokenizer.model`, the file name the SigLIP 2 hub repos use.

Checked against transformers 5.24: the piece ids of lower-cased text equal its GemmaTokenizer
(tokenizers backend converted from the same tokenizer.model; 5.24 has no slow Gemma tokenizer) and
its Siglip2Tokenizer (which lower-cases itself, one character at a time: a word-final capital sigma
becomes "σ", not Python's "ς"), with special tokens left out on both sides.

Checked against big_vision's source (SigLIP2_demo.ipynb and pp/proj/paligemma/ops.py, read, not run):
its SigLIP 2 text pipeline is `lower|tok(length=64, model="gemma", bos="no", eos="sticky")`, i.e. no
<bos>, <eos> appended and kept last on truncation, right padding with <pad> = 0. These are the
defaults asserted here. Its tf.strings.lower lower-cases ASCII letters only; we (and transformers)
lower-case all of Unicode, so "ÉTÉ" tokenizes as "été" here and as "Été" there.

Unverified against the hub (no network here), so asserted only as this package's documented choice:
- what google/siglip2-* tokenizer_config.json / tokenizer.json set (add_bos_token, add_eos_token,
  padding_side); they override the defaults above when present. transformers' converted tokenizers
  here add neither <bos> nor <eos> and pad on the left (Siglip2Tokenizer's class default); the text
  tower pools the last position, so the side matters;
- that the real vocabulary (256k Gemma pieces) segments like this tiny one;
- a literal "<eos>" typed in a text: transformers turns it into the special id, we encode it as
  text (left out of the comparison).
"""

from __future__ import annotations

import io
import json
import shutil

import pytest
import sentencepiece as spm
from checkpoints import CORPUS

from siglip_search import AutoTokenizer, SiglipTokenizer
from siglip_search.gemma_tokenizer import GemmaSiglipTokenizer

PAD, EOS, BOS, UNK = 0, 1, 2, 3

TEXTS = [
    "A Photo of a RED Circle!",
    "Hello, World... (test)",
    "don't stop-believing",
    "tabs\tand\nnewlines",
    "  two  spaces ",
    "café CRÈME brûlée à Paris",
    "emoji 🐶🎉 dog",
    "digits 0123456789 3.14",
    "ﬁne ＡＢＣ ½",
    "“quoted” — dash… ¿qué?",
    "ÅNGSTRÖM",
    "",
    "x" * 80,
    "ΟΔΟΣ ΣΤΗΝ ΑΘΗΝΑ",
    "ΌΣΟΣ.",
    "İSTANBUL",
    "STRASSE ẞ",
]


def train_gemma_like(path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        pad_id=PAD,
        eos_id=EOS,
        bos_id=BOS,
        unk_id=UNK,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        add_dummy_prefix=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    path.write_bytes(model.getvalue())


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("siglip2-tokenizer")
    train_gemma_like(directory / "tokenizer.model")
    return directory


@pytest.fixture(scope="module")
def tokenizer(gemma_dir):
    return AutoTokenizer.from_pretrained(gemma_dir)


def test_auto_tokenizer_picks_gemma_for_tokenizer_model_only(gemma_dir, tiny_checkpoint, tmp_path):
    assert isinstance(AutoTokenizer.from_pretrained(gemma_dir), GemmaSiglipTokenizer)
    both = shutil.copytree(gemma_dir, tmp_path / "both")
    shutil.copy(tiny_checkpoint / "spiece.model", both / "spiece.model")
    picked = AutoTokenizer.from_pretrained(both)
    assert isinstance(picked, SiglipTokenizer) and not isinstance(picked, GemmaSiglipTokenizer)


def test_gemma_id_layout(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        PAD,
        EOS,
        UNK,
    )
    assert tokenizer.convert_ids_to_tokens([PAD, EOS, BOS, UNK]) == [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
    ]
    assert tokenizer.model_max_length == 64


def test_lower_cases_but_keeps_punctuation_and_spaces(tokenizer):
    ids = tokenizer("A Photo, of a CAT!")["input_ids"]

    assert ids == tokenizer("a photo, of a cat!")["input_ids"]
    assert ids != tokenizer("a photo of a cat")["input_ids"], "SigLIP 1 would strip the punctuation"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo, of a cat!"
    assert tokenizer("two  spaces")["input_ids"] != tokenizer("two spaces")["input_ids"], (
        "no whitespace collapse"
    )


def test_appends_eos_and_no_bos(tokenizer):
    ids = tokenizer("a dog on the beach")["input_ids"]
    assert ids[-1] == EOS and ids.count(EOS) == 1
    assert BOS not in ids
    assert tokenizer("")["input_ids"] == [EOS]


def test_pads_to_max_length_with_pad_id_0(tokenizer):
    batch = tokenizer(
        ["a cat", "a bicycle by the river"],
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )["input_ids"]

    assert batch.shape == (2, 64)
    for row, text in zip(batch.tolist(), ["a cat", "a bicycle by the river"], strict=True):
        n = len(tokenizer(text)["input_ids"])
        assert row[n - 1] == EOS and set(row[n:]) == {PAD}, (
            "right padding with <pad>, not </s> as in SigLIP 1"
        )


def test_truncation_keeps_eos_last(tokenizer):
    long_text = "the quick brown fox jumps over the lazy dog " * 10
    full = tokenizer(long_text)["input_ids"]
    assert len(full) > 16

    ids = tokenizer(long_text, padding="max_length", truncation=True, max_length=16)["input_ids"]

    assert len(ids) == 16
    assert ids[:15] == full[:15] and ids[-1] == EOS


def test_tokenizer_config_can_turn_eos_off_and_pad_left(gemma_dir, tmp_path):
    directory = shutil.copytree(gemma_dir, tmp_path / "left")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"add_eos_token": False, "padding_side": "left", "model_max_length": 8})
    )

    tok = AutoTokenizer.from_pretrained(directory)
    ids = tok(["a cat"], padding="max_length")["input_ids"][0]

    pieces = tok("a cat")["input_ids"]
    assert EOS not in pieces
    assert len(ids) == 8 and ids[-len(pieces) :] == pieces and set(ids[: -len(pieces)]) == {PAD}
    # The attention mask marks the same positions: padding on the left, text on the right.
    mask = tok(["a cat"], padding="max_length", return_attention_mask=True)["attention_mask"][0]
    assert mask == [0] * (8 - len(pieces)) + [1] * len(pieces)


def test_byte_fallback_instead_of_unk(tokenizer):
    ids = tokenizer("emoji 🐶")["input_ids"]
    assert UNK not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "emoji 🐶"


@pytest.mark.parametrize("text", TEXTS)
def test_piece_ids_equal_transformers_gemma_on_lower_cased_text(gemma_dir, tokenizer, text):
    tf = pytest.importorskip("transformers")
    gemma = tf.GemmaTokenizer.from_pretrained(gemma_dir)
    siglip2 = tf.Siglip2Tokenizer.from_pretrained(gemma_dir)

    ours = tokenizer(text)["input_ids"]

    assert ours[-1] == EOS
    lowered = "".join(ch.lower() for ch in text)  # per character, as the tokenizers library
    assert ours[:-1] == gemma(lowered, add_special_tokens=False)["input_ids"]
    assert ours[:-1] == siglip2(text, add_special_tokens=False)["input_ids"]
