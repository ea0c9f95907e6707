"""The shipped demo model: loads offline, knows colours and shapes, and int8 keeps its accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siglip_search.embedder import Embedder
from siglip_search.training.evaluate import evaluate

DATA = Path(__file__).resolve().parents[1] / "data"
DEMO = DATA / "models" / "siglip-demo"


@pytest.fixture(scope="module")
def fp32_report():
    return evaluate(Embedder.from_pretrained(DEMO), DATA / "eval")


def test_demo_model_and_samples_are_shipped():
    for name in (
        "config.json",
        "model.safetensors",
        "spiece.model",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "README.md",
    ):
        assert (DEMO / name).is_file(), name
    assert len(list((DATA / "samples").glob("*.jpg"))) >= 200
    assert (DATA / "eval" / "captions.jsonl").is_file()
    assert DEMO.stat().st_size < 16 * 2**20


def test_demo_model_names_colours_and_shapes_on_held_out_images(fp32_report):
    # Random weights score 1 in 8 (colours) and 1 in 5 (shapes) here; the bars are far above chance.
    assert fp32_report["zero_shot_colour_accuracy"] >= 0.9
    assert fp32_report["zero_shot_shape_accuracy"] >= 0.85
    assert fp32_report["recall@5_single_object"] >= 0.75
    # Captions find a matching image among the top 10 of 400 far more often than chance.
    assert fp32_report["recall@10_all"] >= 0.5


def test_int8_mode_keeps_zero_shot_accuracy_within_two_points(fp32_report):
    int8 = evaluate(Embedder.from_pretrained(DEMO, mode="int8"), DATA / "eval")
    for key in ("zero_shot_colour_accuracy", "zero_shot_shape_accuracy"):
        assert abs(int8[key] - fp32_report[key]) <= 0.02, key


def test_transformers_loads_the_demo_model_with_the_same_features():
    tf = pytest.importorskip("transformers")
    import torch

    from siglip_search import SiglipModel, SiglipProcessor

    ours = SiglipModel.from_pretrained(DEMO)
    ref = tf.SiglipModel.from_pretrained(DEMO, dtype=torch.float32).eval()
    inputs = SiglipProcessor.from_pretrained(DEMO)(
        text=["a red circle"], padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            ours.get_text_features(**inputs),
            ref.get_text_features(**inputs).pooler_output,
            atol=1e-4,
            rtol=1e-4,
        )


def test_transformers_finds_the_demo_models_special_ids_inside_its_vocabulary():
    tf = pytest.importorskip("transformers")
    text_config = tf.SiglipConfig.from_pretrained(DEMO).text_config
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(text_config, name)
        assert value is None or 0 <= value < text_config.vocab_size, (name, value)


# transformers' zero-shot pipeline pads every SigLIP text to 64 tokens (and drops tokenizer_kwargs),
# so it runs only on models with 64 text positions. `train` now writes such models; the shipped demo
# model has 32 until it is retrained. Strict: this fails loudly once the retrained model is in place,
# so the marker goes with it.
_DEMO_POSITIONS = json.loads((DEMO / "config.json").read_text())["text_config"][
    "max_position_embeddings"
]


@pytest.mark.xfail(
    _DEMO_POSITIONS != 64,
    reason="the shipped demo model has 32 text positions; transformers' pipeline pads to 64",
    strict=True,
)
def test_transformers_zero_shot_pipeline_runs_on_the_demo_model_with_our_scores():
    tf = pytest.importorskip("transformers")
    from siglip_search import pipeline

    photo = sorted((DATA / "samples").glob("*.jpg"))[0]
    labels = ["a red circle", "a blue star", "a green square"]
    theirs = tf.pipeline("zero-shot-image-classification", model=str(DEMO), device=-1)(
        str(photo), candidate_labels=labels
    )
    ours = pipeline("zero-shot-image-classification", model=DEMO)(photo, candidate_labels=labels)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine["score"] == pytest.approx(ref["score"], abs=1e-5)
