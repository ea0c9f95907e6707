"""The synthetic shape world: deterministic pictures, true captions, a SigLIP-style tokenizer."""

from __future__ import annotations

import itertools
import json
import random
import re

import numpy as np
import pytest
import sentencepiece as spm
from PIL import Image

from siglip_search.training import synthetic
from siglip_search.training.synthetic import ObjectSpec, SceneSpec

# Written out here rather than read from the module, so a changed table shows up as a failure.
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "heart")
PHRASE_TO_POSITION = {
    "on the left": "left",
    "on the right": "right",
    "at the top": "top",
    "at the bottom": "bottom",
    "in the centre": "centre",
}
COUNT_WORDS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}
PREFIXES = ("a photo of ", "an image of ", "a picture of ")


def parse_caption(caption: str) -> tuple[list[dict], str | None]:
    """Split a caption into noun groups {count, size, colour, shape, position} and a background."""
    text = caption
    for prefix in PREFIXES:
        text = text.removeprefix(prefix)
    background = None
    match = re.search(r" on a (\w+) background$", text)
    if match:
        background, text = match.group(1), text[: match.start()]
    groups = []
    for chunk in re.split(r", | and ", text):
        words = chunk.split()
        group = {"count": COUNT_WORDS[words.pop(0)], "size": None, "colour": None, "position": None}
        if " ".join(words[-3:]) in PHRASE_TO_POSITION:
            group["position"] = PHRASE_TO_POSITION[" ".join(words[-3:])]
            words = words[:-3]
        if words[0] in ("small", "large"):
            group["size"] = words.pop(0)
        if words[0] in COLOURS:
            group["colour"] = words.pop(0)
        noun = words.pop(0)
        assert not words, f"unexpected words {words} in {caption!r}"
        assert noun.endswith("s") == (group["count"] > 1), f"number disagrees in {caption!r}"
        singular = noun.removesuffix("s")
        assert singular in (*SHAPES, "shape"), f"unknown noun {noun!r} in {caption!r}"
        group["shape"] = None if singular == "shape" else singular
        article = chunk.split()[0]
        if article in ("a", "an"):
            assert (article == "an") == (chunk.split()[1][0] in "aeiou"), caption
        groups.append(group)
    return groups, background


def assert_caption_true(caption: str, spec: SceneSpec) -> None:
    groups, background = parse_caption(caption)
    if background is not None:
        assert background == spec.background, caption
    mentioned: set[int] = set()
    for group in groups:
        members = {
            i
            for i, obj in enumerate(spec.objects)
            if group["colour"] in (None, obj.colour) and group["shape"] in (None, obj.shape)
        }
        assert len(members) == group["count"], f"{caption!r} miscounts {spec.objects}"
        assert not members & mentioned, f"{caption!r} names an object twice"
        mentioned |= members
        for i in members:
            assert group["size"] in (None, spec.objects[i].size), caption
            assert group["position"] in (None, spec.objects[i].position), caption
    assert mentioned == set(range(len(spec.objects))), f"{caption!r} leaves out an object"


def one_object(colour: str = "red", shape: str = "circle", size: str = "large") -> SceneSpec:
    return SceneSpec((ObjectSpec(colour, shape, size, "centre"),), "plain", "light grey")


def object_mask(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.int16)
    return np.abs(pixels - np.array(background)).max(axis=-1) > 40


def test_the_same_seed_gives_the_same_pairs_and_another_seed_different_ones():
    first = list(synthetic.iter_pairs(seed=7, n=12, size=64))
    again = list(synthetic.iter_pairs(seed=7, n=12, size=64))
    other = list(synthetic.iter_pairs(seed=8, n=12, size=64))

    assert [im.tobytes() for im, _, _ in first] == [im.tobytes() for im, _, _ in again]
    assert [c for _, c, _ in first] == [c for _, c, _ in again]
    assert [im.tobytes() for im, _, _ in first] != [im.tobytes() for im, _, _ in other]
    assert [c for _, c, _ in first] != [c for _, c, _ in other]
    assert all(im.mode == "RGB" and im.size == (64, 64) for im, _, _ in first)


def test_rendering_depends_only_on_the_spec_and_the_rng_seed():
    spec = synthetic.sample_scene(random.Random(3), max_objects=3, min_objects=3)
    a = synthetic.render_scene(spec, 96, random.Random(11))
    b = synthetic.render_scene(spec, 96, random.Random(11))
    c = synthetic.render_scene(spec, 96, random.Random(12))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("colour", COLOURS)
def test_an_object_is_drawn_in_its_colour_on_the_background_colour(colour):
    spec = one_object(colour)
    image, placed = synthetic.render_scene_with_boxes(spec, size=128)
    cx, cy = placed[0].centre

    assert image.getpixel((int(cx), int(cy))) == pytest.approx(synthetic.COLOURS[colour], abs=2)
    assert image.getpixel((2, 2)) == pytest.approx(
        synthetic.BACKGROUND_COLOURS["light grey"], abs=2
    )
    assert (int(cx), int(cy)) == (64, 64)  # a canonical "centre" object sits in the middle


@pytest.mark.parametrize("colour, shape", itertools.product(COLOURS, SHAPES))
def test_a_jittered_rotated_object_still_shows_its_colour_at_its_centre(colour, shape):
    spec = SceneSpec((ObjectSpec(colour, shape, "small", "left"),), "noisy", "slate")
    image, placed = synthetic.render_scene_with_boxes(spec, 96, random.Random(hash(shape) % 97))
    cx, cy = placed[0].centre
    assert abs(placed[0].angle_deg) <= 15
    assert image.getpixel((int(cx), int(cy))) == pytest.approx(synthetic.COLOURS[colour], abs=2)


def test_the_five_shapes_are_visibly_different():
    for size in (64, 128):
        masks = {}
        for shape in SHAPES:
            image = synthetic.render_scene(one_object("black", shape), size)
            masks[shape] = object_mask(image, synthetic.BACKGROUND_COLOURS["light grey"])
        for a, b in itertools.combinations(SHAPES, 2):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, f"{a} and {b} overlap with IoU {iou:.2f} at {size} px"


def test_large_objects_are_clearly_bigger_than_small_ones():
    background = synthetic.BACKGROUND_COLOURS["light grey"]
    for shape in SHAPES:
        large = object_mask(
            synthetic.render_scene(one_object("blue", shape, "large"), 128), background
        )
        small = object_mask(
            synthetic.render_scene(one_object("blue", shape, "small"), 128), background
        )
        assert large.sum() > 2.5 * small.sum(), shape


def test_objects_in_one_picture_keep_apart_and_stay_inside_it():
    rng = random.Random(5)
    for _ in range(150):
        spec = synthetic.sample_scene(rng, max_objects=5, min_objects=2)
        size = 96
        image, placed = synthetic.render_scene_with_boxes(spec, size, rng)
        for obj in placed:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 and 0 <= y0 and x1 <= size and y1 <= size, obj
            (cx, cy), r = obj.centre, obj.radius + 1e-6
            assert cx - r <= x0 and x1 <= cx + r and cy - r <= y0 and y1 <= cy + r, obj
            pixel = image.getpixel((int(obj.centre[0]), int(obj.centre[1])))
            assert pixel == pytest.approx(synthetic.COLOURS[obj.object.colour], abs=2)
        for a, b in itertools.combinations(placed, 2):
            distance = np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1])
            assert distance >= a.radius + b.radius, (a, b)


def test_backgrounds_never_resemble_an_object_colour():
    rng = random.Random(9)
    seen = set()
    for _ in range(60):
        spec = synthetic.sample_scene(rng)
        seen.add(spec.background)
        image, placed = synthetic.render_scene_with_boxes(spec, 64, rng)
        uncovered = np.ones((64, 64), dtype=bool)
        for obj in placed:
            x0, y0, x1, y1 = obj.box
            uncovered[max(int(y0) - 1, 0) : int(y1) + 2, max(int(x0) - 1, 0) : int(x1) + 2] = False
        background = np.asarray(image, dtype=np.float32)[uncovered]
        for rgb in synthetic.COLOURS.values():
            distance = np.linalg.norm(background - np.array(rgb), axis=-1)
            assert distance.min() > 45, (spec, rgb)
    assert seen == {"plain", "striped", "gradient", "noisy"}


def test_every_caption_is_true_of_its_picture():
    rng = random.Random(0)
    words_seen, twins = set(), 0
    for _ in range(250):
        spec = synthetic.sample_scene(rng)
        caption = synthetic.caption_scene(spec, rng)
        assert caption in synthetic.all_caption_variants(spec)
        assert_caption_true(caption, spec)
        words_seen.update(caption.split())
        groups, _ = parse_caption(caption)
        twins += any(g["count"] > 1 and g["colour"] and g["shape"] for g in groups)
    # The check above only means something if grouping, sizes, positions and backgrounds occur.
    assert {"two", "small", "large", "left", "centre", "striped", "noisy"} <= words_seen
    assert twins >= 10, "scenes rarely repeat a colour and shape, so 'two blue squares' is rare"


def test_all_variants_of_a_crowded_scene_are_true():
    spec = SceneSpec(
        (
            ObjectSpec("blue", "square", "small", "left"),
            ObjectSpec("blue", "square", "small", "top"),
            ObjectSpec("orange", "square", "large", "right"),
        ),
        "striped",
        "beige",
    )
    variants = synthetic.all_caption_variants(spec)
    for caption in variants:
        assert_caption_true(caption, spec)
    assert "two small blue squares and a large orange square on a striped background" in variants
    assert "three squares" in variants
    assert "a photo of two blue shapes and an orange shape on the right" in variants
    assert not any("two large" in v or "three small" in v for v in variants)


def test_a_long_caption_is_redrawn_to_fit_the_text_tower():
    pairs = list(synthetic.iter_pairs(seed=1, n=80, size=32, max_objects=3, max_words=10))
    for _, caption, spec in pairs:
        assert len(caption.split()) <= 10, caption
        assert_caption_true(caption, spec)


def test_zero_shot_prompts_follow_class_order_and_appear_as_training_captions():
    labels = synthetic.zero_shot_labels()
    assert synthetic.list_colours() == list(COLOURS)
    assert labels["colour"][:2] == ["a red shape", "a green shape"]
    assert labels["colour"][4] == "an orange shape"
    assert labels["shape"] == ["a circle", "a square", "a triangle", "a star", "a heart"]
    for colour, prompt in zip(COLOURS, labels["colour"], strict=True):
        assert prompt in synthetic.all_caption_variants(one_object(colour, "star"))


def test_an_evaluation_scene_keeps_its_other_attributes_when_one_is_fixed():
    free = synthetic.single_object_scene(random.Random(4))
    fixed = synthetic.single_object_scene(random.Random(4), colour="white", shape="heart")
    assert (fixed.objects[0].colour, fixed.objects[0].shape) == ("white", "heart")
    assert fixed.objects[0].size == free.objects[0].size
    assert fixed.objects[0].position == free.objects[0].position
    assert fixed.background == free.background


def test_unknown_attributes_are_refused_by_name():
    with pytest.raises(ValueError, match="center"):
        ObjectSpec("red", "circle", "large", "center")  # the world spells it "centre"
    with pytest.raises(ValueError, match="pink"):
        ObjectSpec("pink", "circle", "large", "centre")
    with pytest.raises(ValueError, match="distinct positions"):
        SceneSpec((ObjectSpec("red", "circle", "large", "top"),) * 2)
    with pytest.raises(ValueError, match="max_objects"):
        synthetic.sample_scene(random.Random(0), max_objects=6)


def test_sentencepiece_model_is_laid_out_like_siglips(tmp_path):
    corpus = synthetic.caption_corpus(seed=0, n=1500)
    path = synthetic.train_sentencepiece(corpus, tmp_path / "spiece.model")
    again = synthetic.train_sentencepiece(corpus, tmp_path / "again.model")
    sp = spm.SentencePieceProcessor(model_file=str(path))

    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert path.read_bytes() == again.read_bytes()
    used_words = {w for c in corpus for w in synthetic.canonicalise_caption(c).split()}
    split_words = [w for w in used_words if len(sp.encode(w)) != 1]
    assert not split_words, f"words split into several pieces: {split_words}"

    caption = synthetic.canonicalise_caption("A photo of  two Small blue squares, on the LEFT!")
    assert caption == "a photo of two small blue squares on the left"
    ids = sp.encode(caption)
    assert 2 not in ids and len(ids) == len(caption.split())
    assert sp.decode(ids) == caption


def test_a_sample_set_on_disk_lists_every_image_with_its_caption(tmp_path):
    captions_path = synthetic.write_sample_set(tmp_path / "set", seed=3, n=5, size=48, fmt="jpg")
    records = [json.loads(line) for line in captions_path.read_text().splitlines()]

    assert len(records) == 5
    assert sorted(p.name for p in (tmp_path / "set").glob("*.jpg")) == [r["file"] for r in records]
    for record in records:
        assert re.fullmatch(r"\d{4}_[a-z-_]+\.jpg", record["file"])
        with Image.open(tmp_path / "set" / record["file"]) as image:
            assert image.size == (48, 48) and image.format == "JPEG"
        spec = SceneSpec(
            tuple(ObjectSpec(**o) for o in record["objects"]), record["background"], "grey"
        )
        assert_caption_true(record["caption"], spec)
        assert (
            record["file"]
            .split("_", 1)[1]
            .startswith(f"{record['objects'][0]['colour']}-{record['objects'][0]['shape']}")
        )
    with pytest.raises(ValueError, match="fmt"):
        synthetic.write_sample_set(tmp_path / "bad", seed=3, n=1, fmt="gif")
