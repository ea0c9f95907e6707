"""`siglip-search index`, `forget` and `status`: argument parsing and output; the other library
commands are registered from cli_search.py (search, duplicates) and cli_tags.py (tag, export).
Errors become exit codes in the root command (siglip_search.cli.main).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from PIL import Image

from siglip_search.cli import PROG, add_device_argument, add_mode_argument

from .cli_options import INTERRUPTED, add_library_argument, positive_int
from .cli_scale import add_executor_arguments, add_reindex_command, executor_from_args, index_notes
from .cli_search import add_search_commands
from .cli_tags import add_tag_commands
from .decode import MISSING_DECODERS
from .errors import FolderNotFoundError
from .jobs import index_paths
from .library import Library, lock_library, open_library, require_model_for_new_library
from .names import shown
from .pipeline import POOLS
from .scan import check_utf8_path
from .status import LibraryStatus, library_status, passed_over_text
from .store import RootRow


def index_command(args: argparse.Namespace) -> int:
    # Oversized images are refused with our own cap and recorded as failures; Pillow's
    # warning about them would only scribble over the progress bar.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    for path in args.paths:
        check_utf8_path(path)  # before the library is created
    executor = executor_from_args(args)
    if args.model is None:
        require_model_for_new_library(args.library, args.database)  # before anything is created
    with open_library(args.library, database=args.database) as library:
        with lock_library(library, args.wait, folders=args.paths or None, command="index"):
            embedder = library.load_embedder(args.model, mode=args.mode, device=args.device)
            summary = index_paths(
                library,
                args.paths,
                embedder,
                batch_size=args.batch_size,
                workers=args.workers,
                pool=args.pool,
                progress=not args.no_progress,
                max_pixels=args.max_pixels,
                exclude=args.exclude,
                no_exclude=args.no_exclude,
                executor=executor,
            )
            notes = index_notes(library)
    for root in summary.offline_roots:
        print(
            f"{PROG}: root {shown(root)} is offline (missing or empty); its images are kept",
            file=sys.stderr,
        )
    for folder in summary.unreadable_dirs:
        print(f"{PROG}: cannot list folder {shown(folder)}; its images are kept", file=sys.stderr)
    for link in summary.outside_links:
        print(
            f"{PROG}: folder link {shown(link)} leads outside its root (to {shown(os.path.realpath(link))}); "
            "not followed, index that folder itself to include it",
            file=sys.stderr,
        )
    for suffix, count in sorted(summary.undecodable.items()):
        print(
            f"{PROG}: {count} {suffix} photos skipped: this Python cannot decode them "
            f"({MISSING_DECODERS[suffix]})",
            file=sys.stderr,
        )
    if summary.facts_read:
        print(
            f"{PROG}: read the lens and GPS position of {summary.facts_read} photos indexed before",
            file=sys.stderr,
        )
    left_out = passed_over_text(summary.passed_over, summary.hidden, summary.excluded)
    if left_out:
        print(f"{PROG}: not indexed: {left_out} (`status` lists them per folder)", file=sys.stderr)
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    print(summary.line())
    return 0


def forget_command(args: argparse.Namespace) -> int:
    with open_library(args.library, create=False, database=args.database) as library:
        # On a server only this folder is locked: other machines may go on indexing other roots.
        with lock_library(
            library, folders=[_find_root(library, args.folder).path], command="forget"
        ):
            root = _find_root(library, args.folder)  # again, now that nobody else may change it
            removed = library.store.remove_root(root.id)
            library.vector_index()  # rebuilds and saves vectors.faiss without them
    print(f"forgot {root.path}: {removed} photos left the library; no file was touched")
    return 0


def _find_root(library: Library, given: str) -> RootRow:
    folder = os.path.abspath(os.path.expanduser(given))
    roots = library.store.roots()
    root = next((r for r in roots if r.path in (folder, os.path.realpath(folder))), None)
    if root is None:
        known = ", ".join(r.path for r in roots) or "none"
        raise FolderNotFoundError(f"{given} is not a root of this library (its roots: {known})")
    return root


def status_command(args: argparse.Namespace) -> int:
    with open_library(args.library, create=False, database=args.database) as library:
        report = library_status(library)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_status(report))
    return 0


def format_status(report: LibraryStatus, max_failures: int = 20) -> str:
    lines = [f"library   {shown(report.library)}"]
    if report.database:
        lines = [f"library   {shown(report.database)}", f"local     {shown(report.library)}"]
    mode = f", {report.mode}" if report.mode else ""
    identity = report.model_identity or {}
    lines.append(
        f"model     {report.model or '(none yet)'}"
        + (f" (dim {identity['dim']}{mode})" if identity else "")
    )
    lines.append(f"images    {report.images} indexed, {report.failed_count} failed")
    rejected = f", {report.rejected_tags} you rejected" if report.rejected_tags else ""
    lines.append(f"tags      {report.tags} machine tags{rejected}")
    for i, root in enumerate(report.roots):
        state = "online " if root.online else "OFFLINE (missing or empty; images kept)"
        lines.append(
            f"{'roots' if i == 0 else '':9} {state} {shown(root.path)} ({root.images} images)"
        )
        if root.exclude:
            lines.append(f"{'':17} exclude {', '.join(shown(p) for p in root.exclude)}")
        passed = root.passed_over
        left_out = passed and passed_over_text(passed.suffixes, passed.hidden, passed.excluded)
        if left_out:
            lines.append(f"{'':17} {shown(left_out)}")
    if report.index is not None:
        index = report.index
        lines.append(
            f"index     ivfpq {index.factory} of {index.photos} photos, built {index.built_at}"
            + (
                f"; UNUSABLE, searching with the default index: {index.problem}"
                if index.problem
                else ""
            )
        )
    run = report.last_run
    if run:
        lines.append(
            f"last run  {run.started_at} {run.status}: added {run.added}, updated {run.updated}, "
            f"moved {run.moved}, removed {run.removed}, failed {run.failed}"
        )
    for i, failure in enumerate(report.failed[:max_failures]):
        lines.append(
            f"{'failures' if i == 0 else '':9} {shown(failure.path)}: {shown(failure.reason or '')}"
        )
    if len(report.failed) > max_failures:
        lines.append(f"{'':9} ... and {len(report.failed) - max_failures} more (--json lists all)")
    return "\n".join(lines)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the library commands; each sets `func` to a handler returning an exit status."""
    index = subparsers.add_parser(
        "index",
        help="index photo folders (new, changed, moved, removed files)",
        description="Scan folders, embed new or changed photos, keep the vectors of moved ones, "
        "drop removed ones. Safe to interrupt: run it again to resume.",
    )
    index.add_argument(
        "paths", nargs="*", metavar="PATH", help="folders (default: all registered roots)"
    )
    add_library_argument(index)
    index.add_argument(
        "--model",
        metavar="ID_OR_PATH",
        help="model for a new library, needed by its first index: the demo model's folder or a hub "
        "id such as google/siglip-base-patch16-224 (default: the one the library records)",
    )
    add_mode_argument(index, "; modes of one vector family share a library")
    add_device_argument(index)
    index.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="images per batch (default: 32 on the CPU; on a GPU, doubled from 32 while images/s "
        "grows and memory lasts)",
    )
    index.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="decode workers (default: one per core)",
    )
    index.add_argument(
        "--pool",
        choices=POOLS,
        default="threads",
        help="decode in threads (default) or processes",
    )
    index.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another indexer to finish (default: 0)",
    )
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="refuse larger images as decompression bombs (default: Pillow's limit)",
    )
    index.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out matching files and folders, remembered for the folder's root: a path from "
        "the root such as '*/@eaDir/*', '*/.thumbnails/*', '*.lrdata/*' (repeatable)",
    )
    index.add_argument(
        "--no-exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="forget an exclude pattern of the root (as `status` lists it; repeatable)",
    )
    add_executor_arguments(index, "where photos are decoded and embedded")
    index.set_defaults(func=index_command, interrupted=INTERRUPTED)

    forget = subparsers.add_parser(
        "forget",
        help="remove a registered folder and its photos from the library (files untouched)",
        description="Forget a root folder: its photos' vectors and tags leave the library; the photos "
        "themselves, and any sidecars, are not touched. For a disk that is gone for good.",
    )
    forget.add_argument("folder", metavar="FOLDER", help="a root folder, as `status` lists it")
    add_library_argument(forget)
    forget.set_defaults(func=forget_command, interrupted=INTERRUPTED)

    status = subparsers.add_parser(
        "status",
        help="what a library holds: counts, model, roots, failures",
        description="What a library holds, read-only: how many photos are indexed, the model and "
        "mode they were embedded with, each root folder (online or offline, exclude patterns, "
        "what was passed over) and the files that failed, with the reason.",
    )
    add_library_argument(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=status_command, interrupted=INTERRUPTED)
    add_reindex_command(subparsers, add_library_argument)
    add_search_commands(subparsers)
    add_tag_commands(subparsers)
