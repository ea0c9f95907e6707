"""Deterministic synthetic world of coloured shapes with true captions, for training a demo SigLIP.

Why one module of about 500 lines: the world is defined once, by the tables below (colours, shapes,
sizes, positions, backgrounds and their phrases), and both halves read them: rendering (what is drawn)
and captioning (what is said, which must be true of what is drawn, so that all_caption_variants can
tell which captions a scene makes true). Kept together, a change to a table and both its uses are read
in one file; the tokenizer for the captions (train_sentencepiece) and the sample-set writer are short.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import random
import re
import string
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sentencepiece as spm
from PIL import Image, ImageDraw

from ..atomic import write_atomic

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in output pixels

# Tables, several entries a line, read as palettes and maps: kept out of the formatter.
# fmt: off
# Saturated object colours; the backgrounds are muted mid tones, so every object stands out.
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30), "green": (30, 165, 50), "blue": (30, 70, 225),
    "yellow": (245, 220, 20), "orange": (245, 130, 15), "purple": (135, 45, 175),
    "white": (250, 250, 250), "black": (12, 12, 12),
}
BACKGROUND_COLOURS: dict[str, RGB] = {
    "light grey": (185, 185, 185), "grey": (128, 128, 128), "dark grey": (88, 88, 88),
    "beige": (200, 188, 160), "pale blue": (160, 180, 200), "sage": (145, 165, 135),
    "taupe": (150, 132, 118), "slate": (95, 110, 125),
}
# Unit coordinates (fractions of the image side). Neighbouring positions sit 0.32 apart, so two
# large objects (radius 0.155, plus MIN_GAP) never overlap at their canonical place.
POSITION_XY: dict[str, tuple[float, float]] = {
    "left": (0.18, 0.5), "right": (0.82, 0.5), "top": (0.5, 0.18), "bottom": (0.5, 0.82),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES = {
    "left": "on the left", "right": "on the right", "top": "at the top",
    "bottom": "at the bottom", "centre": "in the centre",
}
# fmt: on
SHAPES = ("circle", "square", "triangle", "star", "heart")
SIZES = ("small", "large")
POSITIONS = tuple(POSITION_XY)
BACKGROUNDS = ("plain", "striped", "gradient", "noisy")
SIZE_RADIUS: dict[str, float] = {"small": 0.08, "large": 0.155}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
PREFIXES = ("", "a photo of ", "an image of ", "a picture of ")
MODES = ("full", "colour", "shape")  # attributes a caption names: both, colour, shape

SUPERSAMPLE = 4
MAX_ROTATION_DEG = 15.0
POSITION_JITTER = 0.03
SIZE_JITTER = (0.9, 1.1)
MIN_GAP = 0.01


def _require(value: str, allowed: Sequence[str] | dict[str, RGB], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(allowed)}")


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        _require(self.colour, COLOURS, "colour")
        _require(self.shape, SHAPES, "shape")
        _require(self.size, SIZES, "size")
        _require(self.position, POSITIONS, "position")


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    background: str = "plain"
    background_colour: str = "light grey"

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("a scene needs at least one object")
        positions = [o.position for o in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"objects must have distinct positions, got {positions}")
        _require(self.background, BACKGROUNDS, "background")
        _require(self.background_colour, BACKGROUND_COLOURS, "background colour")


@dataclasses.dataclass(frozen=True)
class PlacedObject:
    """Where an object was drawn, in output pixels (for tests and evaluation crops)."""

    object: ObjectSpec
    centre: tuple[float, float]
    radius: float
    angle_deg: float
    box: Box


def _fit_unit_circle(points: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Centre on the bounding box and scale so the farthest point sits at `radius`."""
    points = points - (points.min(axis=0) + points.max(axis=0)) / 2
    return points * (radius / np.linalg.norm(points, axis=1).max())


def _unit_shapes() -> dict[str, np.ndarray]:
    # Outlines inside the unit circle (so layout can treat every object as a disc of radius r),
    # y pointing down. The triangle keeps its centroid at the centre: centring its bounding box
    # would push two corners out of the circle.
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    circle = 0.88 * np.stack([np.cos(t), np.sin(t)], axis=1)
    square = 0.7 * np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
    tri_angles = np.radians([-90, 30, 150])
    triangle = np.stack([np.cos(tri_angles), np.sin(tri_angles)], axis=1)
    star_angles = np.radians(-90 + 36 * np.arange(10))
    star_radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    star = np.stack([star_radii * np.cos(star_angles), star_radii * np.sin(star_angles)], axis=1)
    h = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    heart_y = -(13 * np.cos(h) - 5 * np.cos(2 * h) - 2 * np.cos(3 * h) - np.cos(4 * h))
    heart = np.stack([16 * np.sin(h) ** 3, heart_y], axis=1)
    return {
        "circle": circle,
        "square": square,
        "triangle": triangle,
        "star": _fit_unit_circle(star),
        "heart": _fit_unit_circle(heart),
    }


_UNIT_SHAPES = _unit_shapes()


def shape_outline(
    shape: str, centre: tuple[float, float], radius: float, angle_deg: float
) -> np.ndarray:
    """Polygon (N, 2) of `shape` centred at `centre`, scaled by `radius`, rotated by `angle_deg`."""
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return _UNIT_SHAPES[shape] @ rotation * radius + np.asarray(centre)


def _layout_fits(layout: list[tuple[float, float, float]]) -> bool:
    for i, (x, y, r) in enumerate(layout):
        if min(x - r, y - r, 1 - x - r, 1 - y - r) < MIN_GAP:
            return False
        for x2, y2, r2 in layout[:i]:
            if math.hypot(x - x2, y - y2) < r + r2 + MIN_GAP:
                return False
    return True


def _place(spec: SceneSpec, rng: random.Random | None) -> list[tuple[float, float, float, float]]:
    """(x, y, radius, angle) per object in unit coordinates; jittered layouts that collide are redrawn."""
    canonical = [(*POSITION_XY[o.position], SIZE_RADIUS[o.size]) for o in spec.objects]
    if rng is None:
        return [(x, y, r, 0.0) for x, y, r in canonical]
    angles = [rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG) for _ in canonical]
    layout = canonical  # always fits, see POSITION_XY
    for _ in range(20):
        candidate = [
            (
                x + rng.uniform(-POSITION_JITTER, POSITION_JITTER),
                y + rng.uniform(-POSITION_JITTER, POSITION_JITTER),
                r * rng.uniform(*SIZE_JITTER),
            )
            for x, y, r in canonical
        ]
        if _layout_fits(candidate):
            layout = candidate
            break
    return [(x, y, r, a) for (x, y, r), a in zip(layout, angles, strict=True)]


def _shifted_tone(base: np.ndarray) -> np.ndarray:
    # A second muted tone for stripes: step towards mid grey, so it never approaches white or black.
    return base - 40 if base.mean() > 128 else base + 40


def _background(spec: SceneSpec, size: int, rng: random.Random | None) -> np.ndarray:
    base = np.array(BACKGROUND_COLOURS[spec.background_colour], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if spec.background == "plain":
        return np.broadcast_to(base, (size, size, 3)).copy()
    if spec.background == "striped":
        period = size * (rng.uniform(0.08, 0.16) if rng is not None else 0.12)
        orientation = (
            rng.choice(("horizontal", "vertical", "diagonal")) if rng is not None else "horizontal"
        )
        t = {"horizontal": yy, "vertical": xx, "diagonal": (xx + yy) / math.sqrt(2)}[orientation]
        band = (np.floor(t / (period / 2)) % 2)[..., None]
        return base * (1 - band) + _shifted_tone(base) * band
    if spec.background == "gradient":
        if rng is None:
            other, angle = _shifted_tone(base), math.pi / 2
        else:
            names = [n for n in BACKGROUND_COLOURS if n != spec.background_colour]
            other = np.array(BACKGROUND_COLOURS[rng.choice(names)], dtype=np.float32)
            angle = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1e-6))[..., None]
        return base * (1 - t) + other * t
    noise_rng = np.random.default_rng(rng.getrandbits(63) if rng is not None else 0)
    grain = noise_rng.normal(0, 16, (size, size, 1)) + noise_rng.normal(0, 6, (size, size, 3))
    # Clipped so no grain pixel drifts towards an object colour (dark grey towards black).
    return base + np.clip(grain, -30, 30).astype(np.float32)


def _draw_object(canvas: np.ndarray, outline: np.ndarray, colour: RGB) -> None:
    """Composite one anti-aliased polygon: drawn at SUPERSAMPLE x in a local patch, box-averaged."""
    size = canvas.shape[0]
    x0, y0 = np.floor(outline.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 1
    patch = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    # PIL puts integer coordinates on pixel centres, hence the half-pixel shift.
    local = (outline - (x0, y0)) * SUPERSAMPLE - 0.5
    ImageDraw.Draw(patch).polygon([tuple(p) for p in local], fill=255)
    alpha = np.asarray(patch.reduce(SUPERSAMPLE), dtype=np.float32)[..., None] / 255.0
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    alpha = alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = canvas[cy0:cy1, cx0:cx1]
    region += (np.array(colour, dtype=np.float32) - region) * alpha


def render_scene_with_boxes(
    spec: SceneSpec, size: int = 128, rng: random.Random | None = None
) -> tuple[Image.Image, list[PlacedObject]]:
    """Render `spec` as a size x size RGB image; rng=None gives the canonical, unjittered layout."""
    if size < 16:
        raise ValueError(f"image size must be at least 16 pixels, got {size}")
    canvas = _background(spec, size, rng)
    placed = []
    for obj, (x, y, r, angle) in zip(spec.objects, _place(spec, rng), strict=True):
        centre, radius = (x * size, y * size), r * size
        outline = shape_outline(obj.shape, centre, radius, angle)
        _draw_object(canvas, outline, COLOURS[obj.colour])
        box = (*outline.min(axis=0).tolist(), *outline.max(axis=0).tolist())
        placed.append(PlacedObject(obj, centre, radius, angle, box))
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    return image, placed


def render_scene(spec: SceneSpec, size: int = 128, rng: random.Random | None = None) -> Image.Image:
    """Render `spec`; deterministic given the spec and the rng's state."""
    return render_scene_with_boxes(spec, size, rng)[0]


def sample_scene(rng: random.Random, max_objects: int = 3, min_objects: int = 1) -> SceneSpec:
    """A random scene of min..max objects at distinct positions; a quarter of extra objects repeat
    an earlier colour and shape, so captions like "two blue squares" occur."""
    if not 1 <= min_objects <= max_objects <= len(POSITIONS):
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {len(POSITIONS)}, "
            f"got min_objects={min_objects}, max_objects={max_objects}"
        )
    count = rng.randint(min_objects, max_objects)
    objects: list[ObjectSpec] = []
    for position in rng.sample(POSITIONS, count):
        if objects and rng.random() < 0.25:
            twin = rng.choice(objects)
            colour, shape = twin.colour, twin.shape
        else:
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        objects.append(ObjectSpec(colour, shape, rng.choice(SIZES), position))
    return SceneSpec(tuple(objects), rng.choice(BACKGROUNDS), rng.choice(list(BACKGROUND_COLOURS)))


def single_object_scene(
    rng: random.Random,
    colour: str | None = None,
    shape: str | None = None,
    *,
    size: str | None = None,
    position: str | None = None,
    background: str | None = None,
) -> SceneSpec:
    """One object; unnamed attributes are drawn from rng (always all drawn, so fixing one
    attribute does not change the others)."""
    drawn = ObjectSpec(
        rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(SIZES), rng.choice(POSITIONS)
    )
    drawn_background = rng.choice(BACKGROUNDS)
    background_colour = rng.choice(list(BACKGROUND_COLOURS))
    obj = ObjectSpec(
        colour or drawn.colour, shape or drawn.shape, size or drawn.size, position or drawn.position
    )
    return SceneSpec((obj,), background or drawn_background, background_colour)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _groups(spec: SceneSpec, mode: str) -> list[list[ObjectSpec]]:
    """Objects grouped by the attributes the caption names, in order of first appearance."""
    groups: dict[str, list[ObjectSpec]] = {}
    for obj in spec.objects:
        key = {"full": f"{obj.colour} {obj.shape}", "colour": obj.colour, "shape": obj.shape}[mode]
        groups.setdefault(key, []).append(obj)
    return list(groups.values())


def _group_phrase(group: list[ObjectSpec], mode: str, with_size: bool, with_position: bool) -> str:
    first, count = group[0], len(group)
    words = [first.size] if with_size else []
    if mode != "shape":
        words.append(first.colour)
    words.append(("shape" if mode == "colour" else first.shape) + ("s" if count > 1 else ""))
    head = " ".join(words)
    phrase = f"{_article(head) if count == 1 else NUMBER_WORDS[count]} {head}"
    return f"{phrase} {POSITION_PHRASES[first.position]}" if with_position else phrase


def _options(allowed: bool) -> tuple[bool, ...]:
    return (False, True) if allowed else (False,)


def _can_name(group: list[ObjectSpec]) -> tuple[bool, bool]:
    """Whether a size and a position word would be true of every member of the group."""
    return len({o.size for o in group}) == 1, len(group) == 1


def _compose(
    spec: SceneSpec,
    prefix: str,
    groups: list[list[ObjectSpec]],
    mode: str,
    flags: Sequence[tuple[bool, bool]],
    with_background: bool,
) -> str:
    phrases = [_group_phrase(g, mode, s, p) for g, (s, p) in zip(groups, flags, strict=True)]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    suffix = (
        f" on {_article(spec.background)} {spec.background} background" if with_background else ""
    )
    return prefix + body + suffix


def caption_scene(spec: SceneSpec, rng: random.Random, max_words: int | None = None) -> str:
    """One true caption of `spec`, chosen by rng; always one of all_caption_variants(spec).
    With max_words, a caption over the limit is redrawn among the variants that fit (the
    shortest one if none does), so a fixed-length text tower never truncates it."""
    prefix = "" if rng.random() < 0.5 else rng.choice(PREFIXES[1:])
    mode = rng.choices(MODES, weights=(0.7, 0.15, 0.15))[0]
    groups = _groups(spec, mode)
    flags = []
    for group in groups:
        size_ok, position_ok = _can_name(group)
        flags.append((rng.random() < 0.6 and size_ok, rng.random() < 0.6 and position_ok))
    caption = _compose(spec, prefix, groups, mode, flags, rng.random() < 0.5)
    if max_words is None or len(caption.split()) <= max_words:
        return caption
    variants = all_caption_variants(spec)
    fitting = [v for v in variants if len(v.split()) <= max_words]
    return rng.choice(fitting) if fitting else min(variants, key=lambda v: len(v.split()))


def all_caption_variants(spec: SceneSpec) -> list[str]:
    """Every caption caption_scene can produce for `spec` (all true of it), without duplicates."""
    captions: dict[str, None] = {}
    for prefix, mode in itertools.product(PREFIXES, MODES):
        groups = _groups(spec, mode)
        per_group = [
            list(itertools.product(_options(size_ok), _options(position_ok)))
            for size_ok, position_ok in map(_can_name, groups)
        ]
        for flags in itertools.product(*per_group):
            for with_background in (False, True):
                captions[_compose(spec, prefix, groups, mode, flags, with_background)] = None
    return list(captions)


def caption_words() -> list[str]:
    """Every word a caption or zero-shot label can contain, sorted."""
    words = {"a", "an", "and", "on", "background", "shape", "shapes"}
    for text in (*PREFIXES, *POSITION_PHRASES.values(), *NUMBER_WORDS.values()):
        words.update(text.split())
    words.update((*COLOURS, *SHAPES, *SIZES, *BACKGROUNDS))
    words.update(f"{s}s" for s in SHAPES)
    return sorted(words)


def list_colours() -> list[str]:
    """Object colour names in class order (the order of zero_shot_labels()["colour"])."""
    return list(COLOURS)


def zero_shot_labels() -> dict[str, list[str]]:
    """Prompts in class order (COLOURS, SHAPES), phrased like the training captions."""
    return {
        "colour": [f"{_article(c)} {c} shape" for c in COLOURS],
        "shape": [f"{_article(s)} {s}" for s in SHAPES],
    }


def iter_pairs(
    seed: int,
    n: int | None = None,
    size: int = 128,
    max_objects: int = 3,
    max_words: int | None = None,
) -> Iterator[tuple[Image.Image, str, SceneSpec]]:
    """(image, caption, spec) triples, the same for the same seed; endless when n is None."""
    rng = random.Random(seed)
    indices = itertools.count() if n is None else range(n)
    for _ in indices:
        spec = sample_scene(rng, max_objects=max_objects)
        image = render_scene(spec, size, rng)
        yield image, caption_scene(spec, rng, max_words), spec


def short_caption(obj: ObjectSpec, rng: random.Random) -> str:
    """A bare caption of one object: "a red star" (half the time), "a star" or "a red shape"."""
    r = rng.random()
    if r < 0.5:
        return f"{_article(obj.colour)} {obj.colour} {obj.shape}"
    if r < 0.75:
        return f"{_article(obj.shape)} {obj.shape}"
    return f"{_article(obj.colour)} {obj.colour} shape"


def caption_corpus(seed: int, n: int, max_objects: int = 3) -> list[str]:
    """n sampled captions (no rendering) followed by the zero-shot prompts, for a tokenizer."""
    rng = random.Random(seed)
    captions = [caption_scene(sample_scene(rng, max_objects=max_objects), rng) for _ in range(n)]
    return captions + [p for prompts in zero_shot_labels().values() for p in prompts]


def canonicalise_caption(text: str) -> str:
    """SigLIP's text canonicalisation: lower case, drop ASCII punctuation, collapse whitespace."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


# A table of trainer options grouped as the spiece.model layout reads: kept out of the formatter.
# fmt: off
# SigLIP's spiece.model layout: unigram, 0 <pad>, 1 </s>, 2 <unk>, no BOS, NFKC, dummy prefix.
SIGLIP_SPM_ARGS: dict[str, Any] = {
    "model_type": "unigram", "pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1,
    "character_coverage": 1.0, "normalization_rule_name": "nmt_nfkc", "add_dummy_prefix": True,
    "hard_vocab_limit": False, "num_threads": 1, "shuffle_input_sentence": False,
}
# fmt: on


def train_sentencepiece(captions: list[str], out_path: Path, vocab_size: int = 96) -> Path:
    """Train a unigram SentencePiece model laid out like SigLIP's spiece.model (0 <pad>, 1 </s>,
    2 <unk>, no BOS) on canonicalised captions. vocab_size is a soft limit; the default leaves
    room for every caption word to be one piece next to the single characters."""
    lines = [line for line in map(canonicalise_caption, captions) if line]
    if not lines:
        raise ValueError("need at least one non-empty caption to train a tokenizer")
    # SentencePiece 0.2's suffix-array seeding misses many whole words (it keeps "▁red" but not
    # "▁background"), so every caption word is offered as a seed; EM still decides what survives.
    # The trainer records the seed file's path in the model, so the path is named by content to
    # keep the model bytes deterministic.
    word_counts = Counter(word for line in lines for word in line.split())
    seeds = "".join(f"\u2581{w}\t{c}\n" for w, c in sorted(word_counts.items())).encode()
    digest = hashlib.sha256(seeds).hexdigest()[:16]
    seeds_path = Path(tempfile.gettempdir()) / f"siglip-search-spm-seeds-{digest}.tsv"
    write_atomic(seeds_path, seeds)  # atomic: a concurrent run writes the same bytes
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            seed_sentencepieces_file=str(seeds_path),
            vocab_size=vocab_size,
            **SIGLIP_SPM_ARGS,
        )
    finally:
        seeds_path.unlink(missing_ok=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, model.getvalue())
    return out_path


def write_sample_set(
    out_dir: Path, seed: int, n: int, size: int = 224, fmt: Literal["png", "jpg"] = "png"
) -> Path:
    """Write n images (0001_red-circle_blue-square.png, ...) and captions.jsonl; return the latter."""
    if fmt not in ("png", "jpg"):
        raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n)))
    lines = []
    for index, (image, caption, spec) in enumerate(iter_pairs(seed, n, size=size), start=1):
        hint = "_".join(f"{o.colour}-{o.shape}" for o in spec.objects)
        name = f"{index:0{width}d}_{hint}.{fmt}"
        image.save(out_dir / name, quality=95)  # quality only matters for JPEG
        objects = [dataclasses.asdict(o) for o in spec.objects]
        record = {
            "file": name,
            "caption": caption,
            "objects": objects,
            "background": spec.background,
        }
        lines.append(json.dumps(record))
    captions_path = out_dir / "captions.jsonl"
    captions_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return captions_path
