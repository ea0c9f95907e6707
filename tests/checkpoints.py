"""Small real SigLIP checkpoints for tests: a SentencePiece vocabulary trained here, random weights."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import sentencepiece as spm
import torch

CORPUS = [
    "a photo of a red circle",
    "a small blue square on the left",
    "two large green triangles",
    "a yellow star at the top",
    "an orange heart in the centre",
    "a purple circle on a striped background",
    "a black square and a white star",
    "the quick brown fox jumps over the lazy dog",
    "a dog on the beach at sunset",
    "a cat sleeping on a sofa",
    "mountains under a cloudy sky",
    "birthday party with cake and candles",
    "café crème brûlée à paris",
    "naïve résumé façade",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024",
    "city street at night with cars and lights",
    "a bowl of fruit apples bananas oranges",
    "people walking in the snow",
    "a bicycle by the river",
    "portrait of a smiling child",
    "sailing boat on the lake",
    "forest path in autumn",
]


def train_spiece(path: Path, vocab_size: int = 300) -> Path:
    """A SigLIP-layout vocabulary: <pad>=0, </s>=1, <unk>=2, no BOS."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
        num_threads=1,
    )
    path.write_bytes(model.getvalue())
    return path


def tiny_config_dict(**overrides) -> dict:
    text = {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "projection_size": 48,
    }
    vision = {
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "image_size": 38,
        "patch_size": 7,
        "layer_norm_eps": 1e-3,
    }
    text.update(overrides.pop("text", {}))
    vision.update(overrides.pop("vision", {}))
    return {"model_type": "siglip", "text_config": text, "vision_config": vision, **overrides}


def write_processor_files(
    directory: Path, image_size: int, max_length: int, vocab_size: int
) -> None:
    spiece = train_spiece(directory / "spiece.model", vocab_size)
    del spiece
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "SiglipTokenizer",
                "model_max_length": max_length,
                "do_lower_case": True,
                "eos_token": "</s>",
                "pad_token": "</s>",
                "unk_token": "<unk>",
                "model_input_names": ["input_ids"],
            }
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    )
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": {"height": image_size, "width": image_size},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )
    )


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Every weight, bias and norm random (so a swapped or skipped parameter shows up)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 1.0 / math.sqrt(p.shape[-1]) if p.ndim > 1 else 0.2
            p.copy_(
                torch.randn(p.shape, generator=gen) * std
                + (1.0 if "norm" in name and "weight" in name else 0)
            )
        model.logit_scale.fill_(math.log(10.0) + 0.3)
        model.logit_bias.fill_(-2.5)


def make_tiny_checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    """Our own SiglipModel, random weights, saved in the Hugging Face layout."""
    from siglip_search import SiglipConfig, SiglipModel

    directory.mkdir(parents=True, exist_ok=True)
    config = SiglipConfig.from_dict(tiny_config_dict(**overrides))
    model = SiglipModel(config)
    randomize_(model, seed)
    model.save_pretrained(directory)
    write_processor_files(
        directory,
        config.vision_config.image_size,
        config.text_config.max_position_embeddings,
        config.text_config.vocab_size,
    )
    return directory


def make_hf_checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    """The same kind of checkpoint made and saved by transformers (the reference)."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    config = transformers.SiglipConfig(**tiny_config_dict(**overrides))
    model = transformers.SiglipModel(config).eval()
    randomize_(model, seed)
    model.save_pretrained(directory)
    write_processor_files(
        directory,
        config.vision_config.image_size,
        config.text_config.max_position_embeddings,
        config.text_config.vocab_size,
    )
    return directory
