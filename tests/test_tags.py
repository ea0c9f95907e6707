"""Zero-shot tagging of a library: the tags a user gets, when they change, what a vocabulary may say."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from indexer_fixtures import draw_photo
from search_fixtures import DEMO_COLOURS, CountingEmbedder, index_folder, needs_demo

from indexer import tags
from indexer.errors import VocabularyError
from indexer.tags import DEFAULT_TEMPLATES, tag_image, tag_library, tag_prompts
from indexer.vocabulary import (
    DEFAULT_VOCABULARY_PATH,
    Vocabulary,
    VocabularyTag,
    load_vocabulary,
    parse_vocabulary,
)
from siglip_search import pipeline
from siglip_search.cli import main
from siglip_search.training import synthetic

LABELS = ["a dog", "a cat", "the beach", "a red circle", "mountains"]
TEMPLATE = "This is a photo of {}."


def plain(labels: list[str]) -> Vocabulary:
    return Vocabulary(tuple(VocabularyTag(label, (label,)) for label in labels))


def stored_tags(library) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for record in library.store.iter_tags():
        found.setdefault(os.path.basename(record.path), {})[record.tag] = record.score
    return found


# --- agreement with the reference pipeline ---------------------------------------------------


def test_the_pipeline_and_library_tagging_give_the_same_probabilities(
    tmp_path, library, embedder, tiny_checkpoint
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        draw_photo(seed, (90, 70)).save(photos / f"photo_{seed}.png")
    index_folder(library, photos, embedder)
    classify = pipeline("zero-shot-image-classification", model=tiny_checkpoint)
    summary = tag_library(
        library, embedder, plain(LABELS), threshold=1e-9, cap=len(LABELS), templates=(TEMPLATE,)
    )
    assert summary.tagged == 3 and summary.tags_written == 3 * len(LABELS)
    stored = stored_tags(library)
    for seed in range(3):
        path = photos / f"photo_{seed}.png"
        reference = {
            r["label"]: r["score"]
            for r in classify(str(path), candidate_labels=LABELS, hypothesis_template=TEMPLATE)
        }
        one = {t.tag: t.score for t in tag_image(embedder, path, LABELS, template=TEMPLATE)}
        assert one == pytest.approx(reference, abs=1e-5)
        assert stored[path.name] == pytest.approx(reference, abs=1e-5)
    probabilities = list(reference.values())
    # labels differ: the comparison means something
    assert max(probabilities) - min(probabilities) > 1e-3
    assert abs(sum(probabilities) - 1.0) > 1e-3 or len(probabilities) == 1  # sigmoid, not softmax


def test_a_prompt_ensemble_is_the_renormalised_mean_of_its_prompts(embedder):
    tag = VocabularyTag("animal|dog", ("dog", "puppy"), ("a dog on the beach",))
    prompts = tag_prompts(tag)
    assert prompts == [t.format(w) for w in ("dog", "puppy") for t in DEFAULT_TEMPLATES] + [
        "a dog on the beach"
    ]
    vector = tags.embed_prompt_ensembles(embedder, [prompts])[0]
    mean = embedder.embed_texts(prompts).mean(axis=0)
    assert vector == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)


# --- meaning, on the demo model --------------------------------------------------------------


@needs_demo
def test_tagging_writes_the_colour_of_known_pictures(tmp_path, demo_embedder, database_url):
    """The demo model knows its world's colours (its shapes barely): each picture of one large shape
    gets exactly its own colour tag. Its probabilities are low (true colours >= 0.04, others
    <= 0.004 when measured), so the tags of its world are kept from 0.02 up."""
    from indexer.library import open_library

    photos = tmp_path / "photos"
    photos.mkdir()
    truth = {}
    for i, colour in enumerate(DEMO_COLOURS):
        shape = synthetic.SHAPES[i % len(synthetic.SHAPES)]
        background = "slate" if colour == "white" else "light grey"
        spec = synthetic.SceneSpec(
            (synthetic.ObjectSpec(colour, shape, "large", "centre"),), "noisy", background
        )
        synthetic.render_scene(spec, 224, random.Random(i)).save(photos / f"{colour}-{shape}.png")
        truth[f"{colour}-{shape}.png"] = f"colour|{colour}"
    bundled = load_vocabulary()
    words = {*DEMO_COLOURS, *synthetic.SHAPES}
    demo_world = Vocabulary(
        tuple(
            t
            for t in bundled.tags
            if t.name.split("|")[0] in ("colour", "shape") and t.leaf in words
        )
    )
    assert len(demo_world) == 13
    library = open_library(tmp_path / "library", database=database_url)
    try:
        index_folder(library, photos, demo_embedder)
        summary = tag_library(library, demo_embedder, demo_world, threshold=0.02, progress=False)
        assert summary.tagged == len(truth)
        stored = stored_tags(library)
    finally:
        library.close()
    for name, colour_tag in truth.items():
        found = stored.get(name, {})
        assert {t for t in found if t.startswith("colour|")} == {colour_tag}, (name, found)
        assert found[colour_tag] >= 0.02 and len(found) <= tags.DEFAULT_CAP


# --- incremental tagging ---------------------------------------------------------------------


def test_tagging_is_incremental_and_redone_after_a_vocabulary_or_photo_change(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(5):
        draw_photo(seed).save(photos / f"p{seed}.png")
    index_folder(library, photos, embedder)
    vocabulary = plain(LABELS)
    first = tag_library(library, embedder, vocabulary, threshold=1e-6, cap=3)
    assert (first.tagged, first.unchanged, first.retagged_all) == (5, 0, True)
    assert first.tags_written == 15 and all(len(t) == 3 for t in stored_tags(library).values())
    rows = sorted(
        (r.path, r.tag, r.score, r.model, r.vocabulary_version, r.source)
        for r in library.store.iter_tags()
    )
    assert {r[3:] for r in rows} == {(embedder.model_id, vocabulary.version, "zero-shot")}

    again = tag_library(library, embedder, vocabulary, threshold=1e-6, cap=3)
    assert (again.tagged, again.unchanged, again.tags_written) == (0, 5, 0)
    assert (
        sorted(
            (r.path, r.tag, r.score, r.model, r.vocabulary_version, r.source)
            for r in library.store.iter_tags()
        )
        == rows
    )

    draw_photo(77).save(photos / "p1.png")  # edited photo
    draw_photo(78).save(photos / "new.png")
    index_folder(library, photos, embedder)
    changed = tag_library(library, embedder, vocabulary, threshold=1e-6, cap=3)
    assert (changed.tagged, changed.unchanged, changed.retagged_all) == (2, 4, False)

    bigger = plain([*LABELS, "a bicycle"])
    assert bigger.version != vocabulary.version
    redone = tag_library(library, embedder, bigger, threshold=1e-6, cap=3)
    assert (redone.tagged, redone.retagged_all) == (6, True)
    assert {r.vocabulary_version for r in library.store.iter_tags()} == {bigger.version}
    # new threshold: all again
    assert tag_library(library, embedder, bigger, threshold=2e-6, cap=3).tagged == 6
    strict = tag_library(library, embedder, bigger, threshold=0.999, cap=3)
    # old tags are replaced, not kept
    assert strict.tags_written == 0 and stored_tags(library) == {}


def test_a_tags_own_threshold_and_the_cap_decide_what_is_kept(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_photo(3).save(photos / "p.png")
    index_folder(library, photos, embedder)
    scores = {
        t.tag: t.score for t in tag_image(embedder, photos / "p.png", LABELS, DEFAULT_TEMPLATES)
    }
    ranked = sorted(scores, key=scores.get, reverse=True)
    picky = Vocabulary(
        tuple(VocabularyTag(lb, (lb,), (), 0.999 if lb == ranked[0] else None) for lb in LABELS)
    )
    tag_library(library, embedder, picky, threshold=0.001, cap=2)
    assert set(stored_tags(library)["p.png"]) == set(ranked[1:3])


def test_one_label_given_as_a_string_is_scored_as_one_label(tmp_path, embedder):
    draw_photo(3).save(tmp_path / "p.png")
    one = tag_image(embedder, tmp_path / "p.png", "a cat")
    assert [t.tag for t in one] == ["a cat"]
    assert one[0].score == pytest.approx(
        tag_image(embedder, tmp_path / "p.png", ["a cat"])[0].score
    )


def test_vocabulary_embeddings_are_computed_once_and_kept_in_the_library(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_photo(1).save(photos / "p.png")
    index_folder(library, photos, embedder)
    vocabulary = parse_vocabulary("animal|dog = puppy\nanimal|cat\nscene|beach @ 0.2\n")
    counting = CountingEmbedder(embedder)
    tags._MEMORY_CACHE.clear()
    tag_library(library, counting, vocabulary, threshold=0.01)
    assert (
        counting.texts
        == sum(len(tag_prompts(t)) for t in vocabulary.tags)
        == 4 * len(DEFAULT_TEMPLATES)
    )
    spent = counting.texts
    tag_library(library, counting, vocabulary, threshold=0.02)  # from memory
    tags._MEMORY_CACHE.clear()  # as if a new process: from the library's database
    tag_library(library, counting, vocabulary, threshold=0.03)
    assert counting.texts == spent
    assert json.loads(library.store.get_meta(tags.TEXT_CACHE_META))["shape"] == [3, embedder.dim]


# --- vocabularies ------------------------------------------------------------------------------


def test_the_bundled_vocabulary_covers_photo_subjects_and_the_demo_world():
    vocabulary = load_vocabulary()
    names = vocabulary.names()
    assert 300 <= len(names) <= 1000 and len(set(names)) == len(names)
    assert {"animal|dog", "scene|beach", "event|birthday", "vehicle|bicycle"} <= set(names)
    assert {f"colour|{c}" for c in synthetic.COLOURS} | {
        f"shape|{s}" for s in synthetic.SHAPES
    } <= set(names)
    assert {n.split("|")[0] for n in names} >= {
        "animal",
        "scene",
        "event",
        "object",
        "food",
        "people",
        "colour",
        "shape",
    }
    assert all(n.count("|") == 1 for n in names)  # shallow: category|tag
    header = DEFAULT_VOCABULARY_PATH.read_text().split("\n\n")[0]
    assert (
        "RAM++" in header
        and "Apache-2.0" in header
        and "Open Images" in header
        and "CC BY 4.0" in header
    )
    readme = (DEFAULT_VOCABULARY_PATH.parent / "README.md").read_text()
    assert "RAM++" in readme and "Open Images" in readme and str(tags.DEFAULT_THRESHOLD) in readme


def test_the_vocabulary_format_plain_lists_and_versions():
    rich = parse_vocabulary(
        '# comment\n\nanimal|dog = puppy; "a photo of my dog" @ 0.3\nscene | beach\n  sunset  \n'
    )
    assert rich.tags == (
        VocabularyTag("animal|dog", ("dog", "puppy"), ("a photo of my dog",), 0.3),
        VocabularyTag("scene|beach", ("beach",)),
        VocabularyTag("sunset", ("sunset",)),
    )
    same = parse_vocabulary(
        'sunset\nscene|beach\n# reordered, recommented\nanimal|dog=puppy;"a photo of my dog"  @0.3'
    )
    assert same.version == rich.version
    assert parse_vocabulary("dog\nbeach").version != parse_vocabulary("dog\nbeach @ 0.4").version
    plain_list = parse_vocabulary("dog\ncat\nhot air balloon\n")
    assert plain_list.names() == ["dog", "cat", "hot air balloon"]
    # no spaces round '@'; invisible-only lines are blank
    glued = parse_vocabulary("dog@0.3\n\u200b\n \u200b \ncat\n")
    assert glued.tags == (VocabularyTag("dog", ("dog",), (), 0.3), VocabularyTag("cat", ("cat",)))
    assert parse_vocabulary('dog = "a dog @ home" @ 0.2').tags[0].prompts == ("a dog @ home",)


def test_a_vocabulary_saved_by_windows_notepad_reads_like_any_other(tmp_path):
    """UTF-8 with a byte order mark and CRLF line ends: the first line stays a comment, not a tag."""
    mine = tmp_path / "my-tags.txt"
    mine.write_bytes("# my tags\r\ncolour|yellow\r\ncaf\u00e9\r\n".encode("utf-8-sig"))
    assert load_vocabulary(mine).names() == ["colour|yellow", "caf\u00e9"]


def test_the_bundled_vocabulary_has_no_tag_exports_would_split():
    """Commas split keywords in exiftool and photo managers, so vocabularies refuse them in tag names."""
    names = load_vocabulary().names()
    assert len(names) == 368 and not any("," in name or "@" in name for name in names)


@pytest.mark.parametrize(
    "text, message",
    [
        ("dog\ndog\n", "line 2: tag 'dog' is already defined on line 1"),
        ("animal||dog", "line 1: tag 'animal||dog' has an empty level"),
        ("AC/DC", "may not contain '/'"),
        ("dog @ 1.5", "threshold 1.5 must be a probability"),
        ('dog = "a dog', "quoted text"),
        ("dog = puppy;; hound", "empty synonym"),
        ("# nothing\n", "has no tags"),
        ("dog @ 0.3 @ 0.4", "line 1: more than one '@ threshold'"),
        ("dog = pup @ 0.3 @ 0.4", "line 1: more than one '@ threshold'"),
        (
            "animal|Dog\ncat\nanimal|dog\n",
            "line 3: tag 'animal|dog' is already defined as 'animal|Dog' on line 1",
        ),
        ("dog\n= puppy; hound\n", "line 2: the tag name is missing"),
        ("dog\nmusic|rock, pop\n", "line 2: tag 'music|rock, pop' may not contain ','"),
        ("C@t", "line 1: threshold t must be a probability"),
    ],
)
def test_a_bad_vocabulary_line_is_named(text, message):
    with pytest.raises(VocabularyError, match=message.replace("(", r"\(").replace("|", r"\|")):
        parse_vocabulary(text, "my-tags.txt")


# --- command line ------------------------------------------------------------------------------


def test_cli_tag_with_a_user_vocabulary(tmp_path, library, embedder, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        draw_photo(seed).save(photos / f"p{seed}.png")
    index_folder(library, photos, embedder)
    mine = tmp_path / "mine.txt"
    mine.write_text("dog\ncat\nbeach\n")
    lib = ["--library", str(library.path), "--vocabulary", str(mine), "--no-progress"]
    assert main(["tag", *lib, "--threshold", "0.000001", "--cap", "2"]) == 0
    assert capsys.readouterr().out.startswith("tagged 3 photos (all photos), 0 unchanged, 6 tags")
    assert main(["tag", *lib, "--threshold", "0.000001", "--cap", "2"]) == 0
    assert capsys.readouterr().out.startswith("tagged 0 photos")
    assert main(["tag", *lib, "--threshold", "0.000001", "--cap", "2", "--all"]) == 0
    assert capsys.readouterr().out.startswith("tagged 3 photos (all photos)")
    mine.write_text("dog\ndog\n")
    assert main(["tag", *lib]) == 2
    assert "line 2" in capsys.readouterr().err
    assert (
        main(["tag", "--library", str(library.path), "--vocabulary", str(tmp_path / "none.txt")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
