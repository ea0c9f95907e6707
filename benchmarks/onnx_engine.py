"""ONNX Runtime on the same weights, for benchmarks/embed_speed.py: the engine Immich runs CLIP and
SigLIP on, so the one our users would otherwise pick. Benchmark-only (onnxruntime, onnx and
onnxscript are in the `dev` extra); the product never imports it.

transformers' towers are exported with torch.onnx.export (the dynamo exporter, which needs
onnxscript); int8 copies are made by onnxruntime.quantization.quantize_dynamic, as Immich's int8
models are, both as it comes (8-bit weights) and with reduce_range=True (7-bit weights, which CPUs
without VNNI need: their u8 x s8 multiply-adds saturate in 16 bits, and the default loses accuracy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# name in the table -> suffix of the model files and quantize_dynamic's extra options
VARIANTS: dict[str, tuple[str, dict | None]] = {
    "ONNX Runtime fp32": ("", None),
    "ONNX Runtime int8": ("-int8", {}),
    "ONNX Runtime int8 reduce_range": ("-int8-rr", {"reduce_range": True}),
}


class _Images(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


class _Texts(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.get_text_features(input_ids=input_ids).pooler_output


def export_towers(checkpoint: Path, out: Path, image_size: int, text_length: int) -> None:
    """vision.onnx and text.onnx (batch size free) from transformers' SiglipModel, plus the int8
    copies of both that VARIANTS names."""
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter and the quantizer log advice (torchvision absent, "consider pre-processing") that
    # would bury the table.
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = transformers.SiglipModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    towers = (
        ("vision", _Images(model), torch.zeros(2, 3, image_size, image_size), "pixel_values"),
        ("text", _Texts(model), torch.zeros(2, text_length, dtype=torch.long), "input_ids"),
    )
    for name, tower, example, input_name in towers:
        path = out / f"{name}.onnx"
        torch.onnx.export(
            tower,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["features"],
            dynamic_shapes={input_name: {0: batch}},
            dynamo=True,
            verbose=False,
        )
        for suffix, options in VARIANTS.values():
            if options is not None:
                target = out / f"{name}{suffix}.onnx"
                quantize_dynamic(path, target, weight_type=QuantType.QInt8, **options)


def runner(
    out: Path, suffix: str, pixels: np.ndarray, input_ids: np.ndarray, threads: int
) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]]:
    """(images, texts) functions returning unit rows, on sessions with ONNX Runtime's defaults
    (all graph optimizations) and `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    vision, text = (
        ort.InferenceSession(str(out / f"{name}{suffix}.onnx"), options, ["CPUExecutionProvider"])
        for name in ("vision", "text")
    )

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def images() -> np.ndarray:
        return unit(vision.run(None, {"pixel_values": pixels})[0])

    def texts() -> np.ndarray:
        return unit(text.run(None, {"input_ids": input_ids})[0])

    return images, texts


def version() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"
