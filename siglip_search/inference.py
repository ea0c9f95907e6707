"""Inference copies of the SigLIP towers for the Embedder: the same arithmetic in fewer passes.

layers.py keeps the forward that reads like the paper; the embedder runs these copies instead (fp32
here, int8 in quantized.py, which reuses FusedEncoderLayer). What fp32 fuses on the CPU:
- the residual add and the bias go into the matmul's own accumulation (`addmm_` with beta 1: the
  output starts as residual + bias), instead of a bias copy, a matmul and an add;
- tanh GELU runs in place as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the same function
  (within 1e-6), 2-3x faster than torch's tanh GELU on AVX2, whose tanh is the slow part;
- attention reads q, k and v as strided views (one fused q/k/v matmul measured no faster in fp32, and
  would have copied their weights).
The copies share the model's parameters: they cost no memory, and the model is left as it was.
Matmuls take about 90 % of the time either way: docs/performance.md has the profile.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SiglipEncoderLayer

Tower = TypeVar("Tower", bound=nn.Module)

# sigmoid(2u) = (1 + tanh(u)) / 2, with 2u = x (2 sqrt(2/pi) + 2 sqrt(2/pi) 0.044715 x^2)
_GELU_LINEAR = 2 * math.sqrt(2 / math.pi)
_GELU_CUBIC = _GELU_LINEAR * 0.044715


def gelu_tanh_(x: torch.Tensor) -> torch.Tensor:
    """x <- GELU(x) in its tanh form, in place: 0.5 x (1 + tanh(u)) computed as x * sigmoid(2u)."""
    gate = torch.mul(x, x)
    gate.mul_(_GELU_CUBIC).add_(_GELU_LINEAR).mul_(x).sigmoid_()
    return x.mul_(gate)


class FusedLinear(nn.Module):
    """y = x W^T + b (+ residual), the residual and bias summed inside the matmul; float32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias  # the model's own
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        if residual is None:
            y = F.linear(rows, self.weight, self.bias)
        else:
            start = residual.reshape(-1, self.out_features)
            y = start + self.bias if self.bias is not None else start.clone()
            y.addmm_(rows, self.weight.t())
        return y.view(*shape[:-1], self.out_features)


class FusedEncoderLayer(nn.Module):
    """SiglipEncoderLayer's forward and forward_last_position in fewer passes. `heads` and
    `mlp_hidden` are where the fp32 and int8 layers differ."""

    def __init__(self, layer: SiglipEncoderLayer, linear: Callable[[nn.Linear], nn.Module]):
        super().__init__()
        self.num_heads, self.head_dim = layer.self_attn.num_heads, layer.self_attn.head_dim
        self.layer_norm1, self.layer_norm2 = layer.layer_norm1, layer.layer_norm2
        # out_proj and fc2 take forward(x, residual=...): the residual is added inside the matmul
        self.out_proj, self.fc2 = linear(layer.self_attn.out_proj), linear(layer.mlp.fc2)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._block(x, attention_mask, last_position=False)

    def forward_last_position(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """forward(x)[:, -1:], as SiglipEncoderLayer.forward_last_position."""
        return self._block(x, attention_mask, last_position=True)

    def _block(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, last_position: bool
    ) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.heads(self.layer_norm1(x))  # each (B, nh, T, hd)
        if last_position:  # q for every position costs less than a second matmul call
            q, x = q[:, :, -1:], x[:, -1:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # (B, nh, Tq, hd)
        x = self.out_proj(y.transpose(1, 2).reshape(B, -1, D), residual=x)
        return self.fc2(self.mlp_hidden(self.layer_norm2(x)), residual=x)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, D) -> q, k, v, each (B, nh, T, hd)."""
        raise NotImplementedError

    def mlp_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """act(fc1(h)), (B, T, D) -> (B, T, intermediate)."""
        raise NotImplementedError


class Float32EncoderLayer(FusedEncoderLayer):
    """The fp32 layer: the same function as SiglipEncoderLayer, exact activation included."""

    def __init__(self, layer: SiglipEncoderLayer):
        super().__init__(layer, FusedLinear)
        attention = layer.self_attn
        self.q_proj, self.k_proj, self.v_proj = (
            FusedLinear(attention.q_proj),
            FusedLinear(attention.k_proj),
            FusedLinear(attention.v_proj),
        )
        self.fc1 = FusedLinear(layer.mlp.fc1)
        self.tanh_gelu = layer.mlp.hidden_act == "gelu_pytorch_tanh"  # else exact erf GELU

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = h.shape
        q, k, v = (
            p(h).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # strided views
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        return q, k, v

    def mlp_hidden(self, h: torch.Tensor) -> torch.Tensor:
        y = self.fc1(h)
        return gelu_tanh_(y) if self.tanh_gelu else torch.ops.aten.gelu_(y)


def fp32_tower(tower: Tower) -> Tower:
    """An inference copy of a tower with Float32EncoderLayers; it shares the tower's parameters."""
    return convert_layers(tower, Float32EncoderLayer)


def convert_layers(tower: Tower, layer_class: Callable[[SiglipEncoderLayer], nn.Module]) -> Tower:
    """A copy of `tower` whose encoder layers are layer_class(layer); parameters are shared, not
    copied, and the tower itself is left as it is."""
    tower = copy.deepcopy(tower, memo={id(p): p for p in tower.parameters()})
    _replace(tower, layer_class)
    return tower


def _replace(module: nn.Module, layer_class: Callable[[SiglipEncoderLayer], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, SiglipEncoderLayer):
            setattr(module, name, layer_class(child))
        else:
            _replace(child, layer_class)
