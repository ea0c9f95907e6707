"""Launch the page with the security settings: what files may be served, uploads, password, address.

The file routes of Gradio (`/gradio_api/file=`, its older `/file/` form) serve only:
- the thumbnail folder, the one entry of `allowed_paths` (originals are never served: the UI shows
  thumbnails and previews made from them),
- Gradio's own upload/cache folder (files users uploaded, copies of the thumbnails shown).
The library database and FAISS file are blocked explicitly on top of that. Public sharing through
Gradio's tunnel is never enabled, and the server binds to localhost unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from indexer.decode import DEFAULT_MAX_PIXELS
from indexer.library import DB_NAME, INDEX_NAME, LOCK_NAME
from siglip_search.cli import PROG

from .app import CSS, build_app
from .options import ServeOptions
from .state import AppState
from .views import FormError

SEARCH_CONCURRENCY = 8  # searches are short; jobs that write the library run one at a time anyway


def gradio_temp_dir() -> Path:
    """Where Gradio writes uploads (and copies of what it serves)."""
    return Path(
        os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio"
    ).resolve()


def security_settings(state: AppState, options: ServeOptions) -> dict:
    """The launch() arguments that decide what can be read through the server."""
    roots = [Path(root.path) for root in state.library.store.roots()] if state.library else []
    uploads = gradio_temp_dir()
    for root in roots:
        if uploads == root or root in uploads.parents:
            raise FormError(
                f"Gradio's upload folder {uploads} is inside the photo folder {root}; "
                "set GRADIO_TEMP_DIR to a folder outside your photos"
            )
    library_files = [str(state.library_dir / name) for name in (DB_NAME, INDEX_NAME, LOCK_NAME)]
    env_blocked = [
        p.strip() for p in os.environ.get("GRADIO_BLOCKED_PATHS", "").split(",") if p.strip()
    ]
    return {
        "allowed_paths": [str(state.thumbnails.folder)],
        "blocked_paths": env_blocked + library_files + list(options.extra_blocked),
        "max_file_size": options.max_upload,
    }


def launch(state: AppState, options: ServeOptions, *, block: bool = True) -> tuple[gr.Blocks, str]:
    """Build and start the page; returns (app, local URL). With block=False the server runs in
    a background thread until app.close() (what the tests use)."""
    # Pillow refuses larger images at open(); the indexer's decode applies the same cap.
    Image.MAX_IMAGE_PIXELS = state.max_pixels or DEFAULT_MAX_PIXELS
    settings = security_settings(state, options)
    # Thumbnails are served from their folder as they are: not hashed and copied into Gradio's
    # cache on every search (a quarter of a search's time). The folder is the one allowed path.
    gr.set_static_paths([state.thumbnails.folder])
    app = build_app(state)
    app.queue(default_concurrency_limit=SEARCH_CONCURRENCY)
    _, url, _ = app.launch(
        server_name=options.host,
        server_port=options.port,
        share=False,
        auth=options.auth,
        auth_message=f"{PROG}: this library is protected by a password." if options.auth else None,
        prevent_thread_lock=True,
        show_error=False,  # only our gr.Error messages reach the page, never exception text
        quiet=options.quiet,
        enable_monitoring=False,
        run_history=False,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
        footer_links=["api"],
        css=CSS,
        theme=gr.themes.Soft(),
        **settings,
    )
    if block:
        print(f"{PROG}: serving {state.library_dir} at {url} (Ctrl+C to stop)", flush=True)
        app.block_thread()
    return app, url
