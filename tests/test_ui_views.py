"""The web UI's pure parts, without a server: captions, details, form parsing, status, reports,
thumbnails, the server's security settings, and the layering rule (ui only talks to indexer)."""

from __future__ import annotations

import ast
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from layering import imported_roots
from PIL import Image

from indexer.export import ExportReport
from indexer.export.xmp import SidecarChange
from indexer.jobs import RunSummary
from indexer.search import Hit
from indexer.status import FailedFile, LibraryStatus, RootStatus, RunStatus
from indexer.store import PassedOver
from ui import views
from ui.options import parse_auth
from ui.thumbnails import PREVIEW_PX, THUMB_PX, Thumbnails
from ui.views import FormError, HitRecord

REPO = Path(__file__).resolve().parents[1]


def hit(i: int = 1, score: float = 0.42, rel: str = "2021/summer/beach.jpg", **kw) -> HitRecord:
    details = {"taken_at": None, "width": None, "height": None, "camera": None} | kw
    return HitRecord.from_hit(
        Hit(i, Path(f"/photos/{rel}"), rel, "/photos", 0.1234, score, **details)
    )


def test_probabilities_read_well_across_the_range_siglip_produces():
    assert views.format_probability(0.873) == "87%"
    assert views.format_probability(0.0312) == "3.1%"
    assert views.format_probability(0.00042) == "0.04%"
    assert views.format_probability(0.000001) == "<0.01%"
    assert views.format_probability(0.9999) == ">99%"
    assert views.format_probability(float("nan")) == "?"


def test_gallery_items_pair_each_thumbnail_with_probability_and_file_name():
    hits = [hit(1, 0.9, "a/red circle.jpg"), hit(2, 0.05, "b.png")]
    assert views.gallery_items(hits, ["/t/1.jpg", "/t/2.jpg"]) == [
        ("/t/1.jpg", "90% · red circle.jpg"),
        ("/t/2.jpg", "5.0% · b.png"),
    ]
    with pytest.raises(ValueError):
        views.gallery_items(hits, ["/t/1.jpg"])


def test_hit_record_round_trips_through_session_state_as_a_dict():
    record = hit(7, taken_at="2021-07-14T18:03:09", width=4000, height=3000, camera="Canon EOS R5")
    assert HitRecord(**record.as_dict()) == record
    assert record.name == "beach.jpg"


def test_details_show_path_date_size_camera_probability_and_tags():
    record = hit(
        7,
        0.61,
        taken_at="2021-07-14T18:03:09",
        width=4000,
        height=3000,
        camera="Canon EOS R5",
        lens="RF24-105mm F4 L IS USM",
        latitude=48.858370,
        longitude=-2.294481,
    )
    text = views.hit_details_markdown(
        record, [("scene|beach", 0.83), ("animal|dog", 0.12), ("mine", float("nan"))]
    )
    assert "`/photos/2021/summer/beach.jpg`" in text
    assert "taken 2021-07-14 18:03" in text and "4000×3000" in text and "Canon EOS R5" in text
    assert "RF24-105mm F4 L IS USM · GPS 48.85837, -2.29448" in text
    assert "61%" in text and "cosine 0.123" in text
    assert (
        "scene\\|beach (83%)" in text and "animal\\|dog (12%)" in text and text.endswith(", mine")
    )
    assert "tags: none" in views.hit_details_markdown(record, [])


def test_a_photo_gone_since_indexing_says_so_in_its_caption_and_details():
    record = HitRecord(**(hit(7).as_dict() | {"missing": True}))
    assert views.hit_caption(record).endswith("beach.jpg (file missing)")
    assert "no longer there" in views.hit_details_markdown(record)
    assert "missing" not in views.hit_caption(
        hit(7)
    ) and "no longer" not in views.hit_details_markdown(hit(7))


def test_labels_with_markdown_show_literally_in_the_tag_table():
    text = views.tagging_summary({"**bold**": 0.5, "[link](http://x)": 0.25, "a|b\nc": 0.1}, 0.0)
    assert "\\*\\*bold\\*\\*" in text and "\\[link\\]\\(http://x\\)" in text and "a\\|b c" in text
    assert "](http" not in text.replace("\\](", "")


def test_markdown_in_file_names_is_shown_literally():
    text = views.hit_details_markdown(hit(rel="*draft*_[1](x).jpg"))
    assert "\\*draft\\*\\_\\[1\\]\\(x\\).jpg" in text


def test_results_summary_says_how_many_for_what_and_how_to_get_more():
    many = [hit(i) for i in range(3)]
    line = views.results_summary(many, query="red", min_score=0.2, sort="score")
    assert line.startswith("**3 photos** for “red”") and "best first" in line and "≥ 20%" in line
    assert "newest first" in views.results_summary(many, query="red", min_score=0, sort="date")
    none = views.results_summary([], query="red", min_score=0.5, sort="score")
    assert "No photos" in none and "Lower the minimum probability" in none
    assert "21–23" in views.results_summary(many, query="x", min_score=0, sort="score", offset=20)
    assert "raise the number of results" in views.results_summary(
        many, query="x", min_score=0, sort="score", has_more=True
    )


def test_control_characters_in_file_names_show_escaped_on_one_line():
    """A newline in a file name split the details heading and its path; ESC hid in the caption."""
    record = hit(rel="2021/a\n# b\x1b.jpg")
    text = views.hit_details_markdown(record)
    assert text.splitlines()[:2] == [
        "### a\\\\n\\# b\\\\x1b.jpg",
        "`/photos/2021/a\\n# b\\x1b.jpg`",
    ]
    assert views.hit_caption(record) == "42% · a\\n# b\\x1b.jpg"
    report = replace(
        STATUS, roots=(), last_run=None, failed=(FailedFile("/p/x\ny.jpg", "truncated"),)
    )
    assert "| `/p/x\\ny.jpg` | truncated |" in views.status_markdown(report)


def test_the_query_and_file_names_in_the_results_summary_show_literally():
    line = views.results_summary(
        [hit()], query="**red** <img src=x> [a](http://x) $$x$$ a&lt;b", min_score=0, sort="score"
    )
    assert "“\\*\\*red\\*\\* \\<img src=x\\> \\[a\\]\\(http://x\\) \\$\\$x\\$\\$ a\\&lt;b”" in line
    assert "photos like a\\\\nb.jpg" in views.results_summary(
        [hit()], query="photos like a\nb.jpg", min_score=0, sort="score"
    )


def test_at_the_most_results_the_page_offers_the_hint_says_what_else_narrows_them():
    line = views.results_summary(
        [hit()], query="x", min_score=0, sort="score", has_more=True, count_at_max=True
    )
    assert "raise the number" not in line and "raise the minimum probability" in line


@pytest.mark.parametrize("text", ["", "   ", None])
def test_an_empty_query_is_a_message_not_a_search(text):
    with pytest.raises(FormError, match="Type something"):
        views.parse_query(text)


def test_labels_are_comma_or_line_separated_trimmed_and_deduplicated():
    assert views.parse_labels(" dog, cat,,  Dog , beach   at sunset ") == [
        "dog",
        "cat",
        "beach at sunset",
    ]
    assert views.parse_labels("red circle\nblue square\r\n\ngreen star") == [
        "red circle",
        "blue square",
        "green star",
    ]
    assert views.parse_labels("") == []
    with pytest.raises(FormError, match="too many"):
        views.parse_labels(",".join(f"l{i}" for i in range(views.MAX_LABELS + 1)))
    with pytest.raises(FormError, match="longer than"):
        views.parse_labels("x" * (views.MAX_LABEL_CHARS + 1))


def test_numbers_from_forms_and_api_clients_are_clamped_or_refused():
    assert views.parse_count(24.0) == 24
    assert views.parse_count(0) == 1 and views.parse_count(10_000) == 200
    assert views.parse_probability(0.25) == 0.25
    for bad in (-0.1, 1.5, float("nan"), "high"):
        with pytest.raises(FormError):
            views.parse_probability(bad)
    with pytest.raises(FormError):
        views.parse_count("many")


def test_photo_ids_from_number_fields():
    assert views.parse_image_id(12.0) == 12 and views.parse_image_id("7") == 7
    for bad in (float("nan"), 1.5, 0, -3, "x", None):
        with pytest.raises(FormError):
            views.parse_image_id(bad)


def test_tag_probabilities_are_ranked_and_never_normalized():
    probs = views.label_probabilities([("cat", 0.2), ("dog", 0.9), ("red", 0.7)])
    assert list(probs) == ["dog", "red", "cat"]
    assert sum(probs.values()) == pytest.approx(1.8)  # independent sigmoids: no softmax
    assert "**2 of 3** labels" in views.tagging_summary(probs, 0.5)
    text = views.tagging_summary({"cat": 0.1, "dog": 0.0004}, 0.5)
    assert "No label reaches" in text and "| dog | 0.04% |" in text  # exact where the chart says 0%


STATUS = LibraryStatus(
    library="/home/me/.local/share/siglip-search/library",
    images=1234,
    failed_count=2,
    tags=56,
    rejected_tags=3,
    model="google/siglip-base-patch16-224",
    mode="fp32",
    model_identity={"dim": 768},
    roots=(
        RootStatus(
            path="/photos",
            online=True,
            images=1200,
            exclude=("*/@eaDir/*",),
            passed_over=PassedOver({".mov": 3, ".xyz": 12}, hidden=2, excluded=1),
        ),
        RootStatus(path="/mnt/usb|disk", online=False, images=34),
    ),
    last_run=RunStatus(
        started_at="2024-05-01T10:00:00+00:00",
        finished_at="2024-05-01T10:01:00+00:00",
        status="ok",
        roots=["/photos"],
        added=3,
        updated=0,
        moved=1,
        removed=0,
        failed=2,
    ),
    failed=(
        FailedFile(path="/photos/bad.jpg", reason="truncated or corrupt image data"),
        FailedFile(path="/photos/notes.jpg", reason="not an image (unknown or corrupt format)"),
    ),
)


def test_status_shows_photos_model_roots_online_offline_and_failures_with_reasons():
    text = views.status_markdown(STATUS)
    assert "**1234 photos** indexed · 2 failed · 56 tags · 3 tags you rejected" in text
    assert "google/siglip-base-patch16-224" in text and "dim 768" in text
    assert "| `/photos` | online | 1200 |" in text
    # What the folder's last scan left out, and the patterns it excludes, in one cell.
    assert (
        "| skipped 12 .xyz, 3 .mov; 2 hidden or system; 1 excluded; exclude \\*/@eaDir/\\* |"
        in text
    )
    assert "`/mnt/usb\\|disk` | **offline**" in text
    assert "| `/photos/bad.jpg` | truncated or corrupt image data |" in text
    assert "not an image" in text
    assert "added 3" in text and "moved 1" in text


def test_the_index_summary_says_what_was_not_indexed():
    summary = RunSummary(added=2, passed_over=Counter({".mov": 3}), hidden=1, excluded=4)
    text = views.index_summary_markdown(summary)
    assert (
        "Done: added 2" in text
        and "- not indexed: skipped 3 .mov; 1 hidden or system; 4 excluded" in text
    )
    assert "not indexed" not in views.index_summary_markdown(RunSummary(added=2))


def test_status_without_a_library_says_what_to_do():
    assert "Index a folder" in views.status_markdown(None)
    many = replace(STATUS, failed=tuple(FailedFile(f"/p/{i}.jpg", "r") for i in range(30)))
    assert "… and 10 more" in views.status_markdown(many, max_failures=20)


def test_export_preview_lists_what_would_change_and_what_was_skipped():
    change = SidecarChange(
        Path("/p/a.jpg.xmp"),
        added={"lr:hierarchicalSubject": ["AI|animal|dog"], "dc:subject": ["dog"]},
    )
    report = ExportReport(planned=[change], skipped=[(Path("/p/b.xmp"), "not valid XML")])
    text = views.export_report_markdown(report, dry_run=True)
    assert "**1 sidecars would change**" in text and "Nothing was written" in text
    assert "`/p/a.jpg.xmp`: AI\\|animal\\|dog" in text
    assert "skipped `/p/b.xmp`: not valid XML" in text
    assert "changed**" in views.export_report_markdown(
        ExportReport(written=[change]), dry_run=False
    )
    undone = SidecarChange(
        Path("/p/a.jpg.xmp"), removed={"lr:hierarchicalSubject": ["AI|animal|dog"]}
    )
    assert "**1 sidecars undone**" in views.export_report_markdown(
        ExportReport(written=[undone]), dry_run=False, undo=True
    )


@pytest.mark.parametrize(
    "query",
    [
        "/etc/passwd",
        "beach + 0.5 ./ref.jpg",
        "~/Pictures/x.png",
        "2:/etc/x.jpg",
        "sunset 0.5 holiday.JPG",
        "2:\"x 'y\" /etc/a.jpg 'z'",
        "'a' ../b.webp",
    ],
)
def test_image_paths_in_a_query_are_refused_before_any_file_is_opened(query):
    from ui.handlers import refuse_file_terms

    with pytest.raises(FormError, match="looks like a file on the server.*in double quotes"):
        refuse_file_terms(query)


@pytest.mark.parametrize(
    "query", ['beach - "people"', "#12 + sunset", "'photo.jpg'", "2 dogs", "red"]
)
def test_words_quotes_and_indexed_ids_are_fine(query):
    from ui.handlers import refuse_file_terms

    refuse_file_terms(query)


def test_auth_takes_user_colon_password():
    assert parse_auth("anna:s3cret:with:colons") == ("anna", "s3cret:with:colons")
    assert parse_auth("") is None and parse_auth(None) is None
    for bad in ("anna", ":pw", "anna:"):
        with pytest.raises(FormError):
            parse_auth(bad)


# --- thumbnails ---------------------------------------------------------------------------------


def test_thumbnails_are_small_jpegs_remade_only_when_the_photo_changes(tmp_path):
    photo = tmp_path / "photos" / "big.png"
    photo.parent.mkdir()
    Image.new("RGB", (1600, 900), (200, 20, 20)).save(photo)
    thumbs = Thumbnails(tmp_path / "thumbs")
    try:
        first = Path(thumbs.get(5, photo))
        with Image.open(first) as im:
            assert im.format == "JPEG" and max(im.size) == THUMB_PX and im.size[0] > im.size[1]
        made = first.stat().st_mtime_ns
        assert Path(thumbs.get(5, photo)).stat().st_mtime_ns == made  # cached
        Image.new("RGB", (800, 800), (20, 20, 200)).save(photo)
        os.utime(photo, ns=(made + 10**9, made + 10**9))
        with Image.open(thumbs.get(5, photo)) as im:
            assert im.size == (THUMB_PX, THUMB_PX) and im.getpixel((5, 5))[2] > 150  # remade
        assert Path(thumbs.get(5, photo, PREVIEW_PX)).name == f"5-{PREVIEW_PX}.jpg"
    finally:
        thumbs.close()


def test_an_offline_photo_keeps_its_thumbnail_and_an_unreadable_one_gets_a_placeholder(tmp_path):
    photo = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), "green").save(photo)
    (tmp_path / "notes.jpg").write_text("not a photo")
    thumbs = Thumbnails(tmp_path / "thumbs")
    try:
        kept = thumbs.get(1, photo)
        photo.unlink()  # the disk is unplugged
        assert thumbs.get(1, photo) == kept
        assert Path(thumbs.get(2, tmp_path / "gone.jpg")).name.startswith("unavailable")
        assert Path(thumbs.get(3, tmp_path / "notes.jpg")).name.startswith("unavailable")
        assert thumbs.get_many([(1, str(photo)), (2, "/nowhere.jpg")])[0] == kept
    finally:
        thumbs.close()


# --- layering -----------------------------------------------------------------------------------


def test_ui_uses_only_public_names_of_the_indexer():
    private = []
    for path in sorted((REPO / "ui").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "indexer":
                private += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert private == []


def test_ui_talks_to_the_indexer_never_to_the_database_index_or_model_directly():
    modules = {p.name: imported_roots(p) for p in (REPO / "ui").glob("*.py")}
    assert {"app.py", "views.py", "server.py", "cli.py"} <= set(modules)
    for name, imports in modules.items():
        assert not {"sqlalchemy", "faiss", "torch", "numpy"} & imports, name
    # views may use the indexer's types and names: the layering
    assert "gradio" not in modules["views.py"]
    # the CLI stays fast
    assert "gradio" not in modules["cli.py"] and "gradio" not in modules["options.py"]


# --- server settings ------------------------------------------------------------------------------


@pytest.fixture
def served_library(tmp_path):
    from indexer.library import open_library
    from ui.state import load_state

    photos = tmp_path / "Pictures"
    photos.mkdir()
    library = open_library(tmp_path / "library")
    library.store.add_root(str(photos))
    library.close()
    state = load_state(tmp_path / "library")  # a library without a model: nothing is loaded
    yield state, photos
    state.close()


def test_only_the_thumbnail_folder_is_allowed_and_the_database_is_blocked(
    served_library, monkeypatch
):
    from ui.options import ServeOptions
    from ui.server import security_settings

    state, photos = served_library
    monkeypatch.setenv("GRADIO_BLOCKED_PATHS", "/srv/private")
    settings = security_settings(state, ServeOptions())
    assert settings["allowed_paths"] == [str(state.thumbnails.folder)]
    assert str(photos) not in settings["allowed_paths"]  # originals are never served
    assert "/srv/private" in settings["blocked_paths"]  # Gradio's own setting is kept
    assert str(state.library_dir / "library.db") in settings["blocked_paths"]
    assert settings["max_file_size"] == "25mb"


def test_uploads_inside_a_photo_folder_are_refused(served_library, monkeypatch):
    from ui.options import ServeOptions
    from ui.server import security_settings

    state, photos = served_library
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(photos / "uploads"))
    with pytest.raises(FormError, match="GRADIO_TEMP_DIR"):
        security_settings(state, ServeOptions())


def test_a_read_only_server_refuses_jobs_that_write(tmp_path):
    import gradio as gr

    from ui import handlers
    from ui.state import load_state

    state = load_state(tmp_path / "library", read_only=True)
    try:
        with pytest.raises(gr.Error, match="read-only"):
            handlers.index_folder(state, str(tmp_path))
        assert not (tmp_path / "library").exists()
        with pytest.raises(gr.Error, match="No library"):
            handlers.search_text(state, "red", 0.0, 5, "", "", "", "best match")
    finally:
        state.close()


def test_a_read_only_server_offers_no_downloads_either(tmp_path):
    import gradio as gr

    from indexer.library import open_library
    from ui import handlers
    from ui.state import load_state

    open_library(tmp_path / "library").close()
    state = load_state(tmp_path / "library", read_only=True)
    try:
        for fmt in ("CSV", "JSON Lines"):  # --read-only promises no export from the page at all
            with pytest.raises(gr.Error, match="read-only"):
                handlers.export_tags(state, fmt, "AI", 0.0, False)
    finally:
        state.close()


def test_an_index_job_that_cannot_run_leaves_no_library_behind(tmp_path):
    import gradio as gr

    from ui import handlers
    from ui.state import load_state

    state = load_state(tmp_path / "library")  # no --model, no library yet
    assert not (tmp_path / "library").exists()  # a mistyped --library leaves nothing behind
    try:
        with pytest.raises(gr.Error, match="does not exist"):
            handlers.index_folder(state, str(tmp_path / "nowhere"))
        with pytest.raises(gr.Error, match="has no model yet"):
            handlers.index_folder(state, str(tmp_path))
    finally:
        state.close()
    assert not (tmp_path / "library").exists()


def test_the_password_can_come_from_the_environment(monkeypatch):
    import argparse

    from ui.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("SIGLIP_SEARCH_AUTH", "anna:pw")
    from ui.cli import _serve_options

    options = _serve_options(parser.parse_args(["serve", "--library", "x"]))
    assert options.auth == ("anna", "pw") and options.host == "127.0.0.1" and options.port == 7860
    options = _serve_options(
        parser.parse_args(["serve", "--auth", "bob:s3", "--host", "0.0.0.0", "--port", "8000"])
    )
    assert options.auth == ("bob", "s3") and options.host == "0.0.0.0" and options.port == 8000


def test_an_indexing_job_reports_its_progress_batch_by_batch(tmp_path, tiny_checkpoint):
    from indexer_fixtures import draw_photo

    from ui import handlers
    from ui.state import load_state

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        draw_photo(i).save(folder / f"{i}.jpg")
    calls = []

    def progress(value, desc=None, unit=None):  # what gr.Progress receives
        calls.append((value, desc))

    state = load_state(tmp_path / "library", model=tiny_checkpoint)
    try:
        summary, status, _ = handlers.index_folder(state, str(folder), progress=progress)
    finally:
        state.close()
    assert "added 5" in summary and "**5 photos** indexed" in status
    assert calls[0] == (0, "scanning folders")
    assert calls[-1] == ((5, 5), "indexing 5/5 photos")


def test_each_checkout_gets_its_own_demo_library(tmp_path, monkeypatch):
    # Running `demo` from a second checkout must not add its samples to the first one's library
    # (every sample would show up twice) nor reuse the first checkout's demo model path.
    from ui.cli import default_demo_library

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    first, second = tmp_path / "one" / "data" / "samples", tmp_path / "two" / "data" / "samples"
    assert default_demo_library(first) != default_demo_library(second)
    assert default_demo_library(first) == default_demo_library(
        tmp_path / "one" / "data" / ".." / "data" / "samples"
    )
    assert default_demo_library(first).parent == tmp_path / "data" / "siglip-search"
    assert default_demo_library(first).name.startswith("demo-library-")


def test_a_retrained_demo_model_gets_a_fresh_demo_library(tmp_path, monkeypatch):
    # A library keeps the vectors of the weights that built it; after the demo model is retrained,
    # `demo` must not open the old library (it would refuse the mixed vectors) but build a new one.
    from ui.cli import default_demo_library

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    samples, model = tmp_path / "samples", tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"old weights")
    old = default_demo_library(samples, model)
    assert default_demo_library(samples, model) == old
    (model / "model.safetensors").write_bytes(b"new weights")
    assert default_demo_library(samples, model) != old


def test_the_undo_report_lists_only_machine_keywords_not_the_users_copied_ones(tmp_path):
    from indexer.export import export_xmp, undo_xmp

    photo = tmp_path / "IMG_1.jpg"
    photo.write_bytes(b"not really an image")
    sidecar = tmp_path / "IMG_1.jpg.xmp"
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
        "<rdf:li>holiday</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>",
        encoding="utf-8",
    )
    # "holiday" is copied into new lists
    export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    report = undo_xmp(tmp_path / "export.json")

    # the copy went with the list
    assert "holiday" in report.written[0].removed["lr:hierarchicalSubject"]
    text = views.export_report_markdown(report, dry_run=False, undo=True)
    assert "AI\\|animal\\|dog" in text and "holiday" not in text
