"""Loading and saving checkpoints in the Hugging Face layout, on real files a user might have.

Strict loading names what is wrong; broken files give a CheckpointError instead of a crash; what we
save transformers loads and the reverse; awkward so400m-like proportions match transformers.
"""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from pathlib import Path

import pytest
import torch
from checkpoints import make_hf_checkpoint
from safetensors.torch import load_file, save_file

import siglip_search as ss
from siglip_search import CheckpointError, ModelNotCachedError

tf = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")

ATOL = RTOL = 1e-4  # transformers' answer within atol + rtol * |ref|


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=ATOL, rtol=RTOL)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_weights(directory: Path, edit) -> None:
    state = load_file(str(directory / "model.safetensors"))
    edit(state)
    save_file(state, str(directory / "model.safetensors"))


def inputs(n: int = 3, length: int = 16, size: int = 38, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (n, length), generator=gen)
    ids[:, -1] = 1  # ends with </s>, as the tokenizer pads
    return ids, torch.randn(n, 3, size, size, generator=gen)


def assert_same_outputs(ours, ref, ids, pixels) -> None:
    with torch.no_grad():
        a = ours(input_ids=ids, pixel_values=pixels, return_loss=True)
        b = ref(input_ids=ids, pixel_values=pixels, return_loss=True)
        assert_close(
            ours.get_text_features(ids), ref.get_text_features(input_ids=ids).pooler_output
        )
        assert_close(
            ours.get_image_features(pixels),
            ref.get_image_features(pixel_values=pixels).pooler_output,
        )
    assert_close(a.logits_per_image, b.logits_per_image)
    assert_close(a.loss, b.loss)


# --- strictness: a wrong tensor is named ---------------------------------------------------------


def test_missing_tensor_fails_naming_it(tiny_checkpoint, tmp_path):
    broken = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    rewrite_weights(broken, lambda state: state.pop("vision_model.head.probe"))
    with pytest.raises(CheckpointError, match=r"missing tensors: vision_model\.head\.probe"):
        ss.SiglipModel.from_pretrained(broken)


def test_extra_tensor_fails_naming_it(tiny_checkpoint, tmp_path):
    broken = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    rewrite_weights(
        broken, lambda state: state.update({"text_model.adapter.weight": torch.zeros(4, 4)})
    )
    with pytest.raises(CheckpointError, match=r"unexpected tensors: text_model\.adapter\.weight"):
        ss.SiglipModel.from_pretrained(broken)


def test_misshaped_tensor_names_key_and_both_shapes(tiny_checkpoint, tmp_path):
    broken = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    rewrite_weights(
        broken, lambda state: state.update({"text_model.head.weight": torch.zeros(48, 31)})
    )
    with pytest.raises(CheckpointError) as info:
        ss.SiglipModel.from_pretrained(broken)
    message = str(info.value)
    assert "text_model.head.weight" in message
    assert "(48, 31)" in message and "(48, 32)" in message, "checkpoint shape and model shape"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-half"),
        pytest.param(lambda data: data[:100], id="truncated-header"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: bytes(range(256)) * 40, id="garbage"),
        pytest.param(
            lambda data: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + data[24:],
            id="bad-header",
        ),
    ],
)
def test_corrupt_weights_file_is_a_checkpoint_error_not_a_crash(tiny_checkpoint, tmp_path, corrupt):
    broken = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    weights = broken / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt or truncated"):
        ss.SiglipModel.from_pretrained(broken)


@pytest.mark.parametrize(
    "cls", [ss.SiglipModel, ss.AutoModel, ss.SiglipTextModel, ss.SiglipVisionModel]
)
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "is missing"),
        ("{not json", "is not valid JSON"),
        (b"\xff\xfe\x00", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
    ],
    ids=["missing", "invalid-json", "binary", "json-list"],
)
def test_bad_config_json_gives_a_clear_error(tiny_checkpoint, tmp_path, cls, content, reason):
    broken = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    config = broken / "config.json"
    if content is None:
        config.unlink()
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    with pytest.raises(CheckpointError, match="config.json " + reason):
        cls.from_pretrained(broken)


# --- config.json: unknown keys kept, missing keys defaulted ------------------------------------


def test_config_with_unknown_keys_loads_and_keeps_them(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    data = json.loads((ckpt / "config.json").read_text())
    data["my_note"] = "fine-tuned on holiday photos"
    data["text_config"]["future_option"] = 3
    data["vision_config"]["another_option"] = [1, 2]
    (ckpt / "config.json").write_text(json.dumps(data))

    model = ss.SiglipModel.from_pretrained(ckpt)

    saved = model.config.to_dict()
    assert (
        saved["my_note"] == "fine-tuned on holiday photos"
        and model.config.my_note == saved["my_note"]
    )
    assert saved["text_config"]["future_option"] == 3
    assert saved["vision_config"]["another_option"] == [1, 2]
    model.save_pretrained(tmp_path / "resaved")
    again = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert again["my_note"] == saved["my_note"] and again["text_config"]["future_option"] == 3


def test_minimal_config_gives_base_defaults(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "siglip", "text_config": {}, "vision_config": {}})
    )

    config = ss.SiglipConfig.from_pretrained(tmp_path)

    text, vision = config.text_config, config.vision_config
    assert (text.vocab_size, text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (
        32000,
        768,
        3072,
        12,
    )
    assert (text.max_position_embeddings, text.pad_token_id, text.projection_size) == (64, 1, 768)
    assert (vision.image_size, vision.patch_size, vision.num_patches, vision.layer_norm_eps) == (
        224,
        16,
        196,
        1e-6,
    )
    reference = tf.SiglipConfig.from_pretrained(tmp_path)
    for ours, ref in ((text, reference.text_config), (vision, reference.vision_config)):
        for key, value in ours.to_dict().items():
            assert getattr(ref, key) == value, key


# --- sharded checkpoints --------------------------------------------------------------------------


def write_two_shards(src: Path, dst: Path) -> None:
    """What transformers writes for a big model: an index plus numbered shard files."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(str(src / "model.safetensors"))
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(dst / file), metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    index = {
        "metadata": {"total_size": sum(t.numel() * 4 for t in state.values())},
        "weight_map": weight_map,
    }
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_sharded_checkpoint_loads_equal_to_unsharded(tiny_checkpoint, tmp_path):
    write_two_shards(tiny_checkpoint, tmp_path / "sharded")
    assert not (tmp_path / "sharded" / "model.safetensors").exists()

    assert_same_weights(
        ss.SiglipModel.from_pretrained(tmp_path / "sharded"),
        ss.SiglipModel.from_pretrained(tiny_checkpoint),
    )


def test_sharded_checkpoint_saved_by_transformers_loads(tiny_checkpoint, tmp_path):
    tf.SiglipModel.from_pretrained(tiny_checkpoint).save_pretrained(
        tmp_path / "hf-sharded", max_shard_size="100KB"
    )
    assert len(list((tmp_path / "hf-sharded").glob("model-*.safetensors"))) >= 2

    assert_same_weights(
        ss.SiglipModel.from_pretrained(tmp_path / "hf-sharded"),
        ss.SiglipModel.from_pretrained(tiny_checkpoint),
    )


def test_sharded_checkpoint_with_a_missing_shard_names_the_file(tiny_checkpoint, tmp_path):
    write_two_shards(tiny_checkpoint, tmp_path / "sharded")
    (tmp_path / "sharded" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors is missing"):
        ss.SiglipModel.from_pretrained(tmp_path / "sharded")


# --- interchange with transformers, both ways ----------------------------------------------------


def test_what_we_save_transformers_loads_with_the_same_outputs(tiny_checkpoint, tmp_path):
    ours = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    ours.save_pretrained(tmp_path / "saved")

    reference = tf.SiglipModel.from_pretrained(tmp_path / "saved").eval()

    assert_same_outputs(ours, reference, *inputs())


def test_what_transformers_saves_we_load_with_the_same_outputs(tmp_path):
    directory = make_hf_checkpoint(tmp_path / "hf", seed=7)
    reference = tf.SiglipModel.from_pretrained(directory).eval()

    ours = ss.SiglipModel.from_pretrained(directory)

    assert_same_outputs(ours, reference, *inputs(seed=1))


def test_towers_saved_alone_by_transformers_load(tmp_path):
    """transformers 5 writes a lone tower's tensors without the text_model./vision_model. prefix."""
    text = tf.SiglipTextModel(
        tf.SiglipTextConfig(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=16,
        )
    ).eval()
    vision = tf.SiglipVisionModel(
        tf.SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    text.save_pretrained(tmp_path / "text")
    vision.save_pretrained(tmp_path / "vision")
    ids, pixels = inputs(2, 16, 32)

    with torch.no_grad():
        assert_close(
            ss.SiglipTextModel.from_pretrained(tmp_path / "text")(ids).pooler_output,
            text(ids).pooler_output,
        )
        assert_close(
            ss.SiglipVisionModel.from_pretrained(tmp_path / "vision")(pixels).pooler_output,
            vision(pixels).pooler_output,
        )


def test_towers_load_from_a_full_siglip_checkpoint(tiny_checkpoint):
    full = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    ids, pixels = inputs()

    text = ss.SiglipTextModel.from_pretrained(tiny_checkpoint)
    vision = ss.SiglipVisionModel.from_pretrained(tiny_checkpoint)

    with torch.no_grad():
        assert torch.equal(text(ids).pooler_output, full.text_model(ids).pooler_output)
        assert torch.equal(vision(pixels).pooler_output, full.get_image_features(pixels))
        assert_close(
            text(ids).last_hidden_state,
            tf.SiglipTextModel.from_pretrained(tiny_checkpoint)(input_ids=ids).last_hidden_state,
        )


@pytest.mark.parametrize("dtype", [torch.float16, "bfloat16"], ids=["float16", "bfloat16-string"])
def test_torch_dtype_is_respected(tiny_checkpoint, dtype):
    expected = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)

    model = ss.SiglipModel.from_pretrained(tiny_checkpoint, torch_dtype=dtype)

    assert model.dtype == expected
    assert {p.dtype for p in model.parameters()} == {expected}
    full = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    ids, pixels = inputs()
    with torch.no_grad():
        low, high = model.get_image_features(pixels), full.get_image_features(pixels)
    assert low.dtype == expected
    assert torch.nn.functional.cosine_similarity(low.float(), high, dim=-1).min() > 0.99


# --- where the checkpoint comes from ------------------------------------------------------------


def test_uncached_hub_id_offline_says_so_and_downloads_nothing(tmp_path, monkeypatch):
    import huggingface_hub.constants

    empty_home = tmp_path / "hf-home"
    empty_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(empty_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty_home / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    with pytest.raises(ModelNotCachedError) as info:
        ss.SiglipModel.from_pretrained("google/siglip-base-patch16-224")

    message = str(info.value)
    assert "google/siglip-base-patch16-224" in message
    assert "not in the local Hugging Face cache" in message
    assert "pass a local checkpoint directory" in message
    assert not any(p.is_file() for p in empty_home.rglob("*")), "nothing was downloaded"


def test_nonexistent_local_path_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        ss.SiglipModel.from_pretrained(tmp_path / "no-such-model")
    assert not isinstance(info.value, ModelNotCachedError)


# --- any size from the config: so400m's awkward proportions, scaled down ------------------------

# so400m: hidden 1152, MLP 4304 (not a multiple of the width), 16 heads of 72, patch 14, 384 px
# (27 patches, 6 px dropped). Scaled down: hidden 72, MLP 268, 4 heads of 18, patch 7, 38 px
# (5 patches, 3 px dropped); the text tower as wide as the vision tower, so no projection.
SO400M_LIKE = {
    "text": {
        "hidden_size": 72,
        "intermediate_size": 268,
        "num_attention_heads": 4,
        "projection_size": 72,
    },
    "vision": {
        "hidden_size": 72,
        "intermediate_size": 268,
        "num_attention_heads": 4,
        "patch_size": 7,
        "image_size": 38,
    },
}


@pytest.fixture(scope="module")
def so400m_like(tmp_path_factory):
    directory = make_hf_checkpoint(tmp_path_factory.mktemp("so400m-like"), seed=5, **SO400M_LIKE)
    return ss.SiglipModel.from_pretrained(directory), tf.SiglipModel.from_pretrained(
        directory
    ).eval()


def test_so400m_like_proportions_match_transformers(so400m_like):
    ours, reference = so400m_like
    ids, pixels = inputs(seed=2)

    assert ours.vision_model.embeddings.position_embedding.weight.shape == (25, 72)
    assert_same_outputs(ours, reference, ids, pixels)
    with torch.no_grad():
        hidden = ours.vision_model(pixels).last_hidden_state
        assert_close(hidden, reference.vision_model(pixel_values=pixels).last_hidden_state)
    assert hidden.shape == (3, 25, 72)


def test_so400m_like_grid_ignores_the_leftover_pixels(so400m_like):
    ours, _ = so400m_like
    _, pixels = inputs(seed=3)
    edited = pixels.clone()
    # the last 3 rows and columns fall outside the 5x5 grid of 7 px patches
    edited[..., 35:, :] = 0.0
    edited[..., :, 35:] = 0.0

    with torch.no_grad():
        assert torch.equal(ours.get_image_features(pixels), ours.get_image_features(edited))
        edited[..., 34, 34] = 0.0  # inside the grid: the features change
        assert not torch.equal(ours.get_image_features(pixels), ours.get_image_features(edited))


def test_interpolate_pos_encoding_on_a_larger_non_square_input_matches_transformers(so400m_like):
    ours, reference = so400m_like
    ids, _ = inputs(2, seed=4)
    pixels = torch.randn(2, 3, 52, 71, generator=torch.Generator().manual_seed(4))  # 7x10 patches

    with torch.no_grad():
        a = ours(
            input_ids=ids, pixel_values=pixels, interpolate_pos_encoding=True, return_loss=True
        )
        b = reference(
            input_ids=ids, pixel_values=pixels, interpolate_pos_encoding=True, return_loss=True
        )
    assert a.vision_model_output.last_hidden_state.shape == (2, 70, 72)
    assert_close(a.vision_model_output.last_hidden_state, b.vision_model_output.last_hidden_state)
    assert_close(a.image_embeds, b.image_embeds)
    assert_close(a.logits_per_image, b.logits_per_image)
    assert_close(a.loss, b.loss)
    with pytest.raises(ss.InputError, match="interpolate_pos_encoding=True"):
        ours.get_image_features(pixels)
