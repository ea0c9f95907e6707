"""Evaluation on the synthetic world: zero-shot colour/shape accuracy, text->image recall, tagging P/R."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..embedder import Embedder
from ..errors import InputError
from . import synthetic

DEFAULT_TAG_THRESHOLD = 0.1  # the library tagging default (indexer.tags)


def write_eval_set(
    out_dir: Path, seed: int, n_single: int = 200, n_multi: int = 200, size: int = 224
) -> Path:
    """Held-out images: single-object scenes (for zero-shot accuracy) and 2-3 object scenes, as JPEG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for index in range(n_single + n_multi):
        if index < n_single:
            spec = synthetic.single_object_scene(
                rng,
                list(synthetic.COLOURS)[index % 8],
                synthetic.SHAPES[(index // 8) % len(synthetic.SHAPES)],
            )
        else:
            spec = synthetic.sample_scene(rng, max_objects=3, min_objects=2)
        image = synthetic.render_scene(spec, size, rng)
        hint = "_".join(f"{o.colour}-{o.shape}" for o in spec.objects)
        name = f"{index + 1:04d}_{hint}.jpg"
        image.save(out_dir / name, quality=90)
        lines.append(
            json.dumps(
                {
                    "file": name,
                    "caption": synthetic.caption_scene(spec, rng),
                    "objects": [dataclasses.asdict(o) for o in spec.objects],
                    "background": spec.background,
                }
            )
        )
    path = out_dir / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_eval_set(folder: Path) -> list[tuple[Path, str, synthetic.SceneSpec]]:
    """The images of a held-out set written by write_eval_set: each record names its objects, which a
    plain captioned folder (training data) does not."""
    path = Path(folder) / "captions.jsonl"
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the evaluation set {path}: {exc}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
                objects = tuple(synthetic.ObjectSpec(**o) for o in record["objects"])
                spec = synthetic.SceneSpec(objects, record["background"])
                items.append((Path(folder) / record["file"], record["caption"], spec))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(
                    f"{path}:{number}: not an evaluation record ({type(exc).__name__}: {exc}); an "
                    "evaluation set lists each image's objects, as data/eval/captions.jsonl"
                ) from None
    if not items:
        raise InputError(f"{path} lists no images")
    return items


def evaluate(
    embedder: Embedder, folder: Path, threshold: float = DEFAULT_TAG_THRESHOLD, batch_size: int = 64
) -> dict[str, Any]:
    items = load_eval_set(folder)
    images = np.concatenate(
        [
            embedder.embed_images([_open_image(p) for p, _, _ in items[i : i + batch_size]])
            for i in range(0, len(items), batch_size)
        ]
    )
    specs = [spec for _, _, spec in items]
    single = [i for i, s in enumerate(specs) if len(s.objects) == 1]
    report: dict[str, Any] = {"images": len(items), "single_object_images": len(single)}
    labels = synthetic.zero_shot_labels()
    for kind, classes in (("colour", list(synthetic.COLOURS)), ("shape", list(synthetic.SHAPES))):
        prompts = embedder.embed_texts(labels[kind])
        predicted = (images[single] @ prompts.T).argmax(axis=1)
        truth = [classes.index(getattr(specs[i].objects[0], kind)) for i in single]
        report[f"zero_shot_{kind}_accuracy"] = (
            float(np.mean(predicted == np.array(truth))) if single else None
        )
    report |= _recall(embedder, images, items, single, "single_object")
    report |= _recall(embedder, images, items, list(range(len(items))), "all")
    report |= _tagging(embedder, images, specs, threshold)
    return report


def _open_image(path: Path) -> Image.Image:
    """One evaluation image; a missing or broken one stops the evaluation in one line (scores over
    a set with holes would not compare with other runs)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise InputError(
            f"evaluation image {path} cannot be read ({exc}); restore it or write the set again"
        ) from None


def _recall(embedder, images, items, queries, name, ks=(1, 5, 10)) -> dict[str, float]:
    """Text -> image recall@k: a hit when the top k hold an image the caption is true of."""
    if not queries:
        return {}
    captions = [items[i][1] for i in queries]
    order = np.argsort(-(embedder.embed_texts(captions) @ images.T), axis=1)
    variants = [
        set(map(synthetic.canonicalise_caption, synthetic.all_caption_variants(s)))
        for _, _, s in items
    ]
    hits = {k: 0 for k in ks}
    for row, caption in zip(order, captions, strict=False):
        canon = synthetic.canonicalise_caption(caption)
        first = next((rank for rank, j in enumerate(row) if canon in variants[j]), len(row))
        for k in ks:
            hits[k] += first < k
    return {f"recall@{k}_{name}": hits[k] / len(queries) for k in ks}


def _tagging(embedder, images, specs, threshold) -> dict[str, float]:
    """Multi-label colour and shape tags with independent sigmoid probabilities."""
    labels = synthetic.zero_shot_labels()
    names = list(synthetic.COLOURS) + list(synthetic.SHAPES)
    probs = embedder.probability(
        images @ embedder.embed_texts(labels["colour"] + labels["shape"]).T
    )
    predicted = probs >= threshold
    truth = np.array(
        [
            [n in {o.colour for o in s.objects} | {o.shape for o in s.objects} for n in names]
            for s in specs
        ]
    )
    tp = float((predicted & truth).sum())
    return {
        "tag_threshold": threshold,
        "tag_precision": tp / max(1.0, float(predicted.sum())),
        "tag_recall": tp / max(1.0, float(truth.sum())),
    }
