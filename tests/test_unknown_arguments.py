"""A mistyped keyword argument stops the call with a TypeError naming it, as Python and transformers do,
instead of being dropped; the transformers arguments that change nothing here are accepted by name."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import siglip_search as ss
from siglip_search.hub import IGNORED_OPTIONS

TYPO = {"revison": "v2"}


def _loaders():
    return {
        "SiglipModel": ss.SiglipModel.from_pretrained,
        "SiglipTextModel": ss.SiglipTextModel.from_pretrained,
        "SiglipVisionModel": ss.SiglipVisionModel.from_pretrained,
        "AutoModel": ss.AutoModel.from_pretrained,
        "SiglipConfig": ss.SiglipConfig.from_pretrained,
        "SiglipTextConfig": ss.SiglipTextConfig.from_pretrained,
        "SiglipVisionConfig": ss.SiglipVisionConfig.from_pretrained,
        "SiglipTokenizer": ss.SiglipTokenizer.from_pretrained,
        "AutoTokenizer": ss.AutoTokenizer.from_pretrained,
        "SiglipImageProcessor": ss.SiglipImageProcessor.from_pretrained,
        "AutoImageProcessor": ss.AutoImageProcessor.from_pretrained,
        "SiglipProcessor": ss.SiglipProcessor.from_pretrained,
        "AutoProcessor": ss.AutoProcessor.from_pretrained,
        "pipeline": lambda path, **kwargs: ss.pipeline(
            "zero-shot-image-classification", model=path, **kwargs
        ),
    }


@pytest.mark.parametrize("name", sorted(_loaders()))
def test_a_mistyped_loader_argument_is_a_type_error_naming_it(tiny_checkpoint, name):
    with pytest.raises(TypeError, match=r"\(\) got an unexpected keyword argument 'revison'"):
        _loaders()[name](tiny_checkpoint, **TYPO)


@pytest.mark.parametrize("name", sorted(_loaders()))
def test_the_transformers_arguments_that_change_nothing_here_are_accepted(tiny_checkpoint, name):
    ignored = dict.fromkeys(IGNORED_OPTIONS, True) | {"subfolder": "", "proxies": None}
    assert _loaders()[name](tiny_checkpoint, **ignored) is not None


def test_two_mistyped_arguments_are_both_named(tiny_checkpoint):
    with pytest.raises(TypeError, match=r"unexpected keyword arguments 'revison', 'torch_dytpe'"):
        ss.SiglipModel.from_pretrained(tiny_checkpoint, revison="v2", torch_dytpe="float16")


def test_a_subfolder_is_refused_rather_than_ignored(tiny_checkpoint):
    with pytest.raises(ss.InputError, match="subfolder='text' is not supported"):
        ss.SiglipModel.from_pretrained(tiny_checkpoint, subfolder="text")


def test_loader_options_of_the_tokenizer_and_image_processor_still_apply(tiny_checkpoint):
    assert (
        ss.AutoTokenizer.from_pretrained(tiny_checkpoint, model_max_length=7).model_max_length == 7
    )
    processor = ss.AutoImageProcessor.from_pretrained(
        tiny_checkpoint, size={"height": 20, "width": 20}
    )
    assert processor.size == {"height": 20, "width": 20}
    with pytest.raises(TypeError, match="unexpected keyword argument 'do_resise'"):
        ss.SiglipImageProcessor.from_pretrained(tiny_checkpoint, do_resise=False)


def test_a_mistyped_call_argument_is_a_type_error(tiny_checkpoint):
    model = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    processor = ss.AutoProcessor.from_pretrained(tiny_checkpoint)
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    ids = processor(text=["a red circle"], padding="max_length", return_tensors="pt")["input_ids"]
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    calls = {
        "forward": lambda: model(input_ids=ids, pixel_values=pixels, output_hidden_state=True),
        "text tower": lambda: model.text_model(ids, output_hidden_state=True),
        "SiglipTextModel": lambda: ss.SiglipTextModel.from_pretrained(tiny_checkpoint)(
            ids, retrun_dict=True
        ),
        "SiglipVisionModel": lambda: ss.SiglipVisionModel.from_pretrained(tiny_checkpoint)(
            pixels, retrun_dict=True
        ),
        "get_text_features": lambda: model.get_text_features(ids, attention_masks=None),
        "get_image_features": lambda: model.get_image_features(
            pixels, interpolate_pos_encodings=True
        ),
        "tokenizer": lambda: processor.tokenizer(["a"], paddding="max_length"),
        "decode": lambda: processor.tokenizer.decode([4, 5], skip_special_token=True),
        "image processor": lambda: processor.image_processor(image, do_resise=False),
        "processor, text only": lambda: processor(text=["a"], paddding="max_length"),
        "processor, image": lambda: processor(images=image, do_resise=False),
        "pipeline call": lambda: ss.pipeline(model=tiny_checkpoint)(
            image, candidate_labels=["a"], hypothesis="{}"
        ),
        "save_pretrained": lambda: model.save_pretrained(
            tiny_checkpoint / "unused", max_shard_sise="1GB"
        ),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match="unexpected keyword argument"), torch.no_grad():
            call()
        assert not (tiny_checkpoint / "unused").exists(), name


def test_transformers_call_arguments_that_change_nothing_are_accepted(tiny_checkpoint):
    model = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    processor = ss.AutoProcessor.from_pretrained(tiny_checkpoint)
    inputs = processor(
        text=["a red circle"],
        images=Image.new("RGB", (40, 30)),
        padding="max_length",
        return_tensors="pt",
        return_attention_mask=False,
    )
    assert (
        processor.tokenizer(["a"], verbose=False)["input_ids"]
        == processor.tokenizer(["a"])["input_ids"]
    )
    with torch.no_grad():
        out = model(**inputs, return_dict=True)
        assert torch.equal(out.text_embeds, model(**inputs).text_embeds)
        features = model.get_text_features(
            inputs["input_ids"], output_attentions=False, return_dict=True
        )
        assert torch.equal(features, model.get_text_features(inputs["input_ids"]))
    assert processor.tokenizer.decode(
        [4, 5], clean_up_tokenization_spaces=True
    ) == processor.tokenizer.decode([4, 5])
    scores = ss.pipeline(model=tiny_checkpoint)(
        Image.new("RGB", (40, 30)), candidate_labels=["a", "b"], timeout=5, batch_size=8
    )
    assert [s["label"] for s in scores] and len(scores) == 2
