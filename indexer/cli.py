"""`siglip-search index` and `status`: argument parsing, output, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from collections.abc import Callable, Sequence

from PIL import Image

from siglip_search.errors import SiglipSearchError

from .library import LIBRARY_ENV, default_library_dir, library_status, lock_library, open_library

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
PROG = "siglip-search"


def _cli_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Typed errors -> one line on stderr and exit status 2; no traceback for a user's mistake."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except SiglipSearchError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper


@_cli_errors
def index_command(args: argparse.Namespace) -> int:
    from .jobs import index_paths  # imports torch via the embedder: keep `status` fast

    # Oversized images are refused with our own cap and recorded as failures; Pillow's
    # warning about them would only scribble over the progress bar.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    library = open_library(args.library)
    try:
        with lock_library(library, args.wait):
            embedder = library.load_embedder(args.model, mode=args.mode)
            summary = index_paths(
                library, args.paths, embedder, batch_size=args.batch_size, workers=args.workers,
                progress=not args.no_progress, max_pixels=args.max_pixels,
            )  # fmt: skip
    finally:
        library.close()
    for root in summary.offline_roots:
        print(f"{PROG}: root {root} is offline (missing or empty); its images are kept", file=sys.stderr)
    for folder in summary.unreadable_dirs:
        print(f"{PROG}: cannot list folder {folder}; its images are kept", file=sys.stderr)
    print(summary.line())
    return 0


@_cli_errors
def status_command(args: argparse.Namespace) -> int:
    library = open_library(args.library, create=False)
    try:
        report = library_status(library)
    finally:
        library.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_status(report))
    return 0


def format_status(report: dict, max_failures: int = 20) -> str:
    lines = [f"library   {report['library']}"]
    mode = f", {report['mode']}" if report["mode"] else ""
    identity = report["model_identity"] or {}
    lines.append(f"model     {report['model'] or '(none yet)'}" + (f" (dim {identity['dim']}{mode})" if identity else ""))
    lines.append(f"images    {report['images']} indexed, {report['failed_count']} failed")
    for i, root in enumerate(report["roots"]):
        state = "online " if root["online"] else "OFFLINE (missing or empty; images kept)"
        lines.append(f"{'roots' if i == 0 else '':9} {state} {root['path']} ({root['images']} images)")
    run = report["last_run"]
    if run:
        lines.append(
            f"last run  {run['started_at']} {run['status']}: added {run['added']}, updated {run['updated']}, "
            f"moved {run['moved']}, removed {run['removed']}, failed {run['failed']}"
        )
    for i, failure in enumerate(report["failed"][:max_failures]):
        lines.append(f"{'failures' if i == 0 else '':9} {failure['path']}: {failure['reason']}")
    if len(report["failed"]) > max_failures:
        lines.append(f"{'':9} ... and {len(report['failed']) - max_failures} more (--json lists all)")
    return "\n".join(lines)


def _library_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library", metavar="DIR", default=None,
        help=f"library folder (default: ${LIBRARY_ENV} or {default_library_dir()})",
    )  # fmt: skip


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `index` and `status`; each sets `func` to a handler returning an exit status."""
    index = subparsers.add_parser(
        "index", help="index photo folders (new, changed, moved, removed files)",
        description="Scan folders, embed new or changed photos, keep the vectors of moved ones, "
        "drop removed ones. Safe to interrupt: run it again to resume.",
    )  # fmt: skip
    index.add_argument("paths", nargs="*", metavar="PATH", help="folders (default: all registered roots)")
    _library_argument(index)
    index.add_argument("--model", metavar="ID_OR_PATH", help="model for a new library (default: the recorded one)")
    index.add_argument("--mode", default=None, help="fp32 (default), int8, bf16 or compile; fixed per library")
    index.add_argument("--batch-size", type=_positive_int, default=32, metavar="N")
    index.add_argument("--workers", type=_positive_int, default=None, metavar="N", help="decode threads")
    index.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long for another indexer to finish (default: 0)")  # fmt: skip
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                       help="refuse larger images as decompression bombs (default: Pillow's limit)")  # fmt: skip
    index.set_defaults(func=index_command)

    status = subparsers.add_parser("status", help="what a library holds: counts, model, roots, failures")
    _library_argument(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=status_command)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
