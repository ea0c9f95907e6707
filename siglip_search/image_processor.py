"""SigLIP image preprocessing, reproducing transformers' PIL-backend SiglipImageProcessor bit for bit.

Squash-resize (no crop) with PIL bicubic on uint8 RGB, rescale by 1/255 in float64, then
normalise with mean = std = 0.5 in float32. Transparency is composited onto white.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .atomic import write_atomic
from .errors import CheckpointError, InputError, unexpected_keywords
from .hub import hub_options, loader_options, resolve_checkpoint_dir
from .tokenizer import BatchEncoding

PREPROCESSOR_CONFIG = "preprocessor_config.json"
# The preprocessing options: __init__'s arguments, which from_pretrained and each call may override.
OPTIONS = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)
_RESAMPLE = {int(m): m for m in Image.Resampling}


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white (transformers 5.x behaviour)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping everything to white, and
        # before looking at transparency, which convert("RGBA") would clip just the same.
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        scaled = arr / top * 255.0
        transparent = image.info.get("transparency")
        if isinstance(transparent, int):  # PNG tRNS: the pixels of this one grey value, onto white
            scaled[arr == transparent] = 255.0
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _hwc(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        return arr.transpose(1, 2, 0)  # CHW -> HWC
    return arr


def _unit_float_hwc(image: Any) -> np.ndarray | None:
    """A 3-channel float array or tensor with values in [0, 1], as HWC float32; None for anything else."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if (
        not isinstance(image, np.ndarray)
        or image.dtype.kind != "f"
        or image.ndim != 3
        or not image.size
    ):
        return None
    arr = _hwc(image)
    if arr.shape[-1] != 3 or float(arr.min()) < 0 or float(arr.max()) > 1:
        return None
    return arr.astype(np.float32)


def _resized(pil: Image.Image, opts: dict[str, Any]) -> Image.Image:
    """Squash-resize to opts["size"] with opts["resample"] (PIL, no reducing_gap), as transformers does."""
    size = _size_dict(opts["size"])
    target = (size["width"], size["height"])
    if pil.size == target:
        return pil
    resample = _RESAMPLE.get(int(opts["resample"]))
    if resample is None:
        raise InputError(f"unknown resample filter {opts['resample']}")
    return pil.resize(target, resample=resample, reducing_gap=None)


def _unit_float_pixels(arr: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """transformers' PIL-backend route for [0, 1] floats: to uint8 by x255 and truncation, PIL resize, then
    back by 1/255 (so the result stays in [0, 1]); without do_resize the floats pass untouched."""
    if not opts["do_resize"]:
        return arr
    uint8 = (arr.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
    resized = _resized(Image.fromarray(uint8), opts)
    return (np.asarray(resized).astype(np.float64) * (1 / 255)).astype(np.float32)


def to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        arr = _hwc(image)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.dtype != np.uint8:
            # Float arrays in [0, 1] are taken as already rescaled pixels: with do_rescale=True (the
            # default) they are rescaled once, where transformers would rescale them twice. (With
            # do_rescale=False, preprocess_one takes transformers' own route, _unit_float_pixels.)
            scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
            arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        try:
            return Image.fromarray(arr)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"cannot read an image from an array of shape {image.shape}: {exc}"
            ) from None
    raise InputError(
        f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}"
    )


class SiglipImageProcessor:
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int = 3,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        self.do_resize = do_resize
        self.size = _size_dict(size if size is not None else {"height": 224, "width": 224})
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = _triple(image_mean if image_mean is not None else 0.5)
        self.image_std = _triple(image_std if image_std is not None else 0.5)
        self.do_convert_rgb = do_convert_rgb
        self.extra = kwargs

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": self.do_resize,
            "size": self.size,
            "resample": self.resample,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_convert_rgb": self.do_convert_rgb,
        }

    def preprocess_one(self, image: Any, **overrides: Any) -> np.ndarray:
        """One image -> float32 array (3, H, W). `overrides` set OPTIONS for this call only."""
        unknown = [key for key in overrides if key not in OPTIONS]
        if unknown:
            raise unexpected_keywords(f"{type(self).__name__}.preprocess", unknown)
        opts = self.to_dict() | {k: v for k, v in overrides.items() if v is not None}
        unit = None if opts["do_rescale"] else _unit_float_hwc(image)
        if unit is not None:  # already rescaled floats, and the caller says so: transformers' route
            return self._normalize(_unit_float_pixels(unit, opts), opts)
        pil = to_pil(image)
        pil = convert_to_rgb(pil) if opts["do_convert_rgb"] else pil
        if opts["do_resize"]:
            pil = _resized(pil, opts)
        arr = np.asarray(pil)
        if arr.ndim == 2:
            arr = arr[..., None]
        if opts["do_normalize"] and arr.shape[-1] not in (1, len(_triple(opts["image_mean"]))):
            raise InputError(
                f"a {pil.mode} image has {arr.shape[-1]} channels and image_mean has "
                f"{len(_triple(opts['image_mean']))}; keep do_convert_rgb=True for such images"
            )
        if opts["do_rescale"]:
            arr = (arr.astype(np.float64) * opts["rescale_factor"]).astype(np.float32)
        else:
            arr = arr.astype(np.float32)
        return self._normalize(arr, opts)

    @staticmethod
    def _normalize(arr: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
        """(H, W, C) float32 -> normalised (C, H, W) float32."""
        if opts["do_normalize"]:
            mean = np.asarray(_triple(opts["image_mean"]), dtype=np.float32)
            std = np.asarray(_triple(opts["image_std"]), dtype=np.float32)
            arr = (arr - mean) / std
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)

    def __call__(
        self, images: Any, return_tensors: str | None = None, **overrides: Any
    ) -> BatchEncoding:
        return self.preprocess(images, return_tensors=return_tensors, **overrides)

    def preprocess(
        self, images: Any, return_tensors: str | None = None, **overrides: Any
    ) -> BatchEncoding:
        if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)) and not _is_batch_array(
            images
        ):
            images = [images]
        elif (
            isinstance(images, (list, tuple))
            and images
            and all(isinstance(im, (list, tuple)) for im in images)
        ):
            # a batch of image lists, as transformers takes
            images = [im for group in images for im in group]
        arrays = [self.preprocess_one(im, **overrides) for im in images]
        if not arrays:
            raise InputError("no images given")
        if return_tensors == "pt":
            return BatchEncoding(pixel_values=torch.from_numpy(np.stack(arrays)))
        if return_tensors == "np":
            return BatchEncoding(pixel_values=np.stack(arrays))
        if return_tensors is None:
            return BatchEncoding(pixel_values=arrays)
        raise InputError(
            f"return_tensors={return_tensors!r} is not supported (use 'pt', 'np' or None)"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> SiglipImageProcessor:
        return cls(**(dict(data) | kwargs))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, **kwargs: Any
    ) -> SiglipImageProcessor:
        hub = hub_options(kwargs)
        overrides = loader_options(kwargs, f"{cls.__name__}.from_pretrained", accepted=OPTIONS)
        directory = resolve_checkpoint_dir(name_or_path, **hub)
        return cls.from_dict(read_preprocessor_config(directory), **overrides)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        path = Path(save_directory) / PREPROCESSOR_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return str(path)


def read_preprocessor_config(directory: Path) -> dict[str, Any]:
    """The flat hub file, or the image_processor part of transformers 5's processor_config.json."""
    flat, nested = directory / PREPROCESSOR_CONFIG, directory / "processor_config.json"
    try:
        if flat.is_file():
            return json.loads(flat.read_text())
        if nested.is_file():
            return json.loads(nested.read_text()).get("image_processor", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{directory} has an invalid image processor config: {exc}") from None
    return {}


def _is_batch_array(images: Any) -> bool:
    return isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4


def _size_dict(size: dict[str, int] | int | Sequence[int]) -> dict[str, int]:
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return {"height": int(size["height"]), "width": int(size["width"])}
        if "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            return {"height": edge, "width": edge}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise InputError(f"image size must be {{'height': H, 'width': W}}, got {size!r}")


def _triple(value: Sequence[float] | float) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * 3
    return [float(v) for v in value]
