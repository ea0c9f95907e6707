"""The page: layout of the Search, Tag and Library tabs, and which handler each event calls.

Every event that an API client may call has an `api_name` (search, search_image, more_like_this,
tag_image, status, index, tag_library, export); selecting a result is a browser-only event.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from siglip_search.errors import SiglipSearchError

from . import handlers
from .handlers import EXPORT_FORMATS, MAX_COUNT, SORTS
from .state import AppState

TITLE = "siglip-search"
CSS = """
.gradio-container { max-width: 1320px !important; width: 100% !important; margin: 0 auto !important; }
#header h1 { margin-bottom: 0.1rem; }
#results-summary p { margin: 0.25rem 0; }
#tag-help { opacity: 0.8; font-size: 0.9em; }
"""
SEARCH_HELP = (
    'Combine terms like rclip: `beach + 0.5 sunset - people`; double quotes keep words as text: `"a + b"`. '
    "Probabilities are SigLIP's own `sigmoid(t·cos + b)`: useful to compare, and to cut off poor matches."
)
TAG_HELP = (
    "Each label gets its own yes/no probability (a sigmoid, not a softmax): "
    "they do not sum to 1, and several labels can all be likely, or none."
)


def photo_input(label: str, **kwargs: Any) -> gr.Image:
    """An upload (or paste, or drop) kept as the file it is, for the handler to read with the
    indexer's checks. Gradio itself opens it with Pillow first; a file Pillow cannot open becomes
    a message here instead of a generic error. (Wrapped on the instance, not subclassed: Gradio
    writes a .pyi file beside the source of every Component subclass.)"""
    image = gr.Image(
        label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs
    )
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except Image.DecompressionBombError:
            raise gr.Error(
                "That picture has too many pixels to open safely.", print_exception=False
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error(
                "That file is not a picture this app can read (JPEG, PNG, WebP, GIF, BMP or TIFF).",
                print_exception=False,
            ) from None

    # Gradio calls the instance's preprocess; replacing the method is the point here.
    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def bind(handler: Callable, state: AppState) -> Callable:
    """handler(state, *inputs) -> fn(*inputs), keeping the signature Gradio reads (gr.Progress
    defaults, gr.SelectData annotations): functools.partial would hide them."""

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(state, *args, **kwargs)

    signature = inspect.signature(handler)
    # inspect.signature (which Gradio calls) reads __signature__; typeshed's wraps() result lacks it.
    parameters = list(signature.parameters.values())[1:]
    bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return bound


def build_app(state: AppState) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(
            f"# {TITLE}\nSearch and tag your photos with SigLIP · library `{state.library_dir}`",
            elem_id="header",
        )
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                folder_filter = _search_tab(state)
            with gr.Tab("Tag an image", id="tag"):
                _tag_tab(state)
            with gr.Tab("Library", id="library"):
                status = _library_tab(state, folder_filter)
        app.load(bind(handlers.show_status, state), outputs=status, api_name="status")
        app.load(
            bind(handlers.folder_choices, state), outputs=folder_filter, api_visibility="private"
        )
    return app


def _search_tab(state: AppState) -> gr.Dropdown:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            with gr.Tabs():
                with gr.Tab("By text", id="by-text"):
                    query = gr.Textbox(
                        label="Search",
                        placeholder="a red circle",
                        elem_id="query",
                        autofocus=True,
                        info=SEARCH_HELP,
                        submit_btn="Search",
                    )
                with gr.Tab("By image", id="by-image"):
                    picture = photo_input(
                        "Upload, paste or drop a picture", height=220, elem_id="query-image"
                    )
                    image_button = gr.Button("Search with this picture", variant="primary")
            with gr.Accordion("Options", open=True):
                min_score = gr.Slider(0, 1, value=0, step=0.01, label="Minimum probability")
                count = gr.Slider(1, MAX_COUNT, value=24, step=1, label="Number of results")
                sort = gr.Dropdown(list(SORTS), value="best match", label="Sort")
                folder = gr.Dropdown(
                    _root_choices(state),
                    value=None,
                    allow_custom_value=True,
                    label="Only in folder",
                    info="a registered folder, or one inside it",
                )
                with gr.Row():
                    date_from = gr.Textbox(
                        label="Taken from", placeholder="e.g. 2021-07", min_width=100
                    )
                    date_to = gr.Textbox(
                        label="Taken until", placeholder="e.g. 2022", min_width=100
                    )
                with gr.Row():
                    camera = gr.Dropdown(
                        _metadata_choices(state, "camera"),
                        value=None,
                        allow_custom_value=True,
                        label="Camera",
                        info="make or model, or part of it",
                        min_width=120,
                    )
                    lens = gr.Dropdown(
                        _metadata_choices(state, "lens"),
                        value=None,
                        allow_custom_value=True,
                        label="Lens",
                        min_width=120,
                    )
                gps = gr.Checkbox(label="Only photos with a GPS position", value=False)
        with gr.Column(scale=3):
            summary = gr.Markdown(
                "Type a query, or search with a picture.", elem_id="results-summary"
            )
            gallery = gr.Gallery(
                label="Results",
                show_label=False,
                columns=5,
                height=560,
                object_fit="cover",
                allow_preview=False,
                elem_id="results",
                buttons=[],
            )
            with gr.Row(visible=False, elem_id="selected", equal_height=False) as selected_row:
                preview = gr.Image(
                    show_label=False, interactive=False, height=420, scale=2, buttons=["fullscreen"]
                )
                with gr.Column(scale=1, min_width=240):
                    details = gr.Markdown(elem_id="details")
                    more = gr.Button("More like this", variant="secondary")
            with gr.Accordion("Results as JSON", open=False):
                results_json = gr.JSON(show_label=False)
    hits = gr.State([])
    # an API client may pass any indexed photo's id
    selected_id = gr.Number(visible=False, precision=0)
    options = [min_score, count, folder, date_from, date_to, sort, camera, lens, gps]
    outputs = [gallery, summary, results_json, hits]
    query.submit(bind(handlers.search_text, state), [query, *options], outputs, api_name="search")
    image_button.click(
        bind(handlers.search_image, state), [picture, *options], outputs, api_name="search_image"
    )
    picture.upload(
        bind(handlers.search_image, state), [picture, *options], outputs, api_visibility="private"
    )
    more.click(
        bind(handlers.more_like_this, state),
        [selected_id, *options],
        outputs,
        api_name="more_like_this",
    )
    gallery.select(
        bind(handlers.select_hit, state),
        [hits],
        [preview, details, selected_id, selected_row],
        api_visibility="private",
    )
    return folder


def _tag_tab(state: AppState) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            picture = photo_input("Picture to tag: upload, paste or drop", height=300)
            labels = gr.Textbox(
                label="Candidate labels, separated by commas or one per line",
                placeholder="dog, cat, beach at sunset",
                lines=2,
            )
            use_vocabulary = gr.Checkbox(
                label=f"Also score the tag vocabulary{_vocabulary_size(state)}", value=False
            )
            button = gr.Button("Tag", variant="primary")
        with gr.Column(scale=1):
            chart = gr.Label(label="Probability per label", num_top_classes=20, show_heading=False)
            gr.Markdown(TAG_HELP, elem_id="tag-help")
            summary = gr.Markdown()
    button.click(
        bind(handlers.tag_image, state),
        [picture, labels, use_vocabulary],
        [chart, summary],
        api_name="tag_image",
    )


def _library_tab(state: AppState, folder_filter: gr.Dropdown) -> gr.Markdown:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            status = gr.Markdown(elem_id="status")
            refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=2, visible=not state.read_only):
            with gr.Group():
                folder = gr.Textbox(
                    label="Index a folder on this computer",
                    placeholder="/home/me/Pictures",
                    info="new, changed, moved and removed photos; safe to repeat",
                )
                index_button = gr.Button("Index", variant="primary")
            index_result = gr.Markdown(elem_id="index-result")
            with gr.Group():
                threshold = gr.Slider(
                    0,
                    0.99,
                    value=0,
                    step=0.01,
                    label="Tag threshold",
                    info="0: each tag's own, else 0.5",
                )
                tag_button = gr.Button("Tag the library")
            tag_result = gr.Markdown()
            with gr.Group():
                fmt = gr.Radio(list(EXPORT_FORMATS), value="XMP sidecars", label="Export tags")
                with gr.Row():
                    root_tag = gr.Textbox(
                        value="AI", label="Root keyword", info="AI|colour|red", min_width=120
                    )
                    export_threshold = gr.Slider(
                        0, 0.99, value=0, step=0.01, label="Only tags above", min_width=160
                    )
                dry_run = gr.Checkbox(
                    value=True, label="Dry run: show what would change, write nothing"
                )
                with gr.Row():
                    export_button = gr.Button("Export")
                    undo_button = gr.Button("Undo XMP exports")
            export_result = gr.Markdown()
            export_file = gr.File(label="Download", visible=False, interactive=False)
    refresh.click(bind(handlers.show_status, state), outputs=status, api_visibility="private")
    index_button.click(
        bind(handlers.index_folder, state),
        [folder],
        [index_result, status, folder_filter],
        api_name="index",
    )
    tag_button.click(
        bind(handlers.tag_library, state), [threshold], [tag_result, status], api_name="tag_library"
    )
    export_button.click(
        bind(handlers.export_tags, state),
        [fmt, root_tag, export_threshold, dry_run],
        [export_result, export_file],
        api_name="export",
    )
    undo_button.click(
        bind(handlers.undo_export, state),
        [dry_run],
        [export_result, export_file],
        api_name="undo_export",
    )
    return status


def _root_choices(state: AppState) -> list[str]:
    if state.library is None:
        return []
    return [root.path for root in state.library.store.roots()]


def _metadata_choices(state: AppState, column: str) -> list[str]:
    """The cameras or lenses of the library's photos, most photos first."""
    if state.library is None:
        return []
    return [value for value, _ in state.library.store.metadata_values(column)]


def _vocabulary_size(state: AppState) -> str:
    try:
        return f" ({len(handlers.load_vocabulary(state))} tags)"
    except SiglipSearchError:
        return ""
