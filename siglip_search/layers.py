"""Transformer building blocks shared by both SigLIP towers: attention, MLP, encoder, MAP head."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .config import SiglipTextConfig, SiglipVisionConfig, unsupported_hidden_act

TowerConfig = SiglipTextConfig | SiglipVisionConfig

# The activations SigLIP checkpoints use (config.HIDDEN_ACTS; a config naming any other is refused). SigLIP
# and SigLIP 2 use the tanh approximation everywhere; exact erf GELU in its place is a real (1e-3) bug.
_ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
}


def activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise unsupported_hidden_act(name) from None


def fast_activation(name: str):
    """The activation the lossy modes run: exact-erf GELU for both. It differs from the tanh form by at
    most 5e-4 per activation (far below int8 rounding) and runs 3.4x faster on CPU (1576 x 3072 floats:
    5.6 ms against 18.9 ms on one AVX2 core)."""
    activation(name)  # refuses an unsupported name
    return F.gelu


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and no mask (SigLIP uses none)."""

    def __init__(self, config: TowerConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). `queries` (B, Tq, D), when given, are the positions that ask, in place
        of all of x: each still attends over every position of x, and the result is (B, Tq, D)."""
        q = self._heads(self.q_proj(x if queries is None else queries))  # (B, nh, Tq, hd)
        k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))  # (B, nh, T, hd)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout_p)
        B, _, Tq, _ = q.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, Tq, -1))  # (B, Tq, D)

    def probabilities(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(hd)), (B, nh, T, T): the attention maps transformers returns as `attentions`
        (its eager form, softmax in float32). SDPA does not return them, so they are computed apart,
        only when asked for."""
        q, k = self._heads(self.q_proj(x)), self._heads(self.k_proj(x))
        scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5  # (B, nh, T, T)
        if attention_mask is not None:  # bool: True = attend, as for SDPA
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        return scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, nh, T, hd): head h holds channels [h*hd, (h+1)*hd)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)


class SiglipMLP(nn.Module):
    def __init__(self, config: TowerConfig):
        super().__init__()
        self.hidden_act = config.hidden_act
        self.act = activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def use_fast_activation(self) -> None:
        """For approximate (quantized) inference: swap in a faster, near-identical activation."""
        self.act = fast_activation(self.hidden_act)


class SiglipEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: TowerConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attention_mask)
        x = x + self.mlp(self.layer_norm2(x))
        return x

    def forward_last_position(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """forward(x)[:, -1:] computed for that position alone, (B, T, D) -> (B, 1, D): attention with
        one query, whose keys and values still come from every position."""
        h = self.layer_norm1(x)
        x = x[:, -1:] + self.self_attn(h, attention_mask, queries=h[:, -1:])
        x = x + self.mlp(self.layer_norm2(x))
        return x


class SiglipEncoder(nn.Module):
    """The stack of encoder layers; both towers use this same class (as big_vision does)."""

    def __init__(self, config: TowerConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)
        )

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x

    def _layers(self) -> list[SiglipEncoderLayer]:
        # nn.ModuleList is not generic. Its items are SiglipEncoderLayer, or quantized.Int8EncoderLayer
        # in an int8 copy, which has the same forward methods (but no attention maps to show).
        return cast("list[SiglipEncoderLayer]", list(self.layers))

    def forward_last_position(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """forward(x)[:, -1:], (B, 1, D), with the last layer computing the last position alone: text
        pooling reads nothing else. On the base model this skips about 7% of the text tower's work."""
        *layers, last = self._layers()
        for layer in layers:
            x = layer(x, attention_mask)
        return last.forward_last_position(x, attention_mask)

    def forward_with_states(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None]:
        """forward(x), keeping what transformers returns on request: the hidden states (the input, then
        each layer's output) and, with output_attentions, each layer's attention maps (B, nh, T, T)."""
        hidden_states, attentions = [x], []
        for layer in self._layers():
            if output_attentions:
                attentions.append(
                    layer.self_attn.probabilities(layer.layer_norm1(x), attention_mask)
                )
            x = layer(x, attention_mask)
            hidden_states.append(x)
        return x, tuple(hidden_states), tuple(attentions) if output_attentions else None


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    """MAP head: a learned probe attends over the tokens, then a residual MLP.

    There is no residual from the probe itself and the LayerNorm comes after the attention,
    as in big_vision's MAPHead.
    """

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.probe = nn.Parameter(torch.randn(1, 1, d))
        self.attention = nn.MultiheadAttention(d, config.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.probe_attention(x)[:, None]  # (B, 1, D)
        x = x + self.mlp(self.layernorm(x))
        return x[:, 0]  # (B, D)

    def probe_attention(self, x: torch.Tensor) -> torch.Tensor:
        """self.attention(probe, x, x), rewritten for its one query: (B, T, D) -> (B, D).

        Per head, with q the projected probe: q . (W_k x + b_k) = (W_k^T q) . x + a constant that the
        softmax cancels, and the weighted sum of W_v x + b_v is W_v (sum_t a_t x_t) + b_v. So the key
        and value projections of every token (2 * T * D^2 multiply-adds) become two (T, D) x (D, heads)
        products, and the result is the same up to float rounding.
        """
        attention = self.attention
        d, nh = attention.embed_dim, attention.num_heads
        hd = d // nh
        w, b = attention.in_proj_weight, attention.in_proj_bias
        q = F.linear(self.probe.reshape(1, d), w[:d], b[:d]).view(nh, hd)
        key_probe = torch.einsum("nh,nhd->dn", q, w[d : 2 * d].view(nh, hd, d)) / math.sqrt(
            hd
        )  # (D, nh)
        weights = (x @ key_probe).softmax(dim=1)  # (B, T, nh): each head's weights over the tokens
        pooled = torch.einsum("btn,btd->bnd", weights, x)  # (B, nh, D)
        y = torch.einsum("bnd,nhd->bnh", pooled, w[2 * d :].view(nh, hd, d)).flatten(1) + b[2 * d :]
        return attention.out_proj(y)
