"""API corners where we used to differ from transformers (the reference), each checked against it.

Pipeline image loading, already-rescaled float pixels, numpy token ids and pad_to_multiple_of, sharded
saves, tower configs, parameter counts, the activations SigLIP uses (others refused), towers of different
widths, attentions.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from checkpoints import make_hf_checkpoint
from PIL import Image

import siglip_search as ss
from siglip_search.checkpoint import parse_shard_size
from siglip_search.errors import CheckpointError, InputError
from siglip_search.layers import activation

tf = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")

ATOL = RTOL = 1e-4


def assert_close(ours: torch.Tensor, ref: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=atol, rtol=atol)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """Made by transformers; 64 text positions so that transformers' pipeline (which pads to 64) runs
    on it."""
    return make_hf_checkpoint(
        tmp_path_factory.mktemp("hf-gaps"), seed=5, text={"max_position_embeddings": 64}
    )


@pytest.fixture(scope="module")
def ours(hf_dir):
    return ss.SiglipModel.from_pretrained(hf_dir)


# --- 1. the zero-shot pipeline loads images as transformers' load_image does --------------------


def _rgba(seed: int, size=(45, 31)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")


def test_pipeline_scores_equal_transformers_for_rgba_and_exif_rotated_images(hf_dir, tmp_path):
    png = tmp_path / "clear.png"
    _rgba(1).save(png)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (24, 52, 3), dtype=np.uint8)).save(
        rotated, exif=exif, quality=95
    )
    inputs = {
        "RGBA PIL image": lambda: _rgba(0),
        "RGBA PNG path": lambda: str(png),
        "EXIF-6 JPEG path": lambda: str(rotated),
        "EXIF-6 JPEG opened": lambda: Image.open(rotated),
    }
    labels = ["red", "a dog", "blue square", "night"]
    classify = ss.pipeline("zero-shot-image-classification", model=hf_dir)
    reference = tf.pipeline("zero-shot-image-classification", model=str(hf_dir))
    for name, make in inputs.items():
        got = classify(make(), candidate_labels=labels)
        want = reference(make(), candidate_labels=labels)
        assert [o["label"] for o in got] == [o["label"] for o in want], name
        np.testing.assert_allclose(
            [o["score"] for o in got], [o["score"] for o in want], atol=1e-5, err_msg=name
        )


def test_the_image_processor_alone_still_composites_alpha_on_white():
    processor = ss.SiglipImageProcessor(size={"height": 8, "width": 8})
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert torch.allclose(
        processor(clear, return_tensors="pt")["pixel_values"], torch.ones(1, 3, 8, 8)
    )
    from siglip_search.zero_shot import load_image

    assert load_image(clear).getpixel((0, 0)) == (255, 0, 0), (
        "the pipeline drops alpha as transformers does"
    )


# --- 2. float pixels already in [0, 1] with do_rescale=False --------------------------------------


def test_unit_float_pixels_without_rescale_match_transformers(hf_dir):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ref = SiglipImageProcessorPil.from_pretrained(hf_dir)
    mine = ss.SiglipImageProcessor.from_pretrained(hf_dir)
    hwc = np.random.default_rng(3).random((57, 91, 3), dtype=np.float32)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
    for image in (hwc, chw):
        for extra in ({}, {"do_resize": False}):
            a = mine(image, do_rescale=False, return_tensors="pt", **extra)["pixel_values"]
            b = ref(image, do_rescale=False, return_tensors="pt", **extra)["pixel_values"]
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-4, (type(image).__name__, extra)
            assert a.min() >= -1 and a.max() <= 1


def test_a_batch_of_image_lists_matches_transformers_and_four_channels_without_rgb_say_why(hf_dir):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ref = SiglipImageProcessorPil.from_pretrained(hf_dir)
    mine = ss.SiglipImageProcessor.from_pretrained(hf_dir)
    rgb = [_rgba(s).convert("RGB") for s in (4, 5, 6)]
    nested = [[rgb[0], rgb[1]], [rgb[2]]]
    a = mine(nested, return_tensors="pt")["pixel_values"]
    b = ref(nested, return_tensors="pt")["pixel_values"]
    assert a.shape == b.shape == (3, 3, *a.shape[-2:]) and (a - b).abs().max() <= 1e-4
    with pytest.raises(InputError, match="RGBA image has 4 channels.*do_convert_rgb=True"):
        mine(_rgba(7), do_convert_rgb=False)


def test_unit_float_pixels_with_the_default_rescale_are_rescaled_once():
    """Our deliberate difference: transformers rescales [0, 1] floats twice (all pixels near -1)."""
    processor = ss.SiglipImageProcessor(size={"height": 16, "width": 16})
    image = np.random.default_rng(4).random((16, 16, 3), dtype=np.float32)
    default = processor(image, return_tensors="pt")["pixel_values"]
    assert_close(
        default,
        processor(image, do_rescale=False, return_tensors="pt")["pixel_values"],
        atol=2 / 255 + 1e-6,
    )


# --- 3. tokenizer: numpy ids and pad_to_multiple_of ------------------------------------------------


def test_numpy_ids_and_pad_to_multiple_of_match_transformers(hf_dir):
    ref = tf.SiglipTokenizer.from_pretrained(hf_dir)
    mine = ss.SiglipTokenizer.from_pretrained(hf_dir)
    texts = ["a red circle", "a much longer caption about a dog on the beach at sunset"]
    cases = [
        {"padding": "max_length", "truncation": True},
        {"padding": True, "pad_to_multiple_of": 8},
        {"padding": "longest", "pad_to_multiple_of": 5},
        {"padding": "max_length", "max_length": 37, "pad_to_multiple_of": 8},
        {"padding": True, "truncation": True, "max_length": 12, "pad_to_multiple_of": 4},
    ]
    for kwargs in cases:
        for tensors in ("np", "pt", None):
            a = mine(texts, return_tensors=tensors, **kwargs)["input_ids"]
            b = ref(texts, return_tensors=tensors, **kwargs)["input_ids"]
            if tensors == "np":
                assert isinstance(a, np.ndarray) and a.dtype == b.dtype, kwargs
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(kwargs))
    with pytest.raises(ValueError, match="multiple of pad_to_multiple_of"):  # both refuse it
        ref(texts, padding=True, truncation=True, max_length=13, pad_to_multiple_of=8)
    with pytest.raises(InputError, match="multiple of pad_to_multiple_of"):
        mine(texts, padding=True, truncation=True, max_length=13, pad_to_multiple_of=8)
    single = mine("a red circle", padding="max_length", return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(
        single, ref("a red circle", padding="max_length", return_tensors="np")["input_ids"]
    )
    processed = ss.SiglipProcessor.from_pretrained(hf_dir)(
        text=texts, padding=True, pad_to_multiple_of=8, return_tensors="np"
    )
    assert isinstance(processed["input_ids"], np.ndarray) and processed["input_ids"].shape == (
        2,
        40,
    )


# --- 4. sharded safetensors, loadable both ways ----------------------------------------------------


def test_sharded_save_loads_in_transformers_and_back(ours, tmp_path):
    ours.save_pretrained(tmp_path / "ours", max_shard_size="50KB", safe_serialization=True)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in (tmp_path / "ours").glob("model-*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"].values()) == set(shards)
    assert set(index["weight_map"]) == set(ours.state_dict())
    assert index["metadata"]["total_size"] == sum(v.numel() * 4 for v in ours.state_dict().values())
    assert not (tmp_path / "ours" / "model.safetensors").exists()
    assert all(
        p.stat().st_size <= 50_000 + 2_000 for p in (tmp_path / "ours").glob("model-*.safetensors")
    )
    ref = tf.SiglipModel.from_pretrained(tmp_path / "ours")
    for key, value in ours.state_dict().items():
        assert torch.equal(ref.state_dict()[key], value), key
    ref.save_pretrained(tmp_path / "theirs", max_shard_size="60KB")
    back = ss.SiglipModel.from_pretrained(tmp_path / "theirs")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.state_dict().items())
    # Saving again unsharded leaves no stale shards or index that a loader could pick up.
    ours.save_pretrained(tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_shard_sizes_and_unsupported_serialization(ours, tmp_path):
    assert [parse_shard_size(s) for s in ("50KB", "5GB", "200MB", "1KiB", "2 MiB", 1234)] == [
        50_000,
        5_000_000_000,
        200_000_000,
        1024,
        2 * 1024**2,
        1234,
    ]
    with pytest.raises(InputError, match="max_shard_size"):
        parse_shard_size("lots")
    with pytest.raises(InputError, match="only safetensors"):
        ours.save_pretrained(tmp_path / "bin", safe_serialization=False)
    ours.save_pretrained(tmp_path / "one", max_shard_size="5GB")  # fits: one file, no index
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


# --- 5. tower configs, num_parameters, activation names ------------------------------------------


def test_tower_configs_from_pretrained_match_transformers(hf_dir, tmp_path):
    tf.SiglipTextModel.from_pretrained(hf_dir).save_pretrained(tmp_path / "text")
    for ours_cls, ref_cls in (
        (ss.SiglipTextConfig, tf.SiglipTextConfig),
        (ss.SiglipVisionConfig, tf.SiglipVisionConfig),
    ):
        for directory in (hf_dir, tmp_path / "text"):
            if ours_cls is ss.SiglipVisionConfig and directory != hf_dir:
                with pytest.raises(CheckpointError, match="siglip_text_model"):
                    ours_cls.from_pretrained(directory)
                continue
            mine, ref = ours_cls.from_pretrained(directory), ref_cls.from_pretrained(directory)
            for field in dataclasses.fields(mine):
                if field.name != "extra":
                    assert getattr(ref, field.name) == getattr(mine, field.name), (
                        directory.name,
                        field.name,
                    )
    assert ss.SiglipVisionConfig.from_pretrained(hf_dir).image_size == 38


def test_num_parameters_match_transformers(hf_dir, ours):
    ref = tf.SiglipModel.from_pretrained(hf_dir)
    text, vision = (
        ss.SiglipTextModel.from_pretrained(hf_dir),
        ss.SiglipVisionModel.from_pretrained(hf_dir),
    )
    ref_text, ref_vision = (
        tf.SiglipTextModel.from_pretrained(hf_dir),
        tf.SiglipVisionModel.from_pretrained(hf_dir),
    )
    for mine, theirs in ((ours, ref), (text, ref_text), (vision, ref_vision)):
        for flags in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
            assert mine.num_parameters(**flags) == theirs.num_parameters(**flags), (
                type(mine).__name__,
                flags,
            )
    assert ours.num_parameters(exclude_embeddings=True) < ours.num_parameters()


SIGLIP_ACTIVATIONS = ["gelu_pytorch_tanh", "gelu"]  # what SigLIP and SigLIP 2 configs carry
OTHER_ACTIVATIONS = [
    "gelu_fast",
    "gelu_accurate",
    "gelu_python",
    "gelu_10",
    "quick_gelu",
    "relu6",
    "sigmoid",
    "tanh",
    "swish",
    "linear",
    "mish",
    "leaky_relu",
    "gelu_new",
    "gelu_python_tanh",
    "relu2",
    "hardswish",
    "relu",
    "silu",
]


@pytest.mark.parametrize("name", SIGLIP_ACTIVATIONS)
def test_activation_equals_transformers(name):
    from transformers.activations import ACT2FN

    x = torch.linspace(-30, 30, 4001, dtype=torch.float32)
    torch.testing.assert_close(activation(name)(x), ACT2FN[name](x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", OTHER_ACTIVATIONS)
def test_other_activations_are_refused_in_one_line_naming_the_supported_ones(name):
    from transformers.activations import ACT2FN

    assert name in ACT2FN  # transformers knows it; SigLIP checkpoints do not use it
    for make in (
        lambda: ss.SiglipTextConfig(hidden_act=name),
        lambda: ss.SiglipConfig(vision_config={"hidden_act": name}),
    ):
        with pytest.raises(
            CheckpointError,
            match=rf"hidden_act '{name}' is not supported: SigLIP checkpoints use "
            r"'gelu_pytorch_tanh' or 'gelu'$",
        ):
            make()


def test_a_checkpoint_with_exact_gelu_matches_transformers_and_other_activations_are_refused(
    tmp_path,
):
    directory = make_hf_checkpoint(tmp_path / "gelu", seed=6, text={"hidden_act": "gelu"})
    mine, ref = (
        ss.SiglipModel.from_pretrained(directory),
        tf.SiglipModel.from_pretrained(directory).eval(),
    )
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    pixels = torch.randn(2, 3, 38, 38, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(
            mine(input_ids=ids, pixel_values=pixels).logits_per_image,
            ref(input_ids=ids, pixel_values=pixels).logits_per_image,
        )
    other = make_hf_checkpoint(
        tmp_path / "other", seed=6, text={"hidden_act": "gelu_fast"}, vision={"hidden_act": "mish"}
    )
    with pytest.raises(
        CheckpointError, match="text_config.hidden_act 'gelu_fast' is not supported"
    ):
        ss.SiglipModel.from_pretrained(other)


# --- 6. a text projection that differs from the vision width -------------------------------------


def test_towers_of_different_widths_build_and_give_features(tmp_path):
    config = ss.SiglipConfig(text_config={"hidden_size": 64, "num_attention_heads": 4})
    assert config.text_config.projection_size == 64 != config.vision_config.hidden_size
    directory = make_hf_checkpoint(tmp_path, seed=7, text={"projection_size": 40})
    mine, ref = (
        ss.SiglipModel.from_pretrained(directory),
        tf.SiglipModel.from_pretrained(directory).eval(),
    )
    ids = torch.randint(3, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    pixels = torch.randn(2, 3, 38, 38, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(mine.get_text_features(ids), ref.get_text_features(ids).pooler_output)
        assert mine.get_text_features(ids).shape == (3, 40)
        assert_close(mine.get_image_features(pixels), ref.get_image_features(pixels).pooler_output)
        assert mine(input_ids=ids).text_embeds.shape == (3, 40)
        with pytest.raises(CheckpointError, match="cannot compute logits"):
            mine(input_ids=ids, pixel_values=pixels)
    from siglip_search.embedder import Embedder

    # search needs one space
    with pytest.raises(CheckpointError, match="cannot be used for search"):
        Embedder.from_pretrained(directory)


# --- 7. output_attentions --------------------------------------------------------------------------


def test_output_attentions_match_transformers_eager(hf_dir, ours):
    ref = tf.SiglipModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
    tok = ss.SiglipTokenizer.from_pretrained(hf_dir)
    enc = tok(
        ["a red circle", "a dog"],
        padding="max_length",
        truncation=True,
        max_length=64,
        return_tensors="pt",
        return_attention_mask=True,
    )
    pixels = torch.randn(2, 3, 38, 38, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = ours(input_ids=enc["input_ids"], pixel_values=pixels)
        assert (
            plain.text_model_output.attentions is None
            and plain.vision_model_output.attentions is None
        )
        for mask in (None, enc["attention_mask"]):
            a = ours(
                input_ids=enc["input_ids"],
                attention_mask=mask,
                pixel_values=pixels,
                output_attentions=True,
            )
            b = ref(
                input_ids=enc["input_ids"],
                attention_mask=mask,
                pixel_values=pixels,
                output_attentions=True,
            )
            for tower in ("text_model_output", "vision_model_output"):
                got, want = getattr(a, tower).attentions, getattr(b, tower).attentions
                assert len(got) == len(want) == 2
                for g, w in zip(got, want, strict=True):
                    assert g.shape == w.shape
                    assert_close(g, w, atol=1e-5)
            assert_close(a.logits_per_image, b.logits_per_image)
        assert a.text_model_output.attentions[0].shape == (2, 4, 64, 64)
        assert a.vision_model_output.attentions[0].shape == (2, 3, 25, 25)
        text_alone = ss.SiglipTextModel.from_pretrained(hf_dir)(
            enc["input_ids"], output_attentions=True
        )
        joint = ours(
            input_ids=enc["input_ids"], output_attentions=True
        ).text_model_output.attentions
        assert_close(text_alone.attentions[1], joint[1], atol=1e-6)


@pytest.mark.parametrize("hidden_act", ["gelu_pytorch_tanh", "gelu"])
def test_the_embedders_fused_fp32_towers_match_transformers(tmp_path, hidden_act):
    # The embedder's fp32 runs inference copies (siglip_search/inference.py: residuals summed inside
    # the matmuls, tanh GELU as x * sigmoid(2u)); they must stay within the parity tolerance.
    from siglip_search.inference import fp32_tower

    act = {"hidden_act": hidden_act}
    directory = make_hf_checkpoint(tmp_path / "ckpt", seed=7, text=act, vision=act)
    mine, ref = (
        ss.SiglipModel.from_pretrained(directory),
        tf.SiglipModel.from_pretrained(directory).eval(),
    )
    ids = torch.randint(3, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    pixels = torch.randn(3, 3, 38, 38, generator=torch.Generator().manual_seed(1))
    text, vision = fp32_tower(mine.text_model), fp32_tower(mine.vision_model)
    with torch.no_grad():
        assert_close(text.pooled_output(ids), ref.get_text_features(input_ids=ids).pooler_output)
        assert_close(
            vision(pixels).pooler_output,
            ref.get_image_features(pixel_values=pixels).pooler_output,
        )
        # the copies share the model's parameters and leave its own forward as it was
        assert text.encoder.layers[0].fc1.weight is mine.text_model.encoder.layers[0].mlp.fc1.weight
        assert_close(
            mine.vision_model(pixels).pooler_output,
            ref.get_image_features(pixel_values=pixels).pooler_output,
        )
