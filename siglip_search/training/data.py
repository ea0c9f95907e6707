"""Training data: image-caption batches from the synthetic world or a captioned folder, per step.

A batch is a pure function of (seed, step, rank), so a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..errors import InputError
from ..image_processor import SiglipImageProcessor
from ..tokenizer import SiglipTokenizer
from . import synthetic


class SyntheticSource:
    """Scenes rendered at a random size, then resized by the model's own image processor.

    A pair is (image, caption, truths): truths is the set of canonical captions true of the image
    when it is cheap to know (single-object scenes), else None, so that "a star" counts as a positive
    for every star in the batch, not only its own. `short_steps`: the first steps show only single
    objects with short captions ("a red star", "a star", "a red shape"); see TrainConfig.lock_text_steps.
    Afterwards `short_share` of each batch keeps such pairs.
    """

    def __init__(
        self,
        image_size: int,
        max_words: int,
        max_objects: int = 3,
        twins: bool = False,
        short_steps: int = 0,
        short_share: float = 0.15,
    ) -> None:
        self.twins = twins
        self.image_size = image_size
        self.render_sizes = sorted({image_size, int(image_size * 1.5), image_size * 2, 224})
        self.max_words = max_words
        self.max_objects = max_objects
        self.short_steps, self.short_share = short_steps, short_share
        self.pool_images: np.ndarray | None = None  # see prerender()
        self.pool_specs: list[synthetic.SceneSpec] = []
        self.pool_singles = 0

    def prerender(
        self,
        size: int,
        seed: int,
        processes: int | None = None,
        resample: int = 3,
        progress: bool = True,
    ) -> None:
        """Render `size` scenes once, in parallel, already resized to the model's input (uint8 in memory:
        27 KB each at 96 px); batches then draw from this pool and caption each draw afresh.

        Rendering costs ~4.5 ms a scene, as much CPU as a training step of the demo model spends on the
        model, so rendering every batch anew halves training speed on 2 cores. The first half of the
        pool are single-object scenes (the locked-text phase draws only those), the rest 1-3 objects.
        """
        if size < 2:
            raise InputError(
                f"a scene pool needs at least 2 scenes (one single-object), got {size}; 0 turns it off"
            )
        chunk, half = 500, size // 2
        jobs = [
            (
                seed,
                i,
                min(chunk, end - i),
                single,
                self.image_size,
                self.render_sizes,
                self.max_objects,
                resample,
            )
            for single, begin, end in ((True, 0, half), (False, half, size))
            for i in range(begin, end, chunk)
        ]
        images, specs = [], []
        # no fork on Windows
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with (
            multiprocessing.get_context(method).Pool(
                processes or multiprocessing.cpu_count()
            ) as pool,
            tqdm(total=size, disable=not progress, unit="scene", desc="rendering") as bar,
        ):
            for part_images, part_specs in pool.imap(_render_chunk, jobs):
                images.append(part_images)
                specs.extend(part_specs)
                bar.update(len(part_specs))
        self.pool_images, self.pool_specs = np.concatenate(images), specs
        self.pool_singles = half

    def sample(self, rng: random.Random) -> tuple[Image.Image, str, frozenset[str] | None]:
        if self.pool_images is not None:
            index = rng.randrange(len(self.pool_specs))
            spec = self.pool_specs[index]
            return (
                Image.fromarray(self.pool_images[index]),
                synthetic.caption_scene(spec, rng, self.max_words),
                _truths(spec),
            )
        return self._render(
            synthetic.sample_scene(rng, max_objects=self.max_objects), rng.random(), rng
        )

    def sample_batch(
        self, rng: random.Random, n: int, step: int = 0
    ) -> list[tuple[Image.Image, str, frozenset[str] | None]]:
        """With `twins`, half the batch are shape twins: the same scene, layout and caption template
        with other shapes. Colour, size and position then cannot tell the pair apart, so the model
        must learn shape (the part a plain random batch teaches slowly)."""
        if step < self.short_steps:
            return [self._render_short(rng) for _ in range(n)]
        if not self.twins:
            return [
                self._render_short(rng) if rng.random() < self.short_share else self.sample(rng)
                for _ in range(n)
            ]
        pairs: list[tuple[Image.Image, str, frozenset[str] | None]] = []
        while len(pairs) < n:
            spec = synthetic.sample_scene(rng, max_objects=self.max_objects)
            key = rng.random()
            pairs.append(self._render(spec, key, rng))
            if len(pairs) < n:
                pairs.append(self._render(_shape_twin(spec, rng), key, rng))
        return pairs

    def _render_short(self, rng: random.Random) -> tuple[Image.Image, str, frozenset[str] | None]:
        if self.pool_images is not None:
            index = rng.randrange(self.pool_singles)
            spec = self.pool_specs[index]
            image = Image.fromarray(self.pool_images[index])
            return image, synthetic.short_caption(spec.objects[0], rng), _truths(spec)
        spec = synthetic.single_object_scene(rng)
        image, _, truths = self._render(spec, rng.random(), rng)
        return image, synthetic.short_caption(spec.objects[0], rng), truths

    def _render(
        self, spec: synthetic.SceneSpec, key: float, rng: random.Random
    ) -> tuple[Image.Image, str, frozenset[str] | None]:
        local = random.Random(key)  # same key -> same size, jitter, background and caption template
        image = _render_photo(spec, self.render_sizes, local, rng)
        return image, synthetic.caption_scene(spec, local, self.max_words), _truths(spec)


def _render_photo(
    spec: synthetic.SceneSpec, sizes: list[int], local: random.Random, rng: random.Random
) -> Image.Image:
    image = synthetic.render_scene(spec, local.choice(sizes), local)
    if rng.random() < 0.3:  # photos arrive as JPEGs: learn to ignore their artefacts
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(70, 95))
        image = Image.open(buffer).convert("RGB")
    return image


@functools.lru_cache(
    maxsize=16384
)  # 8 colours x 5 shapes x 2 sizes x 5 places x 32 backgrounds = 12,800
def _truths(spec: synthetic.SceneSpec) -> frozenset[str] | None:
    """Every caption true of a one-object scene (~1 ms); None for more objects (~10 ms: too slow)."""
    if len(spec.objects) != 1:
        return None
    return frozenset(map(synthetic.canonicalise_caption, synthetic.all_caption_variants(spec)))


def _render_chunk(job) -> tuple[np.ndarray, list[synthetic.SceneSpec]]:
    seed, start, count, single, image_size, render_sizes, max_objects, resample = job
    rng = random.Random(f"pool-{seed}-{start}")
    images = np.empty((count, image_size, image_size, 3), np.uint8)
    specs = []
    for i in range(count):
        spec = (
            synthetic.single_object_scene(rng)
            if single
            else synthetic.sample_scene(rng, max_objects=max_objects)
        )
        image = _render_photo(spec, render_sizes, rng, rng)
        if image.size != (image_size, image_size):
            image = image.resize(
                (image_size, image_size), resample=Image.Resampling(resample), reducing_gap=None
            )
        images[i] = np.asarray(image)
        specs.append(spec)
    return images, specs


def _shape_twin(spec: synthetic.SceneSpec, rng: random.Random) -> synthetic.SceneSpec:
    objects = tuple(
        dataclasses.replace(o, shape=rng.choice([s for s in synthetic.SHAPES if s != o.shape]))
        for o in spec.objects
    )
    return dataclasses.replace(spec, objects=objects)


class CaptionFolderSource:
    """A folder of images plus captions.jsonl ({"file", "caption"}) or captions.csv (file,caption).

    Every listed image is decoded once up front (JPEGs at reduced size, so this is quick): a missing,
    unreadable or truncated image, and a row with an empty caption, would otherwise stop a long run
    at the first batch that draws it. Such pairs are left out and listed in `skipped` (name, reason).
    """

    def __init__(
        self, folder: str | Path, captions: str | Path | None = None, threads: int | None = None
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"training folder {self.folder} does not exist or is not a folder")
        path = Path(captions) if captions else _find_captions(self.folder)
        rows, self.skipped = _read_captions(path)
        # PIL decodes without the GIL
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            problems = list(pool.map(lambda row: _image_problem(self.folder / row[0]), rows))
        self.pairs = [row for row, problem in zip(rows, problems, strict=True) if problem is None]
        self.skipped += [
            (row[0], problem) for row, problem in zip(rows, problems, strict=True) if problem
        ]
        if not self.pairs:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.skipped[:3])
            raise InputError(
                f"{path} lists no usable image-caption pairs" + (f" ({reasons})" if reasons else "")
            )

    def sample(self, rng: random.Random) -> tuple[Image.Image, str, None]:
        name, caption = rng.choice(self.pairs)
        try:
            with Image.open(self.folder / name) as im:
                return ImageOps.exif_transpose(im).convert("RGB"), caption, None
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            # Read fine when training started: the file changed on disk since.
            raise InputError(f"cannot read training image {self.folder / name}: {exc}") from None


def _image_problem(path: Path) -> str | None:
    """Why `path` cannot be trained on, or None. draft() lets a JPEG decode at 1/2-1/8 scale."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (256, 256))
            im.load()
    except FileNotFoundError:
        return "no such file"
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return str(exc).replace(str(path), path.name) or type(exc).__name__
    return None


def _find_captions(folder: Path) -> Path:
    for name in ("captions.jsonl", "captions.csv"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} has no captions.jsonl or captions.csv")


def _read_captions(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs, skipped): rows with an empty file name or caption are skipped, named by line.
    A UTF-8 byte-order mark (Excel's "CSV UTF-8") and CRLF line ends are accepted."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read captions file {path} (UTF-8 expected): {exc}") from None
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        name_column = "file" if "file" in columns else "path"
        if name_column not in columns or "caption" not in columns:
            raise InputError(
                f"{path}: the first row must name the columns file,caption (found {','.join(columns)})"
            )
        records = [
            (number, {"file": r.get(name_column), "caption": r.get("caption")})
            for number, r in enumerate(reader, 2)
        ]
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    records.append(
                        (
                            number,
                            {
                                "file": record.get("file") or record["path"],
                                "caption": record["caption"],
                            },
                        )
                    )
                except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                    raise InputError(
                        f'{path}:{number}: expected {{"file", "caption"}}: {exc}'
                    ) from None
    pairs, skipped = [], []
    for number, record in records:
        name, caption = record["file"], record["caption"]
        if (
            not isinstance(name, str)
            or not name.strip()
            or not isinstance(caption, str)
            or not caption.strip()
        ):
            skipped.append((f"{path.name}:{number}", "empty file name or caption"))
        else:
            pairs.append((name.strip(), caption))
    return pairs, skipped


class StepBatches(torch.utils.data.Dataset):
    """Item `step` is the whole batch of that step for this rank: (pixel_values, input_ids, positives)."""

    def __init__(
        self,
        source,
        image_processor: SiglipImageProcessor,
        tokenizer: SiglipTokenizer,
        batch_size: int,
        seed: int,
        rank: int = 0,
        total_steps: int = 10**9,
    ) -> None:
        self.source, self.image_processor, self.tokenizer = source, image_processor, tokenizer
        self.batch_size, self.seed, self.rank, self.total_steps = (
            batch_size,
            seed,
            rank,
            total_steps,
        )

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step: int):
        rng = random.Random(f"{self.seed}-{self.rank}-{step}")
        if hasattr(self.source, "sample_batch"):
            pairs = self.source.sample_batch(rng, self.batch_size, step)
        else:
            pairs = [self.source.sample(rng) for _ in range(self.batch_size)]
        pixels = np.stack([self.image_processor.preprocess_one(image) for image, _, _ in pairs])
        captions = [caption for _, caption, _ in pairs]
        ids = self.tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")[
            "input_ids"
        ]
        # A caption is a positive for every image it is true of: its own, any image with the same
        # caption, and any image whose known truths include it. Positives[text, image].
        canon = [self.tokenizer.canonicalize_text(c) for c in captions]
        truths = [
            t if t is not None else frozenset((c,))
            for (_, _, t), c in zip(pairs, canon, strict=True)
        ]
        positives = torch.tensor(
            [[a == b or a in t for b, t in zip(canon, truths, strict=True)] for a in canon]
        )
        return torch.from_numpy(pixels), ids, positives
