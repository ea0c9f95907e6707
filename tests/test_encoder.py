"""The encoder's three paths (plain forward, last position only, with states) compute one thing."""

from __future__ import annotations

import torch

from siglip_search import SiglipModel


def test_the_three_encoder_paths_agree(tiny_checkpoint):
    model = SiglipModel.from_pretrained(tiny_checkpoint)
    encoder = model.text_model.encoder
    x = torch.randn(
        3, 16, model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        plain = encoder(x)
        last, hidden_states, attentions = encoder.forward_with_states(x, output_attentions=True)
        assert (
            torch.equal(last, plain)
            and torch.equal(hidden_states[-1], plain)
            and torch.equal(hidden_states[0], x)
        )
        assert len(hidden_states) == len(attentions) + 1 == len(encoder.layers) + 1
        probabilities = attentions[0]
        assert probabilities.shape == (3, model.config.text_config.num_attention_heads, 16, 16)
        assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-6)
        assert torch.allclose(encoder.forward_last_position(x), plain[:, -1:], atol=1e-6)


def test_asking_for_hidden_states_or_attention_maps_changes_no_output(tiny_checkpoint):
    model = SiglipModel.from_pretrained(tiny_checkpoint)
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    pixels = torch.randn(2, 3, 38, 38, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(input_ids=ids, pixel_values=pixels)
        full = model(
            input_ids=ids, pixel_values=pixels, output_hidden_states=True, output_attentions=True
        )
    assert torch.equal(plain.logits_per_image, full.logits_per_image)
    for tower in ("text_model_output", "vision_model_output"):
        a, b = getattr(plain, tower), getattr(full, tower)
        assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(
            a.pooler_output, b.pooler_output
        )
        assert a.hidden_states is None and a.attentions is None
        assert len(b.hidden_states) == len(b.attentions) + 1
