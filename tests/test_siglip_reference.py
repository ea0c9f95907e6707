"""Our SigLIP against transformers (the reference) on small random checkpoints made by transformers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from checkpoints import make_hf_checkpoint
from PIL import Image

import siglip_search as ss
from siglip_search.layers import SiglipMultiheadAttentionPoolingHead

tf = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*sequence already has.*")

TRICKY_TEXTS = [
    "A Photo of a RED Circle!",
    "UPPERCASE lowercase MiXeD",
    "  leading spaces",
    "trailing   ",
    "tabs\tand\nnewlines\r\n",
    "",
    "!!!",
    "“quoted” — dash… ¿qué?",
    "café CRÈME brûlée à Paris",
    "emoji 🐶🎉 dog",
    "digits 0123456789 3.14",
    "ﬁne ＡＢＣ ½",
    "don't stop-believing",
    "▁under▁score",
    "Ûber Îsland",
    "\u00a0nbsp\u00a0here",
    "word " * 40,
    "x" * 200,
    "a </s> inside",
    "<unk> start",
]

# transformers' answer, per the issue: atol + rtol * |ref|
ATOL = RTOL = 1e-4


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf-siglip"), seed=3)


@pytest.fixture(scope="module")
def models(hf_dir):
    return ss.SiglipModel.from_pretrained(hf_dir), tf.SiglipModel.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (57, 91, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (40, 23, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (100, 77), dtype=np.uint8), "L")
    palette = Image.fromarray(rng.integers(0, 16, (33, 45), dtype=np.uint8), "P")
    palette.putpalette(rng.integers(0, 256, 768).tolist())
    palette.info["transparency"] = 3
    big = Image.fromarray(rng.integers(0, 256, (301, 199, 3), dtype=np.uint8))
    return [rgb, rgba, grey, palette, big]


def test_token_ids_equal_transformers_on_tricky_texts(hf_dir):
    ref = tf.SiglipTokenizer.from_pretrained(hf_dir)
    ours = ss.SiglipTokenizer.from_pretrained(hf_dir)
    for text in TRICKY_TEXTS:
        for kwargs in ({}, {"padding": "max_length", "truncation": True}):
            assert ours(text, **kwargs)["input_ids"] == ref(text, **kwargs)["input_ids"], (
                text,
                kwargs,
            )
    batch = ours(TRICKY_TEXTS, padding="max_length", truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    assert batch.shape == (len(TRICKY_TEXTS), 16)
    assert (batch[:, -1] == 1).all(), "every padded/truncated row ends with </s>"


def test_decode_equals_transformers(hf_dir):
    ref = tf.SiglipTokenizer.from_pretrained(hf_dir)
    ours = ss.SiglipTokenizer.from_pretrained(hf_dir)
    for text in TRICKY_TEXTS[:12]:
        ids = ref(text, padding="max_length", truncation=True)["input_ids"]
        assert ours.decode(ids) == ref.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(
            ids, skip_special_tokens=True
        )


def test_pixel_values_equal_transformers_pil_backend(hf_dir, images):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ref = SiglipImageProcessorPil.from_pretrained(hf_dir)
    ours = ss.SiglipImageProcessor.from_pretrained(hf_dir)
    for image in images:
        a = ours(image, return_tensors="pt")["pixel_values"]
        b = ref(image, return_tensors="pt")["pixel_values"]
        assert a.shape == b.shape == (1, 3, 38, 38)
        assert (a - b).abs().max() <= 1e-4, image.mode
    overrides = {
        "size": {"height": 20, "width": 44},
        "image_mean": [0.4, 0.5, 0.6],
        "image_std": [0.2, 0.3, 0.4],
    }
    a = ours(images[0], return_tensors="pt", **overrides)["pixel_values"]
    b = ref(images[0], return_tensors="pt", **overrides)["pixel_values"]
    assert a.shape == (1, 3, 20, 44)
    assert (a - b).abs().max() <= 1e-4


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (38, 38), (255, 0, 0, 0))  # fully transparent red
    pixels = ss.SiglipImageProcessor(size={"height": 38, "width": 38})(clear, return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.allclose(pixels, torch.ones_like(pixels)), (
        "transparent pixels must become white (+1.0)"
    )


def test_features_logits_and_loss_match_transformers(models, hf_dir, images):
    ours, ref = models
    processor = ss.SiglipProcessor.from_pretrained(hf_dir)
    texts = ["a red circle", "A DOG on the beach!", "", "x" * 300, "café"]
    inputs = processor(
        text=texts, images=images, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        a = ours(**inputs, return_loss=True, output_hidden_states=True)
        b = ref(**inputs, return_loss=True, output_hidden_states=True)
        for key in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds", "loss"):
            assert_close(getattr(a, key), getattr(b, key))
        assert a.logits_per_image.shape == (len(images), len(texts))
        for ours_h, ref_h in zip(
            a.vision_model_output.hidden_states, b.vision_model_output.hidden_states, strict=False
        ):
            assert_close(ours_h, ref_h)
        assert_close(a.text_model_output.last_hidden_state, b.text_model_output.last_hidden_state)
        assert_close(
            ours.get_text_features(inputs["input_ids"]),
            ref.get_text_features(inputs["input_ids"]).pooler_output,
        )
        px = inputs["pixel_values"]
        assert_close(ours.get_image_features(px), ref.get_image_features(px).pooler_output)


def test_the_vision_heads_single_query_attention_equals_multihead_attention():
    # The head computes nn.MultiheadAttention(probe, x, x) in a rewritten form (see probe_attention).
    head = SiglipMultiheadAttentionPoolingHead(
        ss.SiglipVisionConfig(hidden_size=48, intermediate_size=80, num_attention_heads=3)
    ).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        x = torch.randn(4, 30, 48, generator=gen)
        expected = head.attention(head.probe.expand(4, -1, -1), x, x, need_weights=False)[0][:, 0]
        torch.testing.assert_close(head.probe_attention(x), expected, atol=1e-5, rtol=1e-5)


def test_features_are_unnormalised_but_embeds_are_unit_norm(models):
    ours, _ = models
    ids = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        features = ours.get_text_features(ids)
        embeds = ours(input_ids=ids).text_embeds
    assert not torch.allclose(features.norm(dim=-1), torch.ones(2), atol=1e-3)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_loss_is_sum_over_images_mean_over_texts(models):
    ours, _ = models
    logits = torch.randn(4, 4)
    labels = 2 * torch.eye(4) - 1
    by_hand = -torch.nn.functional.logsigmoid(labels * logits).sum() / 4
    assert torch.allclose(ss.sigmoid_loss(logits), by_hand)
    with pytest.raises(ValueError, match="as many texts as images"):
        ss.sigmoid_loss(torch.randn(3, 4))


def test_text_embeds_the_same_alone_and_in_a_batch(models, hf_dir):
    ours, _ = models
    tok = ss.SiglipTokenizer.from_pretrained(hf_dir)
    texts = ["a red circle", "a much longer caption about a dog on a beach at sunset"]
    batch = tok(texts, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    alone = tok(texts[:1], padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert_close(ours.get_text_features(alone)[0], ours.get_text_features(batch)[0])


def test_attention_mask_changes_features_as_in_transformers(models, hf_dir):
    """SigLIP is meant to run without a mask; when a caller passes one, we behave like transformers."""
    ours, ref = models
    tok = ss.SiglipTokenizer.from_pretrained(
        hf_dir, model_input_names=["input_ids", "attention_mask"]
    )
    enc = tok(["a red circle"], padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        masked = ours.get_text_features(enc["input_ids"], attention_mask=enc["attention_mask"])
        assert_close(masked, ref.get_text_features(**enc).pooler_output)
        assert (masked - ours.get_text_features(enc["input_ids"])).abs().max() > 1e-2


def test_embedder_returns_unit_norm_vectors_equal_to_the_model(tiny_checkpoint):
    from siglip_search.embedder import Embedder

    emb = Embedder.from_pretrained(tiny_checkpoint)
    image = Image.new("RGB", (50, 40), (200, 30, 30))
    vectors = emb.embed_images([image, image.convert("L")])
    assert vectors.dtype == np.float32 and vectors.shape == (2, emb.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    model = ss.SiglipModel.from_pretrained(tiny_checkpoint)
    processor = ss.SiglipProcessor.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        ref = model(
            **processor(
                text=["a red circle"],
                images=[image],
                padding="max_length",
                truncation=True,
                return_tensors="pt",
            )
        )
    assert np.allclose(vectors[0], ref.image_embeds[0].numpy(), atol=1e-5)
    assert np.allclose(emb.embed_texts(["a red circle"])[0], ref.text_embeds[0].numpy(), atol=1e-5)
    cosine = float(vectors[0] @ emb.embed_texts(["a red circle"])[0])
    assert emb.probability(cosine) == pytest.approx(
        torch.sigmoid(ref.logits_per_image[0, 0]).item(), abs=1e-5
    )
    # Upper case is canonicalised: the same query vector.
    assert np.allclose(emb.embed_texts(["A RED CIRCLE!"]), emb.embed_texts(["a red circle"]))
