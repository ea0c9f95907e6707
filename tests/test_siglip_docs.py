"""Every code example of the transformers v4.37 SigLIP documentation page, run on siglip_search.

Each test body is the documented snippet unchanged except: `transformers` -> `siglip_search`, the hub
id -> a local checkpoint directory, and the COCO URL -> a local JPEG opened with `Image.open(path)`.
After the snippet, the test checks what the doc promises against transformers on the same files.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from checkpoints import make_tiny_checkpoint
from PIL import Image, ImageDraw

tf = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")

ATOL = RTOL = 1e-4  # transformers' answer within atol + rtol * |ref|


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny random checkpoint shaped like the hub's text side: 64 positions, padded to 64.

    transformers' own zero-shot pipeline pads SigLIP prompts to 64 tokens whatever the config
    says, so 64 positions let it run on the same directory as the reference.
    """
    directory = tmp_path_factory.mktemp("siglip-docs")
    return str(make_tiny_checkpoint(directory, seed=0, text={"max_position_embeddings": 64}))


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    """Stands in for the COCO photo of two cats: a real JPEG file on disk."""
    image = Image.new("RGB", (64, 48), (200, 180, 150))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 10, 28, 40), fill=(90, 60, 30))
    draw.ellipse((34, 8, 60, 42), fill=(40, 40, 40))
    path = tmp_path_factory.mktemp("images") / "000000039769.jpg"
    image.save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def ref_model(checkpoint):
    return tf.AutoModel.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def ref_processor(checkpoint):
    return tf.AutoProcessor.from_pretrained(checkpoint)


def test_pipeline_api_example(checkpoint, image_path, capsys):
    from siglip_search import pipeline

    # load pipe
    image_classifier = pipeline(task="zero-shot-image-classification", model=checkpoint)

    # load image
    image = Image.open(image_path)

    # inference
    outputs = image_classifier(image, candidate_labels=["2 cats", "a plane", "a remote"])
    raw = outputs
    outputs = [{"score": round(output["score"], 4), "label": output["label"]} for output in outputs]  # noqa: E202
    print(outputs)

    printed = capsys.readouterr().out
    assert printed.startswith("[{'score': ") and "'label': '2 cats'" in printed
    assert sorted(o["label"] for o in raw) == ["2 cats", "a plane", "a remote"]
    scores = [o["score"] for o in raw]
    assert scores == sorted(scores, reverse=True), "results are sorted by score"
    # Sigmoid scores: each label is an independent yes/no, so they need not sum to 1.
    assert abs(sum(scores) - 1) > 1e-2

    reference = tf.pipeline(task="zero-shot-image-classification", model=checkpoint)
    expected = reference(Image.open(image_path), candidate_labels=["2 cats", "a plane", "a remote"])
    assert [o["label"] for o in raw] == [o["label"] for o in expected]
    np.testing.assert_allclose(scores, [o["score"] for o in expected], atol=ATOL, rtol=RTOL)


def test_using_the_model_yourself_example(checkpoint, image_path, ref_model, ref_processor, capsys):
    from siglip_search import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)

    image = Image.open(image_path)

    texts = ["a photo of 2 cats", "a photo of 2 dogs"]
    # important: we pass `padding=max_length` since the model was trained with this
    inputs = processor(text=texts, images=image, padding="max_length", return_tensors="pt")

    with torch.no_grad():
        outputs = model(**inputs)

    logits_per_image = outputs.logits_per_image
    probs = torch.sigmoid(logits_per_image)  # these are the probabilities
    print(f"{probs[0][0]:.1%} that image 0 is '{texts[0]}'")

    assert inputs["input_ids"].shape == (2, 64) and inputs["pixel_values"].shape == (1, 3, 38, 38)
    assert logits_per_image.shape == (1, 2), "one row per image, one column per text"
    assert torch.equal(outputs.logits_per_text, logits_per_image.t())
    assert abs(float(probs.sum()) - 1) > 1e-2, "sigmoid, not softmax: a row need not sum to 1"

    ref_inputs = ref_processor(
        text=texts, images=Image.open(image_path), padding="max_length", return_tensors="pt"
    )
    assert torch.equal(inputs["input_ids"], ref_inputs["input_ids"])
    with torch.no_grad():
        ref = ref_model(**ref_inputs)
    assert_close(logits_per_image, ref.logits_per_image)
    printed = capsys.readouterr().out
    assert re.fullmatch(r"\d+\.\d% that image 0 is 'a photo of 2 cats'\n", printed)
    assert (
        printed
        == f"{torch.sigmoid(ref.logits_per_image)[0][0]:.1%} that image 0 is 'a photo of 2 cats'\n"
    )


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    # transformers 5 names a tower's own tensors without the "text_model." / "vision_model." prefix
    return {k.removeprefix(prefix): tuple(v.shape) for k, v in module.state_dict().items()}


def _reference_shapes(cls, config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # transformers' base-sized model without allocating its weights
        return _shapes(cls(config))


def test_siglip_config_example():
    from siglip_search import SiglipConfig, SiglipModel

    # Initializing a SiglipConfig with google/siglip-base-patch16-224 style configuration
    configuration = SiglipConfig()

    # Initializing a SiglipModel (with random weights) from the google/siglip-base-patch16-224
    # style configuration
    model = SiglipModel(configuration)

    # Accessing the model configuration
    configuration = model.config

    # We can also initialize a SiglipConfig from a SiglipTextConfig and a SiglipVisionConfig
    from siglip_search import SiglipTextConfig, SiglipVisionConfig

    # Initializing a SiglipText and SiglipVision configuration
    config_text = SiglipTextConfig()
    config_vision = SiglipVisionConfig()

    config = SiglipConfig.from_text_vision_configs(config_text, config_vision)

    assert model.config is configuration
    assert config.to_dict() == configuration.to_dict()
    text, vision = configuration.text_config, configuration.vision_config
    assert (
        text.vocab_size,
        text.hidden_size,
        text.num_hidden_layers,
        text.max_position_embeddings,
    ) == (32000, 768, 12, 64)
    assert (vision.image_size, vision.patch_size, vision.num_patches) == (224, 16, 196)
    # Same tensors, names and shapes as transformers' google/siglip-base-patch16-224-style model.
    assert _shapes(model) == _reference_shapes(tf.SiglipModel, tf.SiglipConfig())
    assert sum(p.numel() for p in model.parameters()) == 203_155_970


def test_siglip_text_config_example():
    from siglip_search import SiglipTextConfig, SiglipTextModel

    # Initializing a SiglipTextConfig with google/siglip-base-patch16-224 style configuration
    configuration = SiglipTextConfig()

    # Initializing a SiglipTextModel (with random weights) from the google/siglip-base-patch16-224
    # style configuration
    model = SiglipTextModel(configuration)

    # Accessing the model configuration
    configuration = model.config

    assert configuration.hidden_act == "gelu_pytorch_tanh" and configuration.pad_token_id == 1
    assert _shapes(model, "text_model.") == _reference_shapes(
        tf.SiglipTextModel, tf.SiglipTextConfig()
    )
    ids = torch.ones(1, 64, dtype=torch.long)  # one tiny forward: 64 x </s>
    with torch.no_grad():
        out = model(input_ids=ids)
    assert out.last_hidden_state.shape == (1, 64, 768) and out.pooler_output.shape == (1, 768)


def test_siglip_vision_config_example():
    from siglip_search import SiglipVisionConfig, SiglipVisionModel

    # Initializing a SiglipVisionConfig with google/siglip-base-patch16-224 style configuration
    configuration = SiglipVisionConfig()

    # Initializing a SiglipVisionModel (with random weights) from the google/siglip-base-patch16-224
    # style configuration
    model = SiglipVisionModel(configuration)

    # Accessing the model configuration
    configuration = model.config

    assert configuration.layer_norm_eps == 1e-6 and configuration.vision_use_head
    assert _shapes(model, "vision_model.") == _reference_shapes(
        tf.SiglipVisionModel, tf.SiglipVisionConfig()
    )


def test_get_text_features_example(checkpoint, ref_model):
    from siglip_search import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    # important: make sure to set padding="max_length" as that's how the model was trained
    inputs = tokenizer(
        ["a photo of a cat", "a photo of a dog"], padding="max_length", return_tensors="pt"
    )
    with torch.no_grad():
        text_features = model.get_text_features(**inputs)

    assert isinstance(text_features, torch.Tensor), "v4.37 API: the feature tensor itself"
    assert text_features.shape == (2, 48), "(texts, projection_size)"
    assert not torch.allclose(text_features.norm(dim=-1), torch.ones(2)), "un-normalised features"
    with torch.no_grad():
        embeds = model(**inputs).text_embeds
    assert_close(text_features / text_features.norm(dim=-1, keepdim=True), embeds)

    ref_tokenizer = tf.AutoTokenizer.from_pretrained(checkpoint)
    ref_inputs = ref_tokenizer(
        ["a photo of a cat", "a photo of a dog"], padding="max_length", return_tensors="pt"
    )
    assert torch.equal(inputs["input_ids"], ref_inputs["input_ids"])
    with torch.no_grad():
        assert_close(text_features, ref_model.get_text_features(**ref_inputs).pooler_output)


def test_get_image_features_example(checkpoint, image_path, ref_model, ref_processor):
    from siglip_search import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)

    image = Image.open(image_path)

    inputs = processor(images=image, return_tensors="pt")

    with torch.no_grad():
        image_features = model.get_image_features(**inputs)

    assert isinstance(image_features, torch.Tensor) and image_features.shape == (1, 48)
    ref_inputs = ref_processor(images=Image.open(image_path), return_tensors="pt")
    assert_close(inputs["pixel_values"], ref_inputs["pixel_values"])
    with torch.no_grad():
        assert_close(image_features, ref_model.get_image_features(**ref_inputs).pooler_output)


def test_siglip_text_model_example(checkpoint):
    from siglip_search import AutoTokenizer, SiglipTextModel

    model = SiglipTextModel.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    # important: make sure to set padding="max_length" as that's how the model was trained
    inputs = tokenizer(
        ["a photo of a cat", "a photo of a dog"], padding="max_length", return_tensors="pt"
    )

    outputs = model(**inputs)
    last_hidden_state = outputs.last_hidden_state
    pooled_output = outputs.pooler_output  # pooled (EOS token) states

    assert last_hidden_state.shape == (2, 64, 32) and pooled_output.shape == (2, 48)
    reference = tf.SiglipTextModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        ref = reference(**inputs)
    assert_close(last_hidden_state, ref.last_hidden_state)
    assert_close(pooled_output, ref.pooler_output)


def test_siglip_vision_model_example(checkpoint, image_path):
    from siglip_search import AutoProcessor, SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)

    image = Image.open(image_path)

    inputs = processor(images=image, return_tensors="pt")

    outputs = model(**inputs)
    last_hidden_state = outputs.last_hidden_state
    pooled_output = outputs.pooler_output  # pooled features

    # 38 px / patch 7 -> a 5x5 grid (3 px dropped), no CLS token; MAP head pools to one vector.
    assert last_hidden_state.shape == (1, 25, 48) and pooled_output.shape == (1, 48)
    reference = tf.SiglipVisionModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        ref = reference(**inputs)
    assert_close(last_hidden_state, ref.last_hidden_state)
    assert_close(pooled_output, ref.pooler_output)
