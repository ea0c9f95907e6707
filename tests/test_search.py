"""Searching a library: what a user typing queries sees, from Python and from the command line."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import draw_photo, make_photo_folder
from search_fixtures import (
    DEMO_COLOURS,
    CountingEmbedder,
    index_folder,
    make_dated_folders,
    needs_demo,
    sample_colours,
)

import indexer.search as search_module
from indexer.errors import QueryError, SearchOptionError
from indexer.query import QueryTerm, file_terms, parse_query
from indexer.search import Searcher
from siglip_search.cli import main


@pytest.fixture
def photos(tmp_path, library, embedder):
    """A tiny-model library over photos in year folders, most with an EXIF date."""
    files = make_dated_folders(tmp_path / "photos")
    index_folder(library, tmp_path / "photos", embedder)
    return files


# --- meaning, on the demo model -------------------------------------------------------------


@needs_demo
@pytest.mark.parametrize("colour", DEMO_COLOURS)
def test_a_colour_query_returns_sample_photos_of_that_colour_first(
    demo_library, demo_embedder, colour
):
    colours = sample_colours()
    holding = sum(colour in c for c in colours.values())
    k = min(5, holding)
    page = Searcher(demo_library, demo_embedder).search(f"a {colour} shape", k=k)
    names = [h.path.name for h in page.hits]
    assert all(colour in colours[n] for n in names), (colour, [(n, colours[n]) for n in names])
    assert page.total_candidates == len(colours)
    assert all(
        0.0 < h.score < 1.0 and h.score == pytest.approx(float(demo_embedder.probability(h.cosine)))
        for h in page.hits
    )


@needs_demo
def test_adding_and_subtracting_terms_moves_the_results(demo_library, demo_embedder):
    colours = sample_colours()
    searcher = Searcher(demo_library, demo_embedder)

    def blue_in_top(query: str) -> int:
        return sum("blue" in colours[h.path.name] for h in searcher.search(query, k=10).hits)

    plain = blue_in_top('"a red shape"')
    assert blue_in_top('"a red shape" + 2:"a blue shape"') > plain
    assert blue_in_top('"a red shape" - "a blue shape"') <= plain
    red_first = searcher.search('"a red shape" - "a blue shape"', k=3).hits
    assert all("red" in colours[h.path.name] for h in red_first)


# --- queries and vectors (tiny model) --------------------------------------------------------


def test_an_indexed_photo_as_query_finds_itself_first_scored_by_cosine_not_probability(
    photos, library, embedder
):
    """A picture query has no SigLIP probability (the sigmoid answers image-text pairs): its hits
    are scored by their cosine, and say so, so the self-match is 1.0 and the rest fall below it."""
    searcher = Searcher(library, embedder)
    for rel in ("2021/summer/beach.jpg", "undated/scan_1.png"):
        page = searcher.search_image(photos[rel], k=3)
        first = page.hits[0]
        assert first.rel_path == rel and first.path == photos[rel].resolve()
        assert first.cosine == pytest.approx(1.0, abs=1e-4)
        assert page.score_kind == "cosine" and all(h.score_kind == "cosine" for h in page.hits)
        assert [h.score for h in page.hits] == [h.cosine for h in page.hits]
        assert page.hits[-1].score < first.score
    from PIL import Image

    with Image.open(photos["undated/scan_1.png"]) as im:
        assert (
            searcher.search_image(im.convert("RGB"), k=1).hits[0].rel_path == "undated/scan_1.png"
        )


def test_uppercase_and_lowercase_queries_give_the_same_results(photos, library, embedder):
    searcher = Searcher(library, embedder)
    lower, upper = (
        searcher.search("a red circle on the beach", k=10),
        searcher.search("A RED Circle ON the BEACH!", k=10),
    )
    assert [h.id for h in upper.hits] == [h.id for h in lower.hits]
    assert [h.cosine for h in upper.hits] == pytest.approx([h.cosine for h in lower.hits], abs=1e-6)


def test_a_repeated_query_costs_only_the_vector_search(photos, library, embedder):
    counting = CountingEmbedder(embedder)
    searcher = Searcher(library, counting, cache_size=2)
    first = searcher.search("sunset at the beach", k=5)
    again = searcher.search("sunset at the beach", k=5, offset=1)
    assert counting.text_calls == 1
    assert [h.id for h in again.hits[:4]] == [h.id for h in first.hits[1:]]
    searcher.search("a dog", k=5)
    searcher.search("a cat", k=5)  # the cache holds 2: "sunset at the beach" is evicted
    searcher.search("sunset at the beach", k=5)
    assert counting.text_calls == 4


def test_combined_query_is_the_normalised_weighted_sum_of_its_terms(photos, library, embedder):
    searcher = Searcher(library, embedder)
    beach_id = next(h.id for h in searcher.search_image(photos["2021/summer/beach.jpg"], k=1).hits)
    vector = searcher.query_vector(
        f'"a beach" + 0.5 {photos["2019/summer.jpg"]} - 2:people + #{beach_id}'
    )
    expected = (
        embedder.embed_texts(["a beach"])[0]
        + 0.5 * searcher.embed_image(photos["2019/summer.jpg"])
        - 2 * embedder.embed_texts(["people"])[0]
        + searcher.stored_embedding(beach_id)
    )
    assert vector == pytest.approx(expected / np.linalg.norm(expected), abs=1e-5)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_the_query_language(tmp_path):
    ref = tmp_path / "ref.jpg"
    draw_photo(1).save(ref)
    terms = parse_query('"beach" + 0.5 ./ref.jpg - "people"', base_dir=tmp_path)
    assert terms == [
        QueryTerm("text", "beach", 1.0),
        QueryTerm("image", ref.resolve(), 0.5),
        QueryTerm("text", "people", -1.0),
    ]
    assert parse_query("beach sunset") == [QueryTerm("text", "beach sunset", 1.0)]
    assert parse_query('2:cat - dog + 3:"big cat" + #12') == [
        QueryTerm("text", "cat", 2.0),
        QueryTerm("text", "dog", -1.0),
        QueryTerm("text", "big cat", 3.0),
        QueryTerm("image_id", 12, 1.0),
    ]
    # a number in words
    assert parse_query("2 dogs on a sofa") == [QueryTerm("text", "2 dogs on a sofa", 1.0)]
    assert parse_query("black-and-white photo") == [QueryTerm("text", "black-and-white photo", 1.0)]
    # ratios and times are words, not weights
    for text in ("16:9 screen", "a clock at 10:30", "3:4 portrait"):
        assert parse_query(text) == [QueryTerm("text", text, 1.0)]
    assert parse_query("0.5:cat + 2:dog") == [
        QueryTerm("text", "cat", 0.5),
        QueryTerm("text", "dog", 2.0),
    ]
    # apostrophes are text
    for text in ("rock 'n' roll", "fashion of the '80s", "grandma's garden"):
        assert parse_query(text) == [QueryTerm("text", text, 1.0)]
    assert file_terms('"x.jpg" + ./ref.jpg + #3 + dog') == ["./ref.jpg"]
    cases = {
        "": "empty",
        "   ": "empty",
        "beach +": "ends with an operator",
        "beach + - sea": "two operators",
        '"beach': "unterminated quote",
        "2: + sea": "no term after it",
        '""': "empty quoted",
        "- beach": "positive weight",
        "./missing.jpg": "does not exist",
        "0:cat": "positive number",
    }
    for query, message in cases.items():
        with pytest.raises(QueryError, match=message):
            parse_query(query, base_dir=tmp_path)


def test_query_errors_a_user_can_fix(photos, library, embedder, tmp_path):
    searcher = Searcher(library, embedder)
    with pytest.raises(QueryError, match="cancel"):
        searcher.search('"sea" - "sea"')
    with pytest.raises(QueryError, match="no indexed image has id 9999"):
        searcher.more_like_this(9999)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with pytest.raises(QueryError, match="not an image"):
        searcher.search_image(notes)
    with pytest.raises(QueryError, match=r"cannot use .*typo\.jpg as a query image: no such file$"):
        searcher.search_image(tmp_path / "typo.jpg")
    for bad in (
        {"k": 0},
        {"offset": -1},
        {"min_score": 1.5},
        {"sort": "name"},
        {"date_from": "last week"},
    ):
        with pytest.raises(SearchOptionError):
            searcher.search("sea", **bad)


# --- filters, paging, sorting ----------------------------------------------------------------


def test_folder_filters_accept_root_relative_absolute_and_working_directory_paths(
    photos, library, embedder, tmp_path, monkeypatch
):
    searcher = Searcher(library, embedder)
    in_2021 = {
        "2021/spring.jpg",
        "2021/summer/beach.jpg",
        "2021/summer/late.jpg",
        "2021/autumn.jpg",
    }
    assert {h.rel_path for h in searcher.search("photo", folder="2021").hits} == in_2021
    assert {
        h.rel_path
        for h in searcher.search("photo", folder=tmp_path / "photos" / "2021" / "summer").hits
    } == {"2021/summer/beach.jpg", "2021/summer/late.jpg"}
    monkeypatch.chdir(tmp_path / "photos" / "2021")
    assert {h.rel_path for h in searcher.search("photo", folder="summer").hits} == {
        "2021/summer/beach.jpg",
        "2021/summer/late.jpg",
    }
    assert len(searcher.search("photo", folder=tmp_path / "photos").hits) == len(photos)
    page = searcher.search("photo", folder="2019", k=1)
    assert page.total_candidates == 2 and len(page.hits) == 1 and page.has_more
    for outside in (tmp_path, "/", "nowhere/at/all"):
        with pytest.raises(SearchOptionError, match="not under a registered root"):
            searcher.search("photo", folder=outside)


def test_date_filters_are_inclusive_and_sorting_by_date_puts_undated_photos_last(
    photos, library, embedder
):
    searcher = Searcher(library, embedder)

    def found(**options) -> set[str]:
        return {h.rel_path for h in searcher.search("photo", **options).hits}

    assert found(date_from="2021-07-14", date_to="2021-07-14") == {
        "2021/summer/beach.jpg",
        "2021/summer/late.jpg",
    }
    assert found(date_from="2021") == {
        "2021/spring.jpg",
        "2021/summer/beach.jpg",
        "2021/summer/late.jpg",
        "2021/autumn.jpg",
        "2023/winter.jpg",
    }
    assert found(date_to="2019-06") == {"2019/new-year.jpg"}
    assert found(date_from="2021-07", date_to="2021-10", folder="2021/summer") == {
        "2021/summer/beach.jpg",
        "2021/summer/late.jpg",
    }
    with pytest.raises(SearchOptionError, match="empty"):
        found(date_from="2022", date_to="2021")
    by_date = [h.rel_path for h in searcher.search("photo", sort="date").hits]
    assert by_date[:7] == [
        "2023/winter.jpg",
        "2021/autumn.jpg",
        "2021/summer/late.jpg",
        "2021/summer/beach.jpg",
        "2021/spring.jpg",
        "2019/summer.jpg",
        "2019/new-year.jpg",
    ]
    assert sorted(by_date[7:]) == ["undated/scan_0.png", "undated/scan_1.png", "undated/scan_2.png"]
    hit = searcher.search("photo", folder="2021/summer", sort="date", k=1).hits[0]
    assert (hit.taken_at, hit.width, hit.height) == ("2021-07-14T23:59:59", 160, 120)


def test_pages_do_not_overlap_and_together_are_the_top_n(tmp_path, library, embedder):
    make_photo_folder(tmp_path / "photos", n=23)
    index_folder(library, tmp_path / "photos", embedder)
    searcher = Searcher(library, embedder)
    for sort in ("score", "date"):
        top = searcher.search("a bowl of fruit", k=20, sort=sort)
        pages = [
            searcher.search("a bowl of fruit", k=6, offset=o, sort=sort) for o in (0, 6, 12, 18)
        ]
        ids = [h.id for p in pages for h in p.hits]
        assert len(ids) == len(set(ids)) == 23
        assert ids[:20] == [h.id for h in top.hits]
        assert [p.has_more for p in pages] == [True, True, True, False]
    best = searcher.search("a bowl of fruit", k=23).hits
    floor = best[4].score
    above = searcher.search("a bowl of fruit", k=23, min_score=floor).hits
    assert [h.id for h in above] == [h.id for h in best if h.score >= floor] and len(above) >= 5


def test_date_sorted_pages_never_repeat_or_skip_a_photo_of_the_pool(
    photos, library, embedder, monkeypatch
):
    """sort="date" orders a fixed pool of the best matches (1000; 6 here, in a library of 10):
    paging through it shows each of them once, and the pool's end is the last page."""
    monkeypatch.setattr(search_module, "DATE_SORT_POOL", 6)
    searcher = Searcher(library, embedder)
    best = {h.id for h in searcher.search("photo", k=6).hits}
    pages = [searcher.search("photo", k=2, offset=o, sort="date") for o in range(0, 10, 2)]
    ids = [h.id for p in pages for h in p.hits]
    assert len(ids) == len(set(ids)) == 6 and set(ids) == best
    assert ids == [h.id for h in searcher.search("photo", k=6, sort="date").hits]
    assert [p.has_more for p in pages] == [True, True, False, False, False]
    in_2021 = [
        h.id
        for o in range(4)
        for h in searcher.search("photo", k=1, offset=o, sort="date", folder="2021").hits
    ]
    assert len(in_2021) == len(set(in_2021)) == 4  # with a filter too (4 photos fit the pool)
    monkeypatch.setattr(search_module, "DATE_SORT_POOL", 3)
    in_2021 = [
        h.id
        for o in range(4)
        for h in searcher.search("photo", k=1, offset=o, sort="date", folder="2021").hits
    ]
    assert len(in_2021) == len(set(in_2021)) == 3


def test_the_last_year_of_the_calendar_is_a_valid_upper_bound(photos, library, embedder, capsys):
    searcher = Searcher(library, embedder)
    dated = {rel for rel in photos if not rel.startswith("undated/")}
    for bound in ("9999", "9999-12", "9999-12-31", "9999-12-31T23:59:59", date(9999, 12, 31)):
        assert {h.rel_path for h in searcher.search("photo", date_to=bound).hits} == dated, bound
    assert main(["search", "photo", "--library", str(library.path), "--to", "9999-12-31"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(dated)


def test_numpy_integers_are_accepted_for_k_and_offset(photos, library, embedder):
    page = Searcher(library, embedder).search("photo", k=np.int64(3), offset=np.int32(1))
    assert len(page.hits) == 3 and page.offset == 1


def test_a_narrow_filter_still_returns_k_hits(tmp_path, library, embedder):
    """Most images are filtered out: the search goes deeper instead of returning a short page."""
    photos = tmp_path / "photos"
    make_photo_folder(photos / "many", n=40)
    for i in range(6):
        (photos / "few").mkdir(parents=True, exist_ok=True)
        draw_photo(900 + i).save(photos / "few" / f"{i}.png")
    index_folder(library, photos, embedder)
    searcher = Searcher(library, embedder)
    query = searcher.embed_image(photos / "many" / "city.webp")  # far from most "few" photos
    page = searcher.search_vector(query, folder="few", k=5)
    assert len(page.hits) == 5 and all(h.rel_path.startswith("few/") for h in page.hits)
    assert page.total_candidates == 6


def test_more_like_this_leaves_the_photo_itself_out(photos, library, embedder):
    searcher = Searcher(library, embedder)
    source = searcher.search_image(photos["2019/summer.jpg"], k=1).hits[0]
    similar = searcher.more_like_this(source.id, k=50)
    assert source.id not in [h.id for h in similar.hits] and len(similar.hits) == len(photos) - 1
    assert similar.score_kind == "cosine" and similar.hits[0].score == similar.hits[0].cosine


def test_each_query_says_which_kind_of_score_its_hits_have(photos, library, embedder):
    """Text (also text minus text): SigLIP probabilities; a picture anywhere in it: cosines, and
    min_score then cuts on the cosine."""
    searcher = Searcher(library, embedder)
    text = searcher.search('"a beach" - "a city"', k=3)
    assert text.score_kind == "probability"
    assert all(h.score == pytest.approx(float(embedder.probability(h.cosine))) for h in text.hits)
    mixed = searcher.search(f'"a beach" + {photos["2019/summer.jpg"]}', k=20)
    assert mixed.score_kind == "cosine" and all(h.score == h.cosine for h in mixed.hits)
    floor = mixed.hits[3].cosine
    cut = searcher.search(f'"a beach" + {photos["2019/summer.jpg"]}', k=20, min_score=floor)
    assert [h.id for h in cut.hits] == [h.id for h in mixed.hits if h.cosine >= floor]


# --- command line ----------------------------------------------------------------------------


def test_cli_search_prints_paths_and_scores_or_json(photos, library, embedder, capsys, tmp_path):
    lib = ["--library", str(library.path)]
    assert main(["search", "a sunny beach", *lib, "-k", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and "scores are SigLIP probabilities" in err
    for line in lines:
        path, score = line.split("\t")
        assert os.path.isfile(path) and 0.0 < float(score) < 1.0
    assert main(["search", "a sunny beach", *lib, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in hits] == [line.split("\t")[0] for line in lines]
    assert set(hits[0]) == {
        "path",
        "score",
        "score_kind",
        "cosine",
        "id",
        "taken_at",
        "camera",
        "lens",
        "gps",
    }
    assert hits[0]["score_kind"] == "probability"
    assert hits[0]["score"] == pytest.approx(float(embedder.probability(hits[0]["cosine"])))
    # each printed score reads back as the probability, to the digits shown
    for line, hit in zip(lines, hits, strict=True):
        assert float(line.split("\t")[1]) == pytest.approx(hit["score"], rel=1e-3)
    assert main(["search", "--image", str(photos["2021/autumn.jpg"]), *lib, "-k", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.split("\t")[0] == str(photos["2021/autumn.jpg"].resolve())
    assert "cosine similarities" in err and float(out.splitlines()[1].split("\t")[1]) < 1
    assert main(["search", "--image", str(photos["2021/autumn.jpg"]), *lib, "--json"]) == 0
    assert {h["score_kind"] for h in json.loads(capsys.readouterr().out)} == {"cosine"}
    assert (
        main(
            [
                "search",
                "photo",
                *lib,
                "--folder",
                "2021/summer",
                "--from",
                "2021-07-14",
                "--to",
                "2021-07-14",
                "--sort",
                "date",
                "--json",
            ]
        )
        == 0
    )
    assert [Path(h["path"]).name for h in json.loads(capsys.readouterr().out)] == [
        "late.jpg",
        "beach.jpg",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "sea", "--folder", "/elsewhere"], "not under a registered root"),
        (["search", "sea + "], "ends with an operator"),
        (["search"], "give a query text"),
        (["search", "--image", "missing.jpg"], "does not exist"),
        (["search", "sea", "--from", "yesterday"], "cannot read date"),
    ],
)
def test_cli_search_errors_are_one_line_and_exit_2(photos, library, capsys, argv, message):
    assert main([*argv, "--library", str(library.path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_search_of_a_missing_library_exits_2(tmp_path, capsys):
    assert main(["search", "sea", "--library", str(tmp_path / "none")]) == 2
    assert "no library at" in capsys.readouterr().err


def test_a_searcher_opens_a_library_from_its_path_and_loads_its_recorded_model(
    photos, library, embedder, tmp_path
):
    expected = Searcher(library, embedder).search("a photo", k=5)
    with Searcher(str(library.path)) as searcher:  # as the docs show it
        page = searcher.search("a photo", k=5)
        assert searcher.embedder.identity() == embedder.identity()
    assert [h.rel_path for h in page.hits] == [h.rel_path for h in expected.hits]
    assert [h.cosine for h in page.hits] == pytest.approx(
        [h.cosine for h in expected.hits], abs=1e-5
    )


def test_a_searcher_refuses_what_is_not_a_library_when_it_is_made(tmp_path):
    from indexer.errors import LibraryNotFoundError

    with pytest.raises(LibraryNotFoundError, match="no library at"):
        Searcher(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # nothing created
    with pytest.raises(SearchOptionError, match="open_library"):
        Searcher({"library": "x"})  # type: ignore[arg-type]
