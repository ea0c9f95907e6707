"""Event handlers of the page: form values in, the library's own functions called, views out.

No search, tagging or export logic lives here: each handler calls what the CLI calls
(indexer.search.Searcher, indexer.tags, indexer.export, indexer.index_paths) and turns the
result into component values with ui.views. Errors a user can act on become gr.Error messages;
anything else is logged on the server and shown as one line, never as a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import gradio as gr
from PIL import Image

from indexer import tags
from indexer.decode import decode_image
from indexer.errors import DecodeError
from indexer.export import export_library_xmp, library_tag_rows, tables, undo_library_xmp
from indexer.jobs import index_paths
from indexer.library import lock_library
from indexer.query import file_terms
from indexer.status import library_status
from indexer.vocabulary import Vocabulary, VocabularyTag
from indexer.vocabulary import load_vocabulary as read_vocabulary
from siglip_search.errors import SiglipSearchError

from . import views
from .state import AppState, load_model, require_library, require_searcher
from .thumbnails import PREVIEW_PX
from .views import FormError, HitRecord

if TYPE_CHECKING:
    from indexer.search import SearchPage
    from siglip_search.embedder import Embedder

log = logging.getLogger("siglip_search.ui")
F = TypeVar("F", bound=Callable[..., Any])
SORTS = {"best match": "score", "newest first": "date"}
EXPORT_FORMATS = {"XMP sidecars": "xmp", "CSV": "csv", "JSON Lines": "jsonl"}
MAX_COUNT = 100  # the most results the page's slider offers (an API client may ask for up to 200)


def page_errors(handler: F) -> F:
    """Typed errors -> gr.Error with their message; a bad file -> what is wrong with it;
    anything else -> logged here with its traceback, one line on the page."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except SiglipSearchError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except DecodeError as exc:
            raise gr.Error(
                f"That file cannot be used as a photo: {exc.reason}.", print_exception=False
            ) from None
        except Exception as exc:
            log.exception("unexpected error in %s", handler.__name__)
            raise gr.Error(
                f"Something went wrong ({type(exc).__name__}); the server log has the details.",
                print_exception=False,
            ) from None

    # wraps() keeps the handler's signature, which Gradio reads; typeshed types it _Wrapped, not F.
    return wrapper  # type: ignore[return-value]


# --- search -------------------------------------------------------------------------------------


def _search_options(
    min_score, count, folder, date_from, date_to, sort, camera=None, lens=None, gps=False
) -> dict[str, Any]:
    """Form values -> Searcher options; dates and folders are read (and refused) by the searcher.
    The camera, lens and GPS fields come last, so API clients of before keep working."""
    return {
        "k": views.parse_count(count),
        "min_score": views.parse_probability(min_score),
        "folder": (folder or "").strip() or None,
        "date_from": (date_from or "").strip() or None,
        "date_to": (date_to or "").strip() or None,
        "sort": SORTS.get(sort, sort if sort in SORTS.values() else "score"),
        "camera": (camera or "").strip() or None,
        "lens": (lens or "").strip() or None,
        "has_gps": True if gps else None,
    }


def refuse_file_terms(query: str) -> None:
    """On the page, a picture is an upload and an indexed photo is `#ID`. An image *path* in a
    combined query would make the server open a file of its own disk (and say whether it exists),
    so such terms are refused before the query is parsed. indexer.query.file_terms reads the
    query with the parser's own tokenizer, so what it finds is exactly what the parser would open."""
    terms = file_terms(query)
    if terms:
        raise FormError(
            f"“{terms[0]}” looks like a file on the server; search with a picture in the "
            "“By image” tab, use #ID for an indexed photo, or put the words in double quotes."
        )


def _results(state: AppState, page: SearchPage, options: dict, query: str) -> tuple:
    """(gallery items, summary line, JSON of the hits, the hits kept for the session)."""
    # A file gone since indexing is shown as such (its folder may be offline, or it was deleted).
    hits = [HitRecord.from_hit(hit, missing=not os.path.exists(hit.path)) for hit in page.hits]
    pictures = state.thumbnails.get_many([(hit.id, hit.path) for hit in hits])
    summary = views.results_summary(
        hits,
        query=query,
        min_score=options["min_score"],
        sort=options["sort"],
        offset=page.offset,
        has_more=page.has_more,
        count_at_max=options["k"] >= MAX_COUNT,
    )
    return (
        views.gallery_items(hits, pictures),
        summary,
        [h.as_json() for h in hits],
        [h.as_dict() for h in hits],
    )


@page_errors
def search_text(
    state: AppState,
    query: str,
    min_score: float,
    count: float,
    folder: str,
    date_from: str,
    date_to: str,
    sort: str,
    camera: str | None = None,
    lens: str | None = None,
    gps: bool = False,
) -> tuple:
    text = views.parse_query(query)
    refuse_file_terms(text)
    options = _search_options(min_score, count, folder, date_from, date_to, sort, camera, lens, gps)
    page = require_searcher(state).search(text, **options)
    return _results(state, page, options, text)


@page_errors
def search_image(
    state: AppState,
    image_file: str | None,
    min_score: float,
    count: float,
    folder: str,
    date_from: str,
    date_to: str,
    sort: str,
    camera: str | None = None,
    lens: str | None = None,
    gps: bool = False,
) -> tuple:
    image = open_upload(state, image_file, what="search with")
    options = _search_options(min_score, count, folder, date_from, date_to, sort, camera, lens, gps)
    page = require_searcher(state).search_image(image, **options)
    return _results(state, page, options, "your picture")


@page_errors
def more_like_this(
    state: AppState,
    image_id: float | None,
    min_score: float,
    count: float,
    folder: str,
    date_from: str,
    date_to: str,
    sort: str,
    camera: str | None = None,
    lens: str | None = None,
    gps: bool = False,
) -> tuple:
    """Photos like an indexed one (the selected result, or any id an API client names)."""
    if image_id is None:
        raise FormError("Click a photo in the results first.")
    wanted = views.parse_image_id(image_id)
    rows = require_library(state).store.images_by_ids([wanted])
    if not rows or rows[0].status != "ok":
        raise FormError(f"There is no indexed photo with id {wanted}; search again.")
    options = _search_options(min_score, count, folder, date_from, date_to, sort, camera, lens, gps)
    page = require_searcher(state).more_like_this(rows[0].id, **options)
    return _results(state, page, options, f"photos like {Path(rows[0].rel_path).name}")


@page_errors
def select_hit(state: AppState, hits: list[dict] | None, evt: gr.SelectData) -> tuple:
    """A click on a result: its large preview, its details and tags; remembered for "more like this"."""
    index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
    if not hits or not 0 <= index < len(hits):
        raise FormError("That result is gone; search again.")
    hit = HitRecord(**hits[index])
    # The id and path come from this session's own search results (server-side state), and the
    # preview is made from the library's row for that id: a client cannot name another file.
    rows = require_library(state).store.images_by_ids([hit.id])
    if not rows:
        raise FormError(f"{hit.rel_path} is no longer in the library; search again.")
    preview = state.thumbnails.get(hit.id, rows[0].path, PREVIEW_PX)
    details = views.hit_details_markdown(hit, image_tags(state, hit.id))
    return preview, details, hit.id, gr.update(visible=True)


def image_tags(state: AppState, image_id: int) -> list[tuple[str, float]]:
    """The library's machine tags of one photo, best first."""
    found = tags.image_tags(require_library(state), [image_id])[image_id]
    return [(t.tag, t.score) for t in found]


# --- uploads ------------------------------------------------------------------------------------


def open_upload(state: AppState, image_file: str | None, *, what: str) -> Image.Image:
    """An uploaded file (in Gradio's temp folder) as an RGB picture, with the indexer's checks:
    not an image, truncated, or over the pixel limit -> a message, never a traceback."""
    if not image_file:
        raise FormError(f"Upload, paste or drop a picture to {what}.")
    # The model's input size lets a large JPEG decode at 1/2..1/8 scale, as the indexer does.
    target_size = state.embedder.image_size if state.embedder is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        decoded = decode_image(image_file, target_size=target_size, max_pixels=state.max_pixels)
    return decoded.image


# --- tagging ------------------------------------------------------------------------------------


@page_errors
def tag_image(
    state: AppState, image_file: str | None, labels_text: str, use_vocabulary: bool
) -> tuple:
    """Sigmoid probability of each typed label (and of each vocabulary tag when asked)."""
    image = open_upload(state, image_file, what="tag")
    labels = views.parse_labels(labels_text)
    if not labels and not use_vocabulary:
        raise FormError(
            "Type some labels, separated by commas or one per line (e.g. “dog, cat, beach”), "
            "or tick “use the vocabulary”."
        )
    candidates: list[str] | Vocabulary = labels
    # the vocabulary's tags with their synonyms and prompts, plus the typed labels
    if use_vocabulary:
        vocabulary = load_vocabulary(state)
        known = {name.casefold() for name in vocabulary.names()}
        typed = tuple(
            VocabularyTag(label, (label,)) for label in labels if label.casefold() not in known
        )
        candidates = Vocabulary(vocabulary.tags + typed, vocabulary.source)
    scores = tags.tag_image(_embedder(state), image, candidates)
    probabilities = views.label_probabilities((s.tag, s.score) for s in scores)
    return probabilities, views.tagging_summary(probabilities, threshold=tags.DEFAULT_THRESHOLD)


def load_vocabulary(state: AppState) -> Vocabulary:
    return read_vocabulary(state.vocabulary)


def _embedder(state: AppState) -> Embedder:
    if state.embedder is None:
        load_model(state)
    assert state.embedder is not None  # load_model loads one or raises ModelNotRecordedError
    return state.embedder


# --- library ------------------------------------------------------------------------------------


@page_errors
def folder_choices(state: AppState) -> dict:
    """The registered folders, for the search tab's folder filter (refreshed on page load and after
    indexing)."""
    roots = [root.path for root in state.library.store.roots()] if state.library is not None else []
    return gr.update(choices=roots)


@page_errors
def show_status(state: AppState) -> str:
    if state.library is None:
        return views.status_markdown(None)
    return views.status_markdown(library_status(state.library))


def _refuse_if_read_only(state: AppState) -> None:
    if state.read_only:
        raise FormError(
            "This server is read-only (started with --read-only): index, tag and export from the CLI."
        )


@contextmanager
def _one_job(state: AppState) -> Iterator[None]:
    """Jobs that write the library run one at a time; a second one is refused, not queued."""
    _refuse_if_read_only(state)
    if not state.job_lock.acquire(blocking=False):
        raise FormError(
            "Another job (indexing, tagging or export) is running; wait for it to finish."
        )
    try:
        yield
    finally:
        state.job_lock.release()


@page_errors
def index_folder(state: AppState, folder: str, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    path = os.path.expanduser((folder or "").strip())
    if not path:
        raise FormError("Type the path of a folder on the server to index, e.g. /home/me/Pictures.")
    with _one_job(state):
        # Checked before the library is created, so a job that cannot run leaves nothing behind.
        if not os.path.isdir(path):
            what = "is a file" if os.path.exists(path) else "does not exist (an unplugged disk?)"
            raise FormError(f"{path} {what}: type the path of a folder on the server.")
        if state.library is None and state.model is None:
            raise FormError(
                f"The library at {state.library_dir} has no model yet; start the server with "
                "--model ID_OR_PATH to index into it."
            )
        library = require_library(state, create=True)
        embedder = _embedder(state)
        progress(0, desc="scanning folders")

        def on_progress(done: int, total: int) -> None:
            progress((done, total), desc=views.progress_line(done, total), unit="photos")

        with (
            warnings.catch_warnings(),
            lock_library(library, folders=[path], command="serve: index"),
        ):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            summary = index_paths(
                library,
                [path],
                embedder,
                progress=False,
                max_pixels=state.max_pixels,
                on_progress=on_progress,
            )
        if state.searcher is None:
            load_model(state)
    return (
        views.index_summary_markdown(summary),
        views.status_markdown(library_status(library)),
        folder_choices(state),
    )


@page_errors
def tag_library(state: AppState, threshold: float, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    """Tag every new or changed photo from its stored embedding (indexer.tags.tag_library)."""
    library = require_library(state)
    prob = views.parse_probability(threshold)
    with _one_job(state), lock_library(library, command="serve: tag"):
        progress(0, desc="tagging the library")
        summary = tags.tag_library(
            library,
            _embedder(state),
            load_vocabulary(state),
            threshold=prob or None,
            progress=False,
        )
    return f"Done: {summary.line()}.", views.status_markdown(library_status(library))


@page_errors
def export_tags(
    state: AppState, format_name: str, root_tag: str, threshold: float, dry_run: bool
) -> tuple:
    """XMP sidecars beside the photos (with a dry-run preview), or a CSV / JSON Lines download:
    the same functions as `siglip-search export`."""
    library = require_library(state)
    fmt = EXPORT_FORMATS.get(format_name, format_name)
    prob = views.parse_probability(threshold) or None
    if fmt == "xmp":
        with _one_job(state), lock_library(library, command="serve: export"):
            report = export_library_xmp(library, (root_tag or "").strip() or None, prob, dry_run)
        return views.export_report_markdown(report, dry_run=dry_run), gr.update(
            value=None, visible=False
        )
    if fmt not in ("csv", "jsonl"):
        raise FormError(f"Choose one of: {', '.join(EXPORT_FORMATS)}.")
    # a download writes nothing of the user's, but --read-only promises no export
    _refuse_if_read_only(state)
    rows = library_tag_rows(library, prob)
    if not rows:
        raise FormError("The library has no tags to export yet: tag the library first.")
    out = Path(tempfile.mkdtemp(prefix="siglip-search-export-")) / f"tags.{fmt}"
    (tables.write_csv if fmt == "csv" else tables.write_jsonl)(rows, out)
    photos = len({row.path for row in rows})
    return f"**{len(rows)} tags** of {photos} photos as {format_name}: download below.", gr.update(
        value=str(out), visible=True
    )


@page_errors
def undo_export(state: AppState, dry_run: bool) -> tuple:
    """Remove exactly the keywords earlier XMP exports added (`siglip-search export --undo`)."""
    library = require_library(state)
    with _one_job(state), lock_library(library, command="serve: undo"):
        report = undo_library_xmp(library, dry_run)
    return views.export_report_markdown(report, dry_run=dry_run, undo=True), gr.update(
        value=None, visible=False
    )
