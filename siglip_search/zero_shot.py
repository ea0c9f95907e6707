"""pipeline("zero-shot-image-classification"): multi-label sigmoid scores per candidate label."""

from __future__ import annotations

import io
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .hub import hub_options, loader_options
from .model import SiglipModel
from .processor import SiglipProcessor

DEFAULT_TEMPLATE = "This is a photo of {}."


def load_image(image: Any, timeout: float | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a local path or an http(s) URL, as transformers' load_image:
    EXIF orientation applied, then a plain convert("RGB") for paths and PIL images alike. That convert
    drops alpha without compositing, so the pipeline sees transparent pixels with their stored colour
    (the image processor alone, given RGBA, would composite them on white). A URL is given `timeout`
    seconds (30 when None)."""
    if isinstance(image, Image.Image):
        return _oriented_rgb(image)
    if not isinstance(image, (str, os.PathLike)):
        raise InputError(f"expected an image, a path or a URL, got {type(image).__name__}")
    text = str(image)
    try:
        if text.startswith(("http://", "https://")):
            with urllib.request.urlopen(
                text, timeout=30 if timeout is None else timeout
            ) as response:  # noqa: S310 - user-given URL
                opened = Image.open(io.BytesIO(response.read()))
        else:
            opened = Image.open(Path(text).expanduser())
        opened.load()
    except FileNotFoundError:
        raise InputError(f"image file {text} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{text} is not a readable image: {exc}") from None
    return _oriented_rgb(opened)


def _oriented_rgb(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{getattr(image, 'filename', '') or 'image'} is not a readable image: {exc}"
        ) from None


class ZeroShotImageClassificationPipeline:
    def __init__(self, model: SiglipModel, processor: SiglipProcessor) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor

    @torch.inference_mode()
    def __call__(
        self,
        image: Any,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        timeout: float | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Scores of every label for one image or a list of them. `timeout` bounds a URL download;
        batch_size and num_workers are transformers' batching options, accepted and ignored (the scores
        do not depend on them)."""
        if not candidate_labels:
            raise InputError("candidate_labels must be a non-empty list of labels")
        if isinstance(candidate_labels, str):
            candidate_labels = [s.strip() for s in candidate_labels.split(",") if s.strip()]
        batch = isinstance(image, (list, tuple))
        images = [load_image(im, timeout) for im in (image if batch else [image])]
        texts = [hypothesis_template.format(label) for label in candidate_labels]
        length = min(
            self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings
        )
        ids = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )["input_ids"]
        pixels = self.image_processor(images, return_tensors="pt")["pixel_values"]
        logits = self.model(
            input_ids=ids, pixel_values=pixels
        ).logits_per_image  # (n_img, n_labels)
        # Sigmoid, not softmax: each label is an independent yes/no, so scores need not sum to 1.
        probs = torch.sigmoid(logits).tolist()
        results = [
            [
                {"score": s, "label": label}
                for s, label in sorted(
                    zip(row, candidate_labels, strict=False), key=lambda x: -x[0]
                )
            ]
            for row in probs
        ]
        return results if batch else results[0]


_TASKS = {"zero-shot-image-classification": ZeroShotImageClassificationPipeline}


def pipeline(
    task: str | None = None,
    model: Any = None,
    *,
    processor: SiglipProcessor | None = None,
    image_processor: Any = None,
    tokenizer: Any = None,
    torch_dtype: Any = None,
    device: Any = None,
    **kwargs: Any,
) -> ZeroShotImageClassificationPipeline:
    """The zero-shot pipeline of a checkpoint directory or hub id, or of a loaded model with its processor
    (or image processor and tokenizer). kwargs: the hub options (revision, cache_dir, local_files_only,
    token), honoured, and hub.IGNORED_OPTIONS; anything else is a TypeError."""
    hub = hub_options(kwargs)
    loader_options(kwargs, "pipeline")
    task = task or "zero-shot-image-classification"
    if task not in _TASKS:
        raise InputError(f"task {task!r} is not supported; supported: {', '.join(_TASKS)}")
    if model is None:
        raise InputError("pass model= a checkpoint directory or hub id")
    if isinstance(model, (str, os.PathLike)):
        processor = SiglipProcessor.from_pretrained(model, **hub)
        model = SiglipModel.from_pretrained(model, torch_dtype=torch_dtype, device=device, **hub)
    elif processor is None:
        if image_processor is None or tokenizer is None:
            raise InputError(
                "with a loaded model, pass processor= or both image_processor= and tokenizer="
            )
        processor = SiglipProcessor(image_processor, tokenizer)
    return _TASKS[task](model, processor)
