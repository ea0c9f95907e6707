"""The int8 towers behind `--mode int8`: exact integer arithmetic, the pooled text path, and a fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checkpoints import make_tiny_checkpoint
from PIL import Image

from siglip_search import SiglipModel
from siglip_search.embedder import Embedder
from siglip_search.quantized import (
    Int8Linear,
    int8_towers,
    onednn_int8_available,
    quantize_activations,
)

needs_onednn = pytest.mark.skipif(
    not onednn_int8_available(), reason="this torch build has no oneDNN int8 ops"
)
TEXTS = ["a red circle", "two small blue squares on a striped background", ""]


def _weight_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight.abs().amax(dim=1) / 127
    return torch.round(weight / scale[:, None]).clamp(-127, 127), scale


@needs_onednn
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_int8_linear_is_exact_integer_arithmetic_even_at_full_scale(sign):
    # Every activation at the top of its range times every weight at the top of its range: 8-bit
    # activations would overflow the 16-bit pair sums of CPUs without VNNI by a factor of two.
    gen = torch.Generator().manual_seed(0)
    weight = sign * (1.0 + 0.01 * torch.rand(96, 512, generator=gen))
    bias = torch.randn(96, generator=gen)
    x = 3.0 + 0.01 * torch.rand(64, 512, generator=gen)
    x[0, 0] = -0.5  # a zero point above 0

    y = Int8Linear(weight, bias)(x)

    codes, scale, zero_point = quantize_activations(x)
    assert 0 < zero_point and int(codes.max()) >= 127
    w_codes, w_scale = _weight_codes(weight)
    expected = (
        (codes.double() - zero_point) @ w_codes.double().T
    ) * scale * w_scale.double() + bias.double()
    assert torch.allclose(y.double(), expected, rtol=1e-5, atol=1e-3), (
        (y.double() - expected).abs().max()
    )
    assert torch.allclose(y, F.linear(x, weight, bias), rtol=0.02)


@needs_onednn
def test_int8_linear_keeps_leading_dimensions_and_adds_a_residual():
    gen = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(24, 40)
    x, residual = torch.randn(2, 5, 24, generator=gen), torch.randn(2, 5, 40, generator=gen)
    int8 = Int8Linear.from_linear(layer)
    with torch.no_grad():
        plain, with_residual = int8(x), int8(x, residual=residual)
        assert plain.shape == (2, 5, 40)
        assert torch.allclose(with_residual, plain + residual, atol=1e-5)
        assert torch.allclose(int8(x, gelu=True), F.gelu(plain), atol=1e-5)
        assert F.cosine_similarity(plain.flatten(), layer(x).flatten(), dim=0) > 0.999


def test_pooled_text_output_equals_the_last_position_of_the_full_forward(tiny_checkpoint):
    model = SiglipModel.from_pretrained(tiny_checkpoint).eval()
    ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            full = model.text_model(ids, **kwargs).pooler_output
            assert torch.allclose(model.text_model.pooled_output(ids, **kwargs), full, atol=1e-5)


def _min_cosines(a: Embedder, b: Embedder) -> tuple[float, float]:
    rng = np.random.default_rng(4)
    images = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]
    return (
        float((a.embed_images(images) * b.embed_images(images)).sum(1).min()),
        float((a.embed_texts(TEXTS) * b.embed_texts(TEXTS)).sum(1).min()),
    )


def test_int8_mode_works_for_the_exact_gelu_too(tmp_path):
    checkpoint = make_tiny_checkpoint(
        tmp_path / "ckpt", text={"hidden_act": "gelu"}, vision={"hidden_act": "gelu"}
    )
    fp32, int8 = (
        Embedder.from_pretrained(checkpoint),
        Embedder.from_pretrained(checkpoint, mode="int8"),
    )
    assert min(_min_cosines(fp32, int8)) >= 0.99


def test_int8_mode_falls_back_to_torch_dynamic_quantization_without_onednn(
    tiny_checkpoint, monkeypatch
):
    monkeypatch.setattr("siglip_search.quantized.onednn_int8_available", lambda: False)
    fallback = Embedder.from_pretrained(tiny_checkpoint, mode="int8")
    text, vision = int8_towers(fallback.model.text_model, fallback.model.vision_model)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert any(isinstance(m, dynamic) for m in text.modules())
    assert any(isinstance(m, dynamic) for m in vision.modules())
    assert min(_min_cosines(Embedder.from_pretrained(tiny_checkpoint), fallback)) >= 0.99
