"""Batched embedding helpers for the application: unit-norm float32 numpy vectors, optional fast modes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_atomic
from .auto import AutoTokenizer
from .checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from .errors import CheckpointError, InputError
from .hub import resolve_checkpoint_dir
from .image_processor import SiglipImageProcessor
from .inference import fp32_tower
from .model import SiglipModel
from .modes import AUTO, MODES, family, pick_modes
from .parallel import RowParallel
from .quantized import int8_tower

__all__ = ["MODES", "Embedder"]


class Embedder:
    """A loaded SigLIP model plus its tokenizer and image processor, in inference mode."""

    def __init__(
        self,
        model: SiglipModel,
        tokenizer: Any,
        image_processor: SiglipImageProcessor,
        model_id: str,
        mode: str = "fp32",
        weights_sha256: str = "",
    ) -> None:
        """`mode`: one of modes.MODES, or "auto" for the fastest whose vectors are interchangeable
        with fp32 on this hardware (modes.pick_modes); `picked` says what it runs for each kind."""
        self.picked = pick_modes(mode, model.device.type)
        if "int8" in (self.picked.image_mode, self.picked.text_mode) and model.device.type != "cpu":
            raise InputError(
                f"mode 'int8' runs on the CPU only; use fp32 or bf16 on {model.device}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_id = model_id
        self.mode = mode  # as asked: "auto" or a mode
        self.image_mode, self.text_mode = self.picked.image_mode, self.picked.text_mode
        self.family = family(self.image_mode)  # the family of the vectors a library stores
        if family(self.text_mode) != self.family:
            raise InputError(f"{self.picked.describe()}: text and image vectors would not match")
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
        self._text_features = _text_features(model, self.text_mode)
        self._image_features = _image_features(model, self.image_mode)
        # Batches split across cores (see parallel.py); compiled functions and GPUs keep whole batches.
        on_cpu = self.model.device.type == "cpu" and "compile" not in (
            self.image_mode,
            self.text_mode,
        )
        self._rows = RowParallel(torch.get_num_threads() if on_cpu else 1)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, mode: str = "fp32", device: str = "cpu"
    ) -> Embedder:
        directory = resolve_checkpoint_dir(name_or_path)
        model = SiglipModel.from_pretrained(directory, torch_dtype=torch.float32, device=device)
        local = Path(name_or_path).expanduser()
        model_id = str(local.resolve()) if local.is_dir() else str(name_or_path)
        return cls(
            model,
            AutoTokenizer.from_pretrained(directory),
            SiglipImageProcessor.from_pretrained(directory),
            model_id,
            mode,
            _weights_sha256(directory),
        )

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

    def embed_pixels(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        pixels = torch.as_tensor(pixel_values, dtype=torch.float32, device=self.model.device)
        if pixels.ndim != 4:
            raise InputError(f"pixel_values must be (N, 3, H, W), got shape {tuple(pixels.shape)}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self._in_mode(self._image_features, self.image_mode)
        return _unit_rows(self._rows(features, pixels))

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
        return _unit_rows(self._rows(features, ids.to(self.model.device)))

    def describe_mode(self) -> str:
        """What runs, for progress lines: "auto: int8 images, fp32 texts, AVX2 CPU ..." or "fp32"."""
        return f"auto: {self.picked.describe()}" if self.mode == AUTO else self.mode

    def _in_mode(
        self, features: Callable[[torch.Tensor], torch.Tensor], mode: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """features(rows) under inference mode and the mode's autocast, which are per thread."""

        def run(rows: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), _autocast(mode):
                return features(rows)

        return run


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)


def _autocast(mode: str):
    if mode == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _text_features(model: SiglipModel, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """input_ids -> text features, in `mode` (fp32 and int8 run inference copies of the tower)."""
    tower = model.text_model
    if mode == "int8":
        tower = int8_tower(tower)
    elif mode == "fp32" and model.device.type == "cpu":
        tower = fp32_tower(tower)
    features = tower.pooled_output
    return torch.compile(features, dynamic=True) if mode == "compile" else features


def _image_features(model: SiglipModel, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixel_values -> image features, in `mode`."""
    tower = model.vision_model
    if mode == "int8":
        tower = int8_tower(tower)
    elif mode == "fp32" and model.device.type == "cpu":
        tower = fp32_tower(tower)

    def features(pixel_values: torch.Tensor) -> torch.Tensor:
        return tower(pixel_values).pooler_output

    return torch.compile(features, dynamic=True) if mode == "compile" else features


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
