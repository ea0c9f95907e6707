"""int8 copies of the SigLIP towers for the embedder's int8 mode.

Every Linear layer becomes a oneDNN int8 matmul: weights are quantized once, symmetrically per output
channel; activations are quantized at each call, asymmetrically per tensor, to 7 bits (0..127). Seven
bits, not eight: CPUs without VNNI (AVX2) add pairs of u8*s8 products in 16 bits, which saturates
beyond 127 * 127 * 2 (a test pins this). The q, k and v projections run as one matmul, which quantizes
their shared input once.

Where oneDNN's int8 ops are missing, `int8_towers` falls back to torch's quantize_dynamic (fbgemm).
"""

from __future__ import annotations

import functools
import warnings
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .inference import FusedEncoderLayer, convert_layers
from .layers import SiglipEncoderLayer, SiglipMLP

ACTIVATION_LEVELS = 127  # 7-bit activations: see the module docstring

# The copies are of the towers' own classes: only layers inside them are replaced.
TextTower = TypeVar("TextTower", bound=nn.Module)
VisionTower = TypeVar("VisionTower", bound=nn.Module)
Tower = TypeVar("Tower", bound=nn.Module)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """(M, K) float32 -> (uint8 codes in 0..127, scale, zero point), with x ~ scale * (codes - zero point)."""
    low, high = torch.aminmax(x)
    lo, hi = min(float(low), 0.0), max(float(high), 0.0)
    scale = (hi - lo) / ACTIVATION_LEVELS or 1.0
    zero_point = min(ACTIVATION_LEVELS, round(-lo / scale))
    return _codes(x, scale, zero_point), scale, zero_point


def _codes(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    if hasattr(torch, "quantize_per_tensor"):
        # 3.5x faster than the arithmetic below: one vectorized pass, whose bytes are read in place.
        with warnings.catch_warnings():
            # quantized tensors are deprecated; only their bytes are used
            warnings.simplefilter("ignore")
            q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
        return torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), 0, q.shape, q.stride())
    # round half up; x >= lo
    return torch.add(zero_point + 0.5, x, alpha=1.0 / scale).to(torch.uint8)


class Int8Linear(nn.Module):
    """y = x W^T + b with int8 W (per output channel) and x quantized per call; float32 in and out.

    forward can fuse exact-erf GELU into the matmul (gelu=True) or add a residual to its output.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        codes = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("weight_scale", scale, persistent=False)
        self.register_buffer(
            "weight_zero_point", torch.zeros_like(scale, dtype=torch.int32), persistent=False
        )
        self.register_buffer(
            "bias", None if bias is None else bias.detach().float().clone(), persistent=False
        )
        self.packed = torch.ops.onednn.qlinear_prepack(codes, None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None, gelu: bool = False
    ) -> torch.Tensor:
        shape = x.shape
        codes, scale, zero_point = quantize_activations(
            x.reshape(-1, self.in_features).contiguous()
        )
        args = (codes, scale, zero_point, self.packed, self.weight_scale, self.weight_zero_point)
        unary: tuple[str, list[float], str] = ("gelu", [], "none") if gelu else ("none", [], "none")
        if residual is None:
            y = torch.ops.onednn.qlinear_pointwise(*args, self.bias, 1.0, 0, torch.float32, *unary)
        else:
            other = residual.reshape(-1, self.out_features).contiguous()
            y = torch.ops.onednn.qlinear_pointwise.binary(
                *args, other, self.bias, 1.0, 0, torch.float32, 1.0, 0, "add", 1.0, *unary
            )
        return y.view(*shape[:-1], self.out_features)


@functools.cache  # one answer per process; every int8 Embedder asks
def onednn_int8_available() -> bool:
    """Whether this torch build runs the oneDNN int8 calls that Int8Linear makes, with the right results
    (x86 builds with mkldnn do; op signatures have changed between torch versions)."""
    weight = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    x, residual = (
        torch.tensor([[1.0, 2.0], [-1.0, 0.5]]),
        torch.tensor([[10.0, 20.0], [30.0, 40.0]]),
    )
    expected = x @ weight.T
    try:
        layer = Int8Linear(weight, None)
        results = (layer(x), layer(x, residual=residual), layer(x, gelu=True))
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return False
    wanted = (expected, expected + residual, F.gelu(expected))
    return all(
        torch.allclose(got, want, atol=0.05) for got, want in zip(results, wanted, strict=True)
    )


class Int8EncoderLayer(FusedEncoderLayer):
    """SiglipEncoderLayer with int8 matmuls, q/k/v in one of them (one activation quantization for
    three), residual adds fused into the matmuls and exact-erf GELU (layers.fast_activation, oneDNN's
    GELU post-op) fused into fc1."""

    def __init__(self, layer: SiglipEncoderLayer):
        super().__init__(layer, Int8Linear.from_linear)
        projections = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
        self.qkv_proj = Int8Linear(
            torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
        )
        self.fc1 = Int8Linear.from_linear(layer.mlp.fc1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = h.shape
        qkv = self.qkv_proj(h).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, T, hd)
        return q, k, v

    def mlp_hidden(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc1(h, gelu=True)


def int8_towers(text: TextTower, vision: VisionTower) -> tuple[TextTower, VisionTower]:
    """int8 copies of the two towers (the originals are left as they are), for inference only."""
    return int8_tower(text), int8_tower(vision)


def int8_tower(tower: Tower) -> Tower:
    """An int8 copy of one tower (the original is left as it is), for inference only."""
    if not onednn_int8_available():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tower = torch.ao.quantization.quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8)
    else:
        tower = _int8_copy(tower)
    for module in tower.modules():
        if isinstance(module, SiglipMLP):
            module.use_fast_activation()
    return tower


def _int8_copy(tower: Tower) -> Tower:
    # Parameters are shared, not copied: the converted layers read them once, the rest stay as they are.
    tower = convert_layers(tower, Int8EncoderLayer)
    _convert_linears(tower)
    return tower


def _convert_linears(module: nn.Module) -> None:
    """Every other Linear (the heads') as an Int8Linear."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear.from_linear(child))
        else:
            _convert_linears(child)
