"""pipeline("zero-shot-image-classification") takes transformers' arguments as transformers does, and
refuses what it cannot honour in one line naming the argument."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import siglip_search as ss
from siglip_search.errors import InputError

LABELS = ["a red circle", "a blue star", "a green heart"]


@pytest.fixture(scope="module")
def photos():
    return [
        Image.new("RGB", (40, 30), (200, 30, 30)),
        Image.effect_mandelbrot((48, 48), (-2, -1.5, 1, 1.5), 40).convert("RGB"),
        Image.linear_gradient("L").convert("RGB").resize((33, 50)),
    ]


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint):
    return ss.pipeline("zero-shot-image-classification", model=tiny_checkpoint)


def _scores(result):
    return {r["label"]: r["score"] for r in result}


def test_a_user_from_transformers_passes_device_minus_one_and_images_as_a_keyword(
    tiny_checkpoint, classifier, photos
):
    on_cpu = ss.pipeline("zero-shot-image-classification", model=tiny_checkpoint, device=-1)
    assert on_cpu.model.device == torch.device("cpu")
    expected = classifier(photos[1], candidate_labels=LABELS)
    assert on_cpu(images=photos[1], candidate_labels=LABELS) == expected
    with pytest.raises(InputError, match="not both"):
        on_cpu(photos[1], images=photos[1], candidate_labels=LABELS)


def test_a_loaded_model_finds_its_processor_in_its_own_folder(tiny_checkpoint, classifier, photos):
    model = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    from_object = ss.pipeline("zero-shot-image-classification", model=model)
    assert from_object(photos[0], candidate_labels=LABELS) == classifier(
        photos[0], candidate_labels=LABELS
    )
    built = ss.SiglipModel(model.config)  # from a config: no folder to read a processor from
    with pytest.raises(InputError, match="processor="):
        ss.pipeline("zero-shot-image-classification", model=built)


def test_batch_size_changes_how_many_images_go_through_at_once_not_the_scores(
    tiny_checkpoint, classifier, photos
):
    whole = classifier(photos, candidate_labels=LABELS)
    by_two = ss.pipeline(
        "zero-shot-image-classification", model=tiny_checkpoint, batch_size=2, num_workers=0
    )(photos, candidate_labels=LABELS)
    one_by_one = classifier(photos, candidate_labels=LABELS, batch_size=1)
    assert len(whole) == len(photos)
    for a, b, c in zip(whole, by_two, one_by_one, strict=True):
        assert [r["label"] for r in a] == [r["label"] for r in b] == [r["label"] for r in c]
        for label, score in _scores(a).items():
            assert _scores(b)[label] == pytest.approx(score, abs=1e-6)
            assert _scores(c)[label] == pytest.approx(score, abs=1e-6)


@pytest.mark.parametrize("template", ["{} and {}", "a photo", "a {label}", "a {0} {0}", "a {"])
def test_a_template_without_exactly_one_place_for_the_label_is_refused_naming_it(
    classifier, photos, template
):
    with pytest.raises(InputError, match="hypothesis_template") as caught:
        classifier(photos[0], candidate_labels=LABELS, hypothesis_template=template)
    assert "\n" not in str(caught.value)


def test_literal_braces_in_a_template_are_kept(classifier, photos):
    result = classifier(photos[0], candidate_labels=LABELS, hypothesis_template="{{x}} {}")
    assert sorted(r["label"] for r in result) == sorted(LABELS)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda c, p: c(p, candidate_labels=LABELS, top_k=1), "top_k"),
        (lambda c, p: c(p, candidate_labels=LABELS, hypothesis="{}"), "hypothesis"),
        (lambda c, p: c(p, candidate_labels=LABELS, batch_size=0), "batch_size"),
        (lambda c, p: c(candidate_labels=LABELS), "images="),
    ],
)
def test_what_the_call_cannot_honour_is_refused_naming_the_argument(classifier, photos, call, name):
    with pytest.raises((TypeError, InputError), match=name):
        call(classifier, photos[0])


def test_unknown_pipeline_arguments_are_refused_naming_them(tiny_checkpoint):
    with pytest.raises(TypeError, match="'devise'"):
        ss.pipeline("zero-shot-image-classification", model=tiny_checkpoint, devise="cpu")
    with pytest.raises(InputError, match="batch_size"):
        ss.pipeline("zero-shot-image-classification", model=tiny_checkpoint, batch_size="8")
