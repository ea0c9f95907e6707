"""Training data: image-caption batches from the synthetic world or a captioned folder, per step.

A batch is a pure function of (seed, step, rank), so a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import synthetic
from .errors import InputError
from .image_processor import SiglipImageProcessor
from .tokenizer import SiglipTokenizer


class SyntheticSource:
    """Scenes rendered at a random size, then resized by the model's own image processor."""

    def __init__(self, image_size: int, max_words: int, max_objects: int = 3, twins: bool = False) -> None:
        self.twins = twins
        self.render_sizes = sorted({image_size, int(image_size * 1.5), image_size * 2, 224})
        self.max_words = max_words
        self.max_objects = max_objects

    def sample(self, rng: random.Random) -> tuple[Image.Image, str]:
        return self._render(synthetic.sample_scene(rng, max_objects=self.max_objects), rng.random(), rng)

    def sample_batch(self, rng: random.Random, n: int) -> list[tuple[Image.Image, str]]:
        """With `twins`, half the batch are shape twins: the same scene, layout and caption template with other
        shapes. Colour, size and position then cannot tell the pair apart, so the model must
        learn shape (the part a plain random batch teaches slowly)."""
        if not self.twins:
            return [self.sample(rng) for _ in range(n)]
        pairs: list[tuple[Image.Image, str]] = []
        while len(pairs) < n:
            spec = synthetic.sample_scene(rng, max_objects=self.max_objects)
            key = rng.random()
            pairs.append(self._render(spec, key, rng))
            if len(pairs) < n:
                pairs.append(self._render(_shape_twin(spec, rng), key, rng))
        return pairs

    def _render(self, spec: synthetic.SceneSpec, key: float, rng: random.Random) -> tuple[Image.Image, str]:
        local = random.Random(key)  # same key -> same size, jitter, background and caption template
        image = synthetic.render_scene(spec, local.choice(self.render_sizes), local)
        caption = synthetic.caption_scene(spec, local, self.max_words)
        if rng.random() < 0.3:  # photos arrive as JPEGs: learn to ignore their artefacts
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=rng.randint(70, 95))
            image = Image.open(buffer).convert("RGB")
        return image, caption


def _shape_twin(spec: synthetic.SceneSpec, rng: random.Random) -> synthetic.SceneSpec:
    objects = tuple(
        dataclasses.replace(o, shape=rng.choice([s for s in synthetic.SHAPES if s != o.shape]))
        for o in spec.objects
    )
    return dataclasses.replace(spec, objects=objects)


class CaptionFolderSource:
    """A folder of images plus captions.jsonl ({"file", "caption"}) or captions.csv (file,caption)."""

    def __init__(self, folder: str | Path, captions: str | Path | None = None) -> None:
        self.folder = Path(folder)
        path = Path(captions) if captions else _find_captions(self.folder)
        self.pairs = _read_captions(path)
        if not self.pairs:
            raise InputError(f"{path} lists no image-caption pairs")

    def sample(self, rng: random.Random) -> tuple[Image.Image, str]:
        name, caption = rng.choice(self.pairs)
        try:
            with Image.open(self.folder / name) as im:
                return ImageOps.exif_transpose(im).convert("RGB"), caption
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"cannot read training image {self.folder / name}: {exc}") from None


def _find_captions(folder: Path) -> Path:
    for name in ("captions.jsonl", "captions.csv"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} has no captions.jsonl or captions.csv")


def _read_captions(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read captions file {path}: {exc}") from None
    if path.suffix == ".csv":
        rows = csv.DictReader(text.splitlines())
        return [(r.get("file") or r["path"], r["caption"]) for r in rows]
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                pairs.append((record.get("file") or record["path"], record["caption"]))
            except (json.JSONDecodeError, KeyError) as exc:
                raise InputError(f"{path}:{number}: expected {{\"file\", \"caption\"}}: {exc}") from None
    return pairs


class StepBatches(torch.utils.data.Dataset):
    """Item `step` is the whole batch of that step for this rank: (pixel_values, input_ids, positives)."""

    def __init__(self, source, image_processor: SiglipImageProcessor, tokenizer: SiglipTokenizer,
                 batch_size: int, seed: int, rank: int = 0, total_steps: int = 10**9) -> None:
        self.source, self.image_processor, self.tokenizer = source, image_processor, tokenizer
        self.batch_size, self.seed, self.rank, self.total_steps = batch_size, seed, rank, total_steps

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step: int):
        rng = random.Random(f"{self.seed}-{self.rank}-{step}")
        if hasattr(self.source, "sample_batch"):
            pairs = self.source.sample_batch(rng, self.batch_size)
        else:
            pairs = [self.source.sample(rng) for _ in range(self.batch_size)]
        pixels = np.stack([self.image_processor.preprocess_one(image) for image, _ in pairs])
        captions = [caption for _, caption in pairs]
        ids = self.tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
        # Identical captions in one batch describe both images: they are positives, not negatives.
        canon = [self.tokenizer.canonicalize_text(c) for c in captions]
        positives = torch.tensor([[a == b for b in canon] for a in canon])
        return torch.from_numpy(pixels), ids, positives
