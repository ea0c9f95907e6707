"""`siglip-search serve` and `siglip-search demo`: argument parsing. Errors become one line and exit
status 2 in the root command (siglip_search.cli.main); here an OSError (the port is taken) is one too."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from indexer.cli_options import add_library_argument
from indexer.library import default_library_dir
from siglip_search.cli import PROG, add_device_argument, add_mode_argument
from siglip_search.resources import DEMO_MODEL, SAMPLES

from .options import (
    AUTH_ENV,
    DEFAULT_HOST,
    DEFAULT_MAX_UPLOAD,
    DEFAULT_PORT,
    LOCAL_HOSTS,
    ServeOptions,
    parse_auth,
)


def default_demo_library(samples: Path = SAMPLES, model: Path = DEMO_MODEL) -> Path:
    """$XDG_DATA_HOME/siglip-search/demo-library-<key> (~/.local/share/...): never the user's own
    library. The key is the bundled samples folder (siglip_search.resources: a checkout's data/, or
    an installed copy's) and the demo model's weights: two checkouts or installations never mix their
    sample photos in one library nor use each other's demo model, and after the demo
    model is retrained `demo` builds a fresh library instead of failing on the old one's vectors
    (the old folder is left where it is)."""
    key = hashlib.sha256(str(Path(samples).resolve()).encode())
    weights = Path(model) / "model.safetensors"
    if weights.is_file():
        key.update(weights.read_bytes())
    return _demo_libraries_home() / f"demo-library-{key.hexdigest()[:8]}"


def _demo_libraries_home() -> Path:
    return (
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "siglip-search"
    )


def serve_command(args: argparse.Namespace) -> int:
    # Imported when run: every siglip-search command loads this module, and the server imports
    # Gradio (about 10 s on a 2-core machine) and the indexer with FAISS.
    from .server import launch
    from .state import load_state

    options = _serve_options(args)
    # With --database, --library names this machine's folder of the library (default: one a database).
    library_dir = args.library if args.database else args.library or default_library_dir()
    state = load_state(
        library_dir,
        model=args.model,
        max_pixels=args.max_pixels,
        vocabulary=args.vocabulary,
        read_only=args.read_only,
        mode=args.mode,
        device=args.device,
        database=args.database,
    )
    try:
        launch(state, options)
    except KeyboardInterrupt:
        pass
    finally:
        state.close()
    return 0


def demo_command(args: argparse.Namespace) -> int:
    # Imported when run, as for serve: the demo imports the indexer with FAISS (about 1 s).
    from .demo import build_demo_library

    library_dir = Path(args.library).expanduser() if args.library else default_demo_library()
    print(f"{PROG}: building the demo library in {library_dir} ...", file=sys.stderr, flush=True)
    line = build_demo_library(
        library_dir, progress=not args.no_progress, mode=args.mode, device=args.device
    )
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)
    if args.no_serve:
        return 0
    args.library, args.model, args.max_pixels, args.vocabulary = str(library_dir), None, None, None
    args.database = None  # the demo library is always an SQLite file of its own
    return serve_command(args)


def _serve_options(args: argparse.Namespace) -> ServeOptions:
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    if args.host not in LOCAL_HOSTS and auth is None:
        print(
            f"{PROG}: warning: serving on {args.host} without a password (--auth USER:PASSWORD); "
            "anyone who can reach this port can search your photos",
            file=sys.stderr,
        )
    return ServeOptions(host=args.host, port=args.port, auth=auth, max_upload=args.max_upload)


def _server_arguments(parser: argparse.ArgumentParser, port: int = DEFAULT_PORT) -> None:
    add_mode_argument(parser)
    add_device_argument(parser)
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}, this computer only)",
    )
    parser.add_argument("--port", type=int, default=port, help=f"port (default: {port})")
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=None,
        help=f"require this login (default: ${AUTH_ENV} if set, else no password)",
    )
    parser.add_argument(
        "--max-upload",
        default=DEFAULT_MAX_UPLOAD,
        metavar="SIZE",
        help=f"largest accepted upload, e.g. 10mb (default: {DEFAULT_MAX_UPLOAD})",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="search and tag-an-image only: no indexing, tagging or export from the page",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `serve` and `demo`; each sets `func` to a handler returning an exit status."""
    serve = subparsers.add_parser(
        "serve",
        help="open the web UI for a library (search, tag, index, export)",
        description="Serve a web page to search and tag a library. The model is loaded once at start. "
        "Binds to this computer only unless --host says otherwise; never shares publicly.",
    )
    add_library_argument(serve)
    serve.add_argument(
        "--model",
        metavar="ID_OR_PATH",
        default=None,
        help="model for a library that has none yet (indexing from the page)",
    )
    serve.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse larger pictures as decompression bombs (default: Pillow's limit)",
    )
    serve.add_argument(
        "--vocabulary",
        metavar="FILE",
        default=None,
        help="tag vocabulary for tagging (default: the bundled data/tags/vocabulary.txt)",
    )
    _server_arguments(serve)
    serve.set_defaults(func=serve_command, reported_errors=(OSError,))

    demo = subparsers.add_parser(
        "demo",
        help="index the bundled sample photos with the bundled demo model and open the web UI",
        description="Build (or refresh) a demo library from data/samples with data/models/siglip-demo, "
        "tag it, then serve it. Works offline.",
    )
    demo.add_argument(
        "--library",
        metavar="DIR",
        default=None,
        help=f"demo library folder (default: {_demo_libraries_home()}/demo-library-<key>, "
        "one per checkout and demo model)",
    )
    demo.add_argument("--no-serve", action="store_true", help="build the demo library and exit")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _server_arguments(demo)
    demo.set_defaults(func=demo_command, reported_errors=(OSError,))
