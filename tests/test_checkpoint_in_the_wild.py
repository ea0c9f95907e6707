"""Checkpoints as the hub has them: half precision, a tower alone, a hub id in the local cache, and the
ways such a download goes wrong. Each is built here (transformers or our own code, seeded, tiny);
each loads like transformers or fails in one line that says what to do.
"""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from pathlib import Path

import pytest
import torch
from checkpoints import make_hf_checkpoint, make_tiny_checkpoint, randomize_, tiny_config_dict
from indexer_fixtures import make_photo_folder
from safetensors.torch import load_file, save_file

import siglip_search as ss
from siglip_search import CheckpointError, InputError
from siglip_search.cli import main
from siglip_search.embedder import Embedder

tf = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")


def ids_and_pixels(n: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (n, 16), generator=gen)
    ids[:, -1] = 1
    return ids, torch.randn(n, 3, 38, 38, generator=gen)


def edit_config(directory: Path, edit) -> None:
    data = json.loads((directory / "config.json").read_text())
    edit(data)
    (directory / "config.json").write_text(json.dumps(data))


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def half_checkpoint(request, tmp_path_factory):
    """What many hub uploads are: transformers' model cast to half precision, then saved."""
    directory = make_hf_checkpoint(tmp_path_factory.mktemp("half"), seed=3)
    tf.SiglipModel.from_pretrained(directory).to(request.param).save_pretrained(directory)
    return directory, request.param


# --- half-precision checkpoints ------------------------------------------------------------------


def test_half_checkpoint_loads_as_float32_by_default_and_matches_transformers(half_checkpoint):
    directory, stored = half_checkpoint
    assert load_file(str(directory / "model.safetensors"))["logit_scale"].dtype == stored
    reference = tf.SiglipModel.from_pretrained(directory, dtype=torch.float32).eval()

    ours = ss.SiglipModel.from_pretrained(directory)

    assert {p.dtype for p in ours.parameters()} == {torch.float32}
    ids, pixels = ids_and_pixels()
    with torch.no_grad():
        torch.testing.assert_close(
            ours.get_image_features(pixels),
            reference.get_image_features(pixel_values=pixels).pooler_output,
            atol=1e-4,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            ours.get_text_features(ids),
            reference.get_text_features(input_ids=ids).pooler_output,
            atol=1e-4,
            rtol=1e-4,
        )


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("auto", None),
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        (torch.float32, torch.float32),
        ("torch.float16", torch.float16),
    ],
)
def test_torch_dtype_choices_on_a_half_checkpoint(half_checkpoint, asked, expected):
    directory, stored = half_checkpoint
    model = ss.SiglipModel.from_pretrained(directory, torch_dtype=asked)
    assert {p.dtype for p in model.parameters()} == {expected or stored}
    if asked == "auto":  # transformers 5's default
        assert model.dtype == tf.SiglipModel.from_pretrained(directory).dtype == stored


def test_auto_follows_config_dtype_before_the_weights_like_transformers(tiny_checkpoint, tmp_path):
    """A transformers 4 config says torch_dtype; transformers 5 writes dtype. Either wins over the weights."""
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    for key in ("torch_dtype", "dtype"):
        edit_config(
            directory,
            lambda data, key=key: (
                data.pop("dtype", None),
                data.pop("torch_dtype", None),
                data.update({key: "bfloat16"}),
            ),
        )
        assert ss.SiglipModel.from_pretrained(directory, torch_dtype="auto").dtype == torch.bfloat16
        assert tf.SiglipModel.from_pretrained(directory, dtype="auto").dtype == torch.bfloat16
    edit_config(directory, lambda data: data.update(dtype="float64x"))
    with pytest.raises(
        CheckpointError, match=r"config.json: dtype 'float64x' is not a floating torch dtype"
    ):
        ss.SiglipModel.from_pretrained(directory, torch_dtype="auto")


def test_embedder_on_a_half_checkpoint_gives_transformers_float32_vectors(half_checkpoint):
    directory, _ = half_checkpoint
    reference = tf.SiglipModel.from_pretrained(directory, dtype=torch.float32).eval()
    embedder = Embedder.from_pretrained(directory)
    texts = ["a red circle", "a dog on the beach at sunset"]
    ids = embedder.tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=embedder.text_length,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids).pooler_output
    expected = expected / expected.norm(dim=-1, keepdim=True)

    _, pixels = ids_and_pixels(seed=6)
    with torch.no_grad():
        expected_images = reference.get_image_features(pixel_values=pixels).pooler_output
    expected_images = expected_images / expected_images.norm(dim=-1, keepdim=True)

    vectors, image_vectors = embedder.embed_texts(texts), embedder.embed_pixels(pixels)

    assert vectors.dtype.name == image_vectors.dtype.name == "float32"
    torch.testing.assert_close(torch.from_numpy(vectors), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.from_numpy(image_vectors), expected_images, atol=1e-5, rtol=1e-5
    )


def test_index_and_search_with_a_bfloat16_checkpoint(tmp_path, capsys):
    directory = make_hf_checkpoint(tmp_path / "bf16", seed=4)
    tf.SiglipModel.from_pretrained(directory).to(torch.bfloat16).save_pretrained(directory)
    make_photo_folder(tmp_path / "photos", n=4)
    library = tmp_path / "library"

    assert (
        main(
            [
                "index",
                str(tmp_path / "photos"),
                "--library",
                str(library),
                "--model",
                str(directory),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["search", "a red circle", "--library", str(library)]) == 0
    assert capsys.readouterr().out.count("\n") >= 1


def test_saved_config_names_the_dtype_written(half_checkpoint, tmp_path):
    """A dtype kept from the loaded file would make transformers 5 (dtype="auto" by default) cast the
    float32 weights we wrote back to half precision."""
    directory, stored = half_checkpoint
    model = ss.SiglipModel.from_pretrained(directory)  # float32 in memory

    model.save_pretrained(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)

    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["dtype"] == str(dtype).removeprefix("torch.") and "torch_dtype" not in config
        assert tf.SiglipModel.from_pretrained(tmp_path / name).dtype == dtype
        assert ss.SiglipModel.from_pretrained(tmp_path / name, torch_dtype="auto").dtype == dtype


# --- bad arguments: one line, before any weights are read ---------------------------------------


@pytest.mark.parametrize("dtype", ["floatt16", "fp16", "nn", "int8", torch.int8, 3])
def test_a_torch_dtype_that_is_no_floating_dtype_is_refused_in_one_line(tmp_path, dtype):
    with pytest.raises(
        InputError, match=r"torch_dtype must be 'auto', a floating-point torch dtype"
    ) as info:
        ss.SiglipModel.from_pretrained(tmp_path / "not-even-there", torch_dtype=dtype)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "device",
    [
        "gpu0",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_a_device_this_machine_lacks_is_refused_in_one_line(tiny_checkpoint, device):
    for kwargs in ({"device": device}, {"device_map": device}):
        with pytest.raises(
            InputError,
            match=rf"device '{device}' cannot be used on this machine .*use device='cpu'",
        ):
            ss.SiglipModel.from_pretrained(tiny_checkpoint, **kwargs)
    with pytest.raises(InputError, match="cannot be used on this machine"):
        Embedder.from_pretrained(tiny_checkpoint, device=device)


# --- one tower, or the whole model -------------------------------------------------------------


def test_towers_we_save_alone_transformers_loads(tiny_checkpoint, tmp_path):
    ids, pixels = ids_and_pixels()
    for ours_cls, ref_cls, inputs in (
        (ss.SiglipTextModel, tf.SiglipTextModel, {"input_ids": ids}),
        (ss.SiglipVisionModel, tf.SiglipVisionModel, {"pixel_values": pixels}),
    ):
        ours = ours_cls.from_pretrained(tiny_checkpoint)
        ours.save_pretrained(tmp_path / ours_cls.__name__)

        reference = ref_cls.from_pretrained(tmp_path / ours_cls.__name__).eval()

        with torch.no_grad():
            torch.testing.assert_close(
                ours(**inputs).pooler_output, reference(**inputs).pooler_output
            )
        assert isinstance(ss.AutoModel.from_pretrained(tmp_path / ours_cls.__name__), ours_cls)


def test_full_model_from_a_tower_checkpoint_names_the_class_to_use(tmp_path):
    vision = tf.SiglipVisionModel(tf.SiglipVisionConfig(**tiny_config_dict()["vision_config"]))
    vision.save_pretrained(tmp_path / "vision")

    with pytest.raises(
        CheckpointError, match=r"holds one tower only; load it with SiglipVisionModel or AutoModel"
    ):
        ss.SiglipModel.from_pretrained(tmp_path / "vision")
    with pytest.raises(CheckpointError, match=r"load it with SiglipVisionModel"):
        ss.SiglipTextModel.from_pretrained(tmp_path / "vision")


def test_odd_tower_widths_round_trip_through_transformers(tmp_path):
    """Text narrower than vision with a projection; no vision head in a tower saved alone (PaliGemma)."""
    config = ss.SiglipConfig.from_dict(
        tiny_config_dict(
            text={
                "hidden_size": 20,
                "num_attention_heads": 5,
                "intermediate_size": 52,
                "projection_size": 48,
            },
            vision={"intermediate_size": 100, "patch_size": 9, "num_hidden_layers": 3},
        )
    )
    model = ss.SiglipModel(config)
    randomize_(model, seed=9)
    model.save_pretrained(tmp_path / "odd")
    headless = ss.SiglipVisionModel(
        ss.SiglipVisionConfig.from_dict(
            {**tiny_config_dict()["vision_config"], "vision_use_head": False}
        )
    )
    headless.save_pretrained(tmp_path / "headless")
    ids, pixels = ids_and_pixels(seed=5)

    reference = tf.SiglipModel.from_pretrained(tmp_path / "odd").eval()
    ref_headless = tf.SiglipVisionModel.from_pretrained(tmp_path / "headless").eval()

    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=pixels)
        b = reference(input_ids=ids, pixel_values=pixels)
        torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=1e-4, rtol=1e-4)
        ours_out, ref_out = headless(pixels), ref_headless(pixel_values=pixels)
    torch.testing.assert_close(
        ours_out.last_hidden_state, ref_out.last_hidden_state, atol=1e-4, rtol=1e-4
    )
    assert ours_out.pooler_output is None and ref_out.pooler_output is None


# --- sharded checkpoints whose index and shards disagree ------------------------------------------


def shard(src: Path, dst: Path, edit_index=None, edit_second=None) -> Path:
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    names = sorted(state)
    files = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {k: f for f, keys in files.items() for k in keys}
    parts = {f: {k: state[k] for k in keys} for f, keys in files.items()}
    if edit_second:
        edit_second(parts["model-00002-of-00002.safetensors"], state)
    for f, part in parts.items():
        save_file(part, str(dst / f), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": weight_map}
    if edit_index:
        edit_index(index)
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


def test_a_stale_copy_of_a_tensor_in_another_shard_is_refused_not_loaded(tiny_checkpoint, tmp_path):
    """transformers would load whichever copy it reads last; the index says which is current."""
    stale = shard(
        tiny_checkpoint,
        tmp_path / "ckpt",
        edit_second=lambda part, state: part.update(
            logit_bias=torch.zeros_like(state["logit_bias"])
        ),
    )
    with pytest.raises(
        CheckpointError,
        match=r"model-00002-of-00002.safetensors holds logit_bias, which "
        r"model.safetensors.index.json does not assign to it",
    ):
        ss.SiglipModel.from_pretrained(stale)


def test_a_tensor_the_index_lists_but_its_shard_lacks_is_named(tiny_checkpoint, tmp_path):
    broken = shard(
        tiny_checkpoint,
        tmp_path / "ckpt",
        edit_second=lambda part, state: part.pop(sorted(part)[0]),
    )
    with pytest.raises(
        CheckpointError,
        match=r"model-00002-of-00002.safetensors lacks .*which "
        r"model.safetensors.index.json assigns to it.*download the checkpoint again",
    ):
        ss.SiglipModel.from_pretrained(broken)


@pytest.mark.parametrize(
    "weight_map",
    [
        ["model-00001-of-00002.safetensors"],
        {"logit_bias": "../model.safetensors"},
        {"logit_bias": 3},
    ],
    ids=["list", "outside-the-directory", "not-a-name"],
)
def test_an_index_whose_weight_map_is_malformed_is_refused(tiny_checkpoint, tmp_path, weight_map):
    broken = shard(
        tiny_checkpoint,
        tmp_path / "ckpt",
        edit_index=lambda index: index.update(weight_map=weight_map),
    )
    with pytest.raises(
        CheckpointError, match=r"model.safetensors.index.json is not a valid safetensors index"
    ):
        ss.SiglipModel.from_pretrained(broken)


@pytest.mark.parametrize(
    "names",
    [
        ["pytorch_model.bin"],
        ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"],
    ],
)
def test_a_pickle_only_checkpoint_is_refused_with_the_conversion_to_run(
    tiny_checkpoint, tmp_path, names, capsys
):
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    (directory / "model.safetensors").unlink()
    for name in names:
        torch.save({}, directory / name)

    with pytest.raises(CheckpointError) as info:
        ss.SiglipModel.from_pretrained(directory)

    message = str(info.value)
    assert f"it has {names[0]}" in message and "does not read" in message
    assert (
        "save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors'"
        in message
    )
    make_photo_folder(tmp_path / "photos", n=1)
    assert (
        main(
            [
                "index",
                str(tmp_path / "photos"),
                "--library",
                str(tmp_path / "lib"),
                "--model",
                str(directory),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pytorch_model" in err


# --- config.json from elsewhere ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.update(model_type="clip"),
            r"model_type 'clip' is not .*\(not a SigLIP checkpoint\)",
        ),
        (
            lambda d: d.update(model_type="siglip2"),
            r"SigLIP 2 NaFlex checkpoints are not supported",
        ),
        (lambda d: d.update(text_config="base"), r"text_config must be a JSON object, got str"),
        (
            lambda d: d["text_config"].update(hidden_size="32"),
            r"text_config.hidden_size must be a positive integer, got '32'",
        ),
        (
            lambda d: d["vision_config"].update(num_attention_heads=0),
            r"vision_config.num_attention_heads must be a positive integer, got 0",
        ),
        (
            lambda d: d.pop("vision_config"),
            r"vision_model.*\(vision_config absent from config.json, so the base-size defaults were used\)",
        ),
    ],
    ids=["clip", "siglip2", "text-config-string", "width-string", "zero-heads", "no-vision-config"],
)
def test_a_config_json_that_is_not_this_model_says_why_in_one_line(
    tiny_checkpoint, tmp_path, edit, message
):
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    edit_config(directory, edit)
    for cls in (ss.SiglipModel, ss.AutoModel):
        with pytest.raises(CheckpointError, match=message) as info:
            cls.from_pretrained(directory)
        assert "\n" not in str(info.value)


# --- tokenizer files ------------------------------------------------------------------------


def test_missing_sentencepiece_file_names_the_files_and_the_remedy(tiny_checkpoint, tmp_path):
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    (directory / "spiece.model").unlink()
    for load in (
        ss.AutoTokenizer.from_pretrained,
        ss.AutoProcessor.from_pretrained,
        Embedder.from_pretrained,
    ):
        with pytest.raises(
            CheckpointError,
            match=r"has no tokenizer: expected spiece.model \(SigLIP\) or tokenizer.model",
        ):
            load(directory)
    (directory / "tokenizer.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"its tokenizer.json alone is not read: copy tokenizer.model"
    ):
        ss.AutoTokenizer.from_pretrained(directory)


def test_tokenizer_config_with_extra_keys_and_no_length_limit_acts_like_transformers(
    tiny_checkpoint, tmp_path
):
    """Fine-tunes often carry transformers' "no limit" (1e30) and keys SigLIP does not use."""
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.update(
        model_max_length=1000000000000000019884624838656,
        add_bos_token=True,
        legacy=True,
        clean_up_tokenization_spaces=True,
        sp_model_kwargs={},
        do_lower_case=True,
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    texts = ["A Cat!", "a bicycle by the river, at dusk"]
    ours, reference = (
        ss.AutoTokenizer.from_pretrained(directory),
        tf.SiglipTokenizer.from_pretrained(directory),
    )

    for kwargs in (
        {"padding": "max_length"},
        {"padding": "max_length", "truncation": True},
        {"padding": "max_length", "truncation": True, "max_length": 6},
    ):
        assert ours(texts, **kwargs)["input_ids"] == reference(texts, **kwargs)["input_ids"], kwargs
    embedder = Embedder.from_pretrained(directory)
    assert embedder.text_length == 16  # the model's positions bound it
    assert embedder.embed_texts(texts).shape == (2, 48)


# --- hub ids, offline ------------------------------------------------------------------------


def fake_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """huggingface_hub's cache layout: blobs, refs/main naming a commit, snapshots/<commit>/ of links."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "network-down"])
def test_a_hub_id_in_the_local_cache_loads_without_the_network(tmp_path, monkeypatch, offline):
    import huggingface_hub.constants

    source = make_tiny_checkpoint(tmp_path / "source", seed=2)
    cache = tmp_path / "hf-home" / "hub"
    fake_hub_cache(cache, "acme/tiny-siglip", source)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    embedder = Embedder.from_pretrained("acme/tiny-siglip")

    local = Embedder.from_pretrained(source)
    assert embedder.model_id == "acme/tiny-siglip"
    assert embedder.weights_sha256 == local.weights_sha256
    assert (embedder.embed_texts(["a red circle"]) == local.embed_texts(["a red circle"])).all()
    if not offline:
        return  # an uncached id would now go to the network, which this test forbids
    with pytest.raises(
        ss.ModelNotCachedError,
        match=r"acme/other is not in the local Hugging Face cache.*"
        r"hf download acme/other.*pass a local checkpoint directory",
    ):
        ss.SiglipModel.from_pretrained("acme/other")


def test_transformers_download_options_reach_the_hub_cache(tmp_path, monkeypatch):
    """cache_dir, revision and local_files_only as transformers takes them: a snapshot kept in a cache of
    the user's choosing loads with no network, pinned to its commit, and an id missing from that cache
    with local_files_only=True is refused without trying the network."""
    import huggingface_hub.constants

    source = make_tiny_checkpoint(tmp_path / "source", seed=3)
    cache = tmp_path / "my-cache"
    fake_hub_cache(cache, "acme/tiny-siglip", source)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))  # the default cache holds nothing
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-home" / "hub")
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    commit = "0123456789abcdef0123456789abcdef01234567"  # what fake_hub_cache's refs/main names
    options = {"cache_dir": cache, "revision": commit, "local_files_only": True}

    model = ss.AutoModel.from_pretrained("acme/tiny-siglip", **options)
    processor = ss.AutoProcessor.from_pretrained("acme/tiny-siglip", **options)
    tokenizer = ss.AutoTokenizer.from_pretrained(
        "acme/tiny-siglip", cache_dir=cache, local_files_only=True
    )
    config = ss.SiglipConfig.from_pretrained(
        "acme/tiny-siglip", cache_dir=str(cache), local_files_only=True
    )
    reference = ss.SiglipModel.from_pretrained(source)
    ids = tokenizer(["a red circle"], padding="max_length", return_tensors="pt")["input_ids"]
    assert torch.equal(
        ids,
        processor(text=["a red circle"], padding="max_length", return_tensors="pt")["input_ids"],
    )
    with torch.no_grad():
        assert torch.equal(model.get_text_features(ids), reference.get_text_features(ids))
    assert config.to_dict() == reference.config.to_dict()

    for kwargs in (
        {"cache_dir": tmp_path / "elsewhere"},
        {"cache_dir": cache, "revision": "f" * 40},
    ):
        with pytest.raises(
            ss.ModelNotCachedError,
            match=r"acme/tiny-siglip is not in the local Hugging Face cache "
            r"and could not be downloaded \(local_files_only=True\)",
        ):
            ss.SiglipModel.from_pretrained("acme/tiny-siglip", local_files_only=True, **kwargs)
