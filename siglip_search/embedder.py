"""Batched embedding helpers for the application: unit-norm float32 numpy vectors, optional fast modes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .atomic import write_atomic
from .auto import AutoTokenizer
from .checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from .devices import (
    AUTO,
    CPU_BATCH_SIZE,
    check_dtype,
    describe_device,
    grow_batch_size,
    host_array,
    is_out_of_memory,
    resolve_device,
    to_device,
)
from .errors import CheckpointError, InputError
from .hub import resolve_checkpoint_dir
from .image_processor import SiglipImageProcessor
from .inference import fp32_tower
from .model import SiglipModel
from .modes import AUTO as AUTO_MODE
from .modes import HALF_PRECISION, MODES, check_mode, default_mode, pick_modes, vector_family
from .parallel import RowParallel
from .quantized import int8_tower

__all__ = ["MODES", "Embedder"]

Tower = TypeVar("Tower", bound=torch.nn.Module)


class Embedder:
    """A loaded SigLIP model plus its tokenizer and image processor, in inference mode, on one
    device (`device`: None keeps the model where it is) in one mode per kind of input
    (siglip_search/modes.py: `auto` picks the fastest mode of fp32's vector family here)."""

    def __init__(
        self,
        model: SiglipModel,
        tokenizer: Any,
        image_processor: SiglipImageProcessor,
        model_id: str,
        mode: str = "fp32",
        weights_sha256: str = "",
        *,
        device: str | torch.device | None = None,
    ) -> None:
        check_mode(mode)
        self.device = resolve_device(device) or model.device
        self.picked = pick_modes(mode, self.device.type)
        self.mode = mode
        self.image_mode, self.text_mode = self.picked.image_mode, self.picked.text_mode
        for kind_mode in (self.image_mode, self.text_mode):
            if kind_mode == "int8" and self.device.type != "cpu":
                raise InputError(
                    f"mode 'int8' runs on the CPU only; use fp16, bf16 or fp32 on {self.device}"
                )
            if kind_mode in HALF_PRECISION:
                check_dtype(self.device, getattr(torch, HALF_PRECISION[kind_mode]), kind_mode)
        self.family = vector_family(self.image_mode)  # the family of the vectors a library stores
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.dim = int(model.config.vision_config.hidden_size)
        if model.config.text_config.projection_size != self.dim:
            raise CheckpointError(
                f"{model_id}: text features ({model.config.text_config.projection_size}-d) and "
                f"image features ({self.dim}-d) are not in one space, so this checkpoint cannot be "
                "used for search"
            )
        size = image_processor.size
        self.image_size = (int(size["height"]), int(size["width"]))
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        self.logit_bias = float(model.logit_bias.detach().float())
        self.text_length = int(
            min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
        )
        if self.device.type != "cpu" and all(
            m in ("fp32", "compile") for m in (self.image_mode, self.text_mode)
        ):
            model.to(self.device)  # as transformers' pipelines move a model they are given
        self._text_features = _text_features(model, self.text_mode, self.device)
        self._image_features = _image_features(model, self.image_mode, self.device)
        # Batches split across cores (see parallel.py); compiled functions and GPUs keep whole batches.
        on_cpu = self.device.type == "cpu" and "compile" not in (self.image_mode, self.text_mode)
        self._rows = RowParallel(torch.get_num_threads() if on_cpu else 1)
        self._batch_size: int | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        mode: str | None = None,
        device: str | torch.device | None = AUTO,
    ) -> Embedder:
        """Load a checkpoint onto `device` ('auto': CUDA, then MPS, then the CPU) in `mode` (None:
        fp16 on a GPU, fp32 on the CPU; 'auto': the fastest mode of fp32's vector family there, as
        the commands do)."""
        target = resolve_device(device) or torch.device("cpu")  # before any weights are read
        mode = check_mode(mode or default_mode(target.type))
        if mode == "int8" and target.type != "cpu":
            if device != AUTO:
                raise InputError(
                    f"mode 'int8' runs on the CPU only; use fp16, bf16 or fp32 on {target}"
                )
            target = torch.device("cpu")  # auto: the one device that runs int8
        directory = resolve_checkpoint_dir(name_or_path)
        model = SiglipModel.from_pretrained(directory, torch_dtype=torch.float32)
        picked = pick_modes(mode, target.type)
        if picked.image_mode == picked.text_mode in HALF_PRECISION and not (
            picked.image_mode == "bf16" and target.type == "cpu"  # autocast there: fp32 weights
        ):
            # Cast here, on the CPU, rather than copy later: the fp32 towers are not needed.
            # logit_scale and logit_bias stay fp32: exp(t) in fp16 would move every probability.
            dtype = getattr(torch, HALF_PRECISION[picked.image_mode])
            model.text_model.to(dtype)
            model.vision_model.to(dtype)
        local = Path(name_or_path).expanduser()
        model_id = str(local.resolve()) if local.is_dir() else str(name_or_path)
        return cls(
            model,
            AutoTokenizer.from_pretrained(directory),
            SiglipImageProcessor.from_pretrained(directory),
            model_id,
            mode,
            _weights_sha256(directory),
            device=target,
        )

    def describe(self) -> str:
        """Where and how this embedder computes, for progress lines:
        'cuda:0 (NVIDIA H200), fp16' or 'cpu, auto: int8 images, fp32 texts, AVX2 CPU ...'."""
        return f"{describe_device(self.device)}, {self.describe_mode()}"

    def describe_mode(self) -> str:
        """What runs: "auto: int8 images, fp32 texts, AVX2 CPU ..." or "fp32"."""
        return f"auto: {self.picked.describe()}" if self.mode == AUTO_MODE else self.mode

    def identity(self) -> dict[str, Any]:
        """What decides the vectors: equal identities give interchangeable embeddings."""
        return {
            "model_id": self.model_id,
            "dim": self.dim,
            "image_size": list(self.image_size),
            "text_length": self.text_length,
            "preprocessing": self.image_processor.to_dict(),
            "weights_sha256": self.weights_sha256,
        }

    def probability(self, cosine: np.ndarray | float) -> np.ndarray | float:
        """SigLIP's pair probability sigmoid(t * cos + b)."""
        return 1.0 / (
            1.0
            + np.exp(-(np.asarray(cosine, dtype=np.float64) * self.logit_scale + self.logit_bias))
        )

    def preprocess_image(self, image: Any) -> np.ndarray:
        return self.image_processor.preprocess_one(image)

    def pixel_array(self, batch_size: int) -> np.ndarray:
        """A (batch_size, 3, H, W) float32 array to fill with preprocessed images for embed_pixels:
        pinned on a CUDA GPU, so the copy to it does not stop the host."""
        return host_array((batch_size, 3, *self.image_size), self.device)

    def embed_pixels(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        pixels = to_device(pixel_values, self.device)
        if pixels.ndim != 4:
            raise InputError(f"pixel_values must be (N, 3, H, W), got shape {tuple(pixels.shape)}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self._in_mode(self._image_features, self.image_mode)
        return self._unit_rows(self._rows(features, pixels.float()), self.image_mode)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_pixels(np.stack([self.preprocess_image(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InputError("embed_texts takes a list of strings")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Always pad to the full length and never mask: that is how SigLIP was trained.
        ids = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.text_length,
            return_tensors="pt",
        )["input_ids"]
        features = self._in_mode(self._text_features, self.text_mode)
        return self._unit_rows(self._rows(features, to_device(ids, self.device)), self.text_mode)

    @property
    def batch_size(self) -> int:
        """Images per batch that suit the device: CPU_BATCH_SIZE on the CPU; on a GPU the batch is
        doubled from 32 while images/s grows and memory lasts (measured once, on first use)."""
        if self._batch_size is None:
            if self.device.type == "cpu":
                self._batch_size = CPU_BATCH_SIZE
            else:
                self._batch_size = grow_batch_size(self._images_per_s)
        return self._batch_size

    def _images_per_s(self, batch_size: int, repeats: int = 3) -> float:
        """Images/s of the model on a batch of blank images (after a warm-up batch)."""
        pixels = self.pixel_array(batch_size)
        pixels.fill(0.0)
        try:
            self.embed_pixels(pixels)
            start = time.perf_counter()
            for _ in range(repeats):
                self.embed_pixels(pixels)
            return repeats * batch_size / (time.perf_counter() - start)
        except RuntimeError as exc:
            if is_out_of_memory(exc) and self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise

    def _in_mode(
        self, features: Callable[[torch.Tensor], torch.Tensor], mode: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """features(rows) under inference mode and, for bf16 on the CPU, autocast: both per thread."""
        cpu_bf16 = mode == "bf16" and self.device.type == "cpu"

        def run(rows: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=cpu_bf16):
                return features(rows)

        return run

    def _unit_rows(self, features: torch.Tensor, mode: str) -> np.ndarray:
        features = features.float()
        if not bool(torch.isfinite(features).all()):
            # fp16 tops out at 65504: a model whose activations grow past it gives inf, then NaN.
            raise InputError(
                f"{self.model_id} gave non-finite features in mode {mode!r} on "
                f"{self.device}; use mode 'bf16' or 'fp32'"
            )
        return (features / features.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)


def _tower(tower: Tower, mode: str, device: torch.device) -> Tower:
    """`tower` ready to run `mode` on `device`. On the CPU fp32 runs the fused inference copy
    (inference.py) and int8 an int8 copy (quantized.py); bf16 on the CPU runs the tower as it is
    under autocast; fp16 and bf16 elsewhere cast a copy of the tower (none when its weights are in
    that dtype already). The model given stays as it is, apart from being moved to `device`."""
    if mode == "int8":
        return int8_tower(tower)
    if mode == "fp32" and device.type == "cpu":
        return fp32_tower(tower)
    if mode in HALF_PRECISION and not (mode == "bf16" and device.type == "cpu"):
        return _in_dtype(tower, getattr(torch, HALF_PRECISION[mode]), device)
    return tower.to(device)


def _text_features(
    model: SiglipModel, mode: str, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """input_ids -> text features, in `mode` on `device`."""
    features = _tower(model.text_model, mode, device).pooled_output
    return torch.compile(features, dynamic=True) if mode == "compile" else features


def _image_features(
    model: SiglipModel, mode: str, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixel_values -> image features, in `mode` on `device`."""
    tower = _tower(model.vision_model, mode, device)

    def features(pixel_values: torch.Tensor) -> torch.Tensor:
        return tower(pixel_values).pooler_output

    return torch.compile(features, dynamic=True) if mode == "compile" else features


def _in_dtype(tower: Tower, dtype: torch.dtype, device: torch.device) -> Tower:
    """`tower` in `dtype` on `device`: itself when its weights are in dtype already, else a copy."""
    if any(p.dtype != dtype for p in tower.parameters()):
        tower = copy.deepcopy(tower).to(dtype)
    return tower.to(device)


# The weights' sha256, cached by each file's path, size, mtime_ns and inode: hashing a 3.5 GB so400m
# checkpoint at every load (every CLI search) reads all of it again. At most this many checkpoints are
# remembered.
WEIGHTS_CACHE_ENTRIES = 128


def weights_cache_file() -> Path:
    """$XDG_CACHE_HOME/siglip-search/weights-sha256.json (~/.cache when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "siglip-search" / "weights-sha256.json"


def _weights_sha256(directory: Path) -> str:
    """sha256 over the weight files' bytes in order (model.safetensors, or the index and its shards).

    A file whose path, size and mtime_ns are those of the last hash is trusted unchanged, as rsync and
    make trust them. The inode number is compared too: a save (atomic, so a new inode) within the same
    clock tick as the last one leaves the size and mtime_ns alike. Where the cache cannot be read or
    written, the files are hashed every time.
    """
    files = [directory / WEIGHTS_NAME] if (directory / WEIGHTS_NAME).is_file() else []
    if not files and (directory / WEIGHTS_INDEX_NAME).is_file():
        files = [directory / WEIGHTS_INDEX_NAME, *sorted(directory.glob("model-*.safetensors"))]
    stamps = [
        [str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino]
        for file in files
        for stat in [file.stat()]
    ]
    cache_file, key = weights_cache_file(), str(directory.resolve())
    cache = _read_weights_cache(cache_file)
    entry = cache.pop(key, None)
    if (
        isinstance(entry, dict)
        and entry.get("files") == stamps
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    digest = _hash_files(files)
    # the latest hash goes last; the oldest go first
    cache[key] = {"files": stamps, "sha256": digest}
    for old in list(cache)[:-WEIGHTS_CACHE_ENTRIES]:
        del cache[old]
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, json.dumps(cache, indent=1).encode())
    except OSError:
        pass  # nowhere writable: the next load hashes again
    return digest


def _read_weights_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
