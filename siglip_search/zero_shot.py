"""pipeline("zero-shot-image-classification"): multi-label sigmoid scores per candidate label."""

from __future__ import annotations

import io
import os
import string
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .devices import resolve_device
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
    def __init__(
        self, model: SiglipModel, processor: SiglipProcessor, batch_size: int | None = None
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.batch_size = _check_batch_size(batch_size)

    @torch.inference_mode()
    def __call__(
        self,
        image: Any = None,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        timeout: float | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        *,
        images: Any = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Scores of every label for one image or a list of them (`image`, or transformers' `images=`),
        best first. `timeout` bounds a URL download; `batch_size` images go through the model at a
        time (the scores do not depend on it); num_workers is accepted and ignored."""
        image = _one_image_argument(image, images)
        if not candidate_labels:
            raise InputError("candidate_labels must be a non-empty list of labels")
        if isinstance(candidate_labels, str):
            candidate_labels = [s.strip() for s in candidate_labels.split(",") if s.strip()]
        _check_template(hypothesis_template)
        size = _check_batch_size(batch_size) or self.batch_size
        batch = isinstance(image, (list, tuple))
        images_in = list(image) if batch else [image]
        texts = [hypothesis_template.format(label) for label in candidate_labels]
        length = min(
            self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings
        )
        ids = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )["input_ids"].to(self.model.device)
        probs: list[list[float]] = []
        step = size or len(images_in)
        for start in range(0, len(images_in), step):
            loaded = [load_image(im, timeout) for im in images_in[start : start + step]]
            pixels = self.image_processor(loaded, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.model.device, self.model.dtype)
            logits = self.model(input_ids=ids, pixel_values=pixels).logits_per_image  # (n, labels)
            # Sigmoid, not softmax: each label is an independent yes/no, so scores need not sum to 1.
            probs += torch.sigmoid(logits.float()).tolist()
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


def _one_image_argument(image: Any, images: Any) -> Any:
    if image is not None and images is not None:
        raise InputError("pass the image(s) once: as the first argument or as images=, not both")
    if image is None and images is None:
        raise InputError("pass an image, a path, a URL or a list of them (or images=)")
    return image if image is not None else images


def _check_template(template: str) -> None:
    """A hypothesis_template holds exactly one `{}`, where each label goes."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise InputError(f"hypothesis_template {template!r} is not a template: {exc}") from None
    if fields != [""]:
        raise InputError(
            f"hypothesis_template must hold one {{}} where the label goes (and no other braces; "
            f"double them as {{{{ }}}}), got {template!r}"
        )


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    return batch_size


def _pipeline_device(device: Any) -> Any:
    """transformers' device numbers: -1 is the CPU, 0, 1, ... the GPUs; anything else as torch."""
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu" if device < 0 else f"cuda:{device}"
    return device


def _processor_of(model: SiglipModel, **hub: Any) -> SiglipProcessor:
    """The processor stored beside a model loaded with from_pretrained (it knows its folder)."""
    source = getattr(model, "name_or_path", None)
    if not source:
        raise InputError(
            "this model was not loaded from a folder, so its processor is unknown: pass "
            "processor= (or both image_processor= and tokenizer=)"
        )
    return SiglipProcessor.from_pretrained(source, **hub)


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
    batch_size: int | None = None,
    **kwargs: Any,
) -> ZeroShotImageClassificationPipeline:
    """The zero-shot pipeline of a checkpoint directory or hub id, or of a loaded model (with its
    processor, or with the one stored beside it). `device` as transformers: -1 the CPU, 0, 1, ...
    the GPUs, or a torch device name. kwargs: `dtype` (transformers 5's torch_dtype),
    `num_workers` (accepted, ignored), the hub options (revision, cache_dir, local_files_only,
    token), honoured, and hub.IGNORED_OPTIONS; anything else is a TypeError naming it."""
    hub = hub_options(kwargs)
    own = loader_options(kwargs, "pipeline", accepted=("dtype", "num_workers"))
    dtype = own.get("dtype", torch_dtype)
    task = task or "zero-shot-image-classification"
    if task not in _TASKS:
        raise InputError(f"task {task!r} is not supported; supported: {', '.join(_TASKS)}")
    if model is None:
        raise InputError("pass model= a checkpoint directory or hub id")
    device = _pipeline_device(device)
    if isinstance(model, (str, os.PathLike)):
        processor = SiglipProcessor.from_pretrained(model, **hub)
        model = SiglipModel.from_pretrained(model, torch_dtype=dtype, device=device, **hub)
    else:
        resolved = resolve_device(device)
        if resolved is not None:
            model = model.to(resolved)
        if processor is None and (image_processor is not None or tokenizer is not None):
            if image_processor is None or tokenizer is None:
                raise InputError("pass both image_processor= and tokenizer=, or processor=")
            processor = SiglipProcessor(image_processor, tokenizer)
        elif processor is None:
            processor = _processor_of(model, **hub)
    return _TASKS[task](model, processor, batch_size=batch_size)
