"""`siglip-search index`, `forget`, `status`, `search`, `tag`, `duplicates` and `export`: argument
parsing and output. Errors become exit codes in the root command (siglip_search.cli.main).

Above ~400 lines: seven commands, each a short function and an argparse block; the formatter writes
each add_argument over several lines, which makes about half of the module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

from PIL import Image

from siglip_search.cli import PROG

from .cli_scale import add_executor_arguments, add_reindex_command, executor_from_args, index_notes
from .decode import MISSING_DECODERS
from .duplicates import DEFAULT_THRESHOLD, find_duplicates
from .errors import ExportOptionError, FolderNotFoundError, QueryError
from .export import export_library_xmp, library_tag_rows, tables, undo_library_xmp
from .jobs import index_paths
from .library import LIBRARY_ENV, default_library_dir, lock_library, open_library
from .names import shown
from .query import QueryTerm, parse_query
from .scan import check_utf8_path
from .search import Searcher
from .status import LibraryStatus, library_status
from .tags import DEFAULT_CAP, tag_library
from .vocabulary import load_vocabulary

EXIT_PARTIAL = 1  # export: some sidecars were skipped (each reported on stderr)
# What Ctrl-C prints for the library commands: indexing and tagging commit batch by batch, so the same
# command run again resumes where the interrupted one stopped.
INTERRUPTED = "interrupted; run the same command again to resume"


def index_command(args: argparse.Namespace) -> int:
    # Oversized images are refused with our own cap and recorded as failures; Pillow's
    # warning about them would only scribble over the progress bar.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    for path in args.paths:
        check_utf8_path(path)  # before the library is created
    executor = executor_from_args(args)
    with open_library(args.library) as library:
        with lock_library(library, args.wait):
            embedder = library.load_embedder(args.model, mode=args.mode)
            summary = index_paths(
                library,
                args.paths,
                embedder,
                batch_size=args.batch_size,
                workers=args.workers,
                progress=not args.no_progress,
                max_pixels=args.max_pixels,
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
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    print(summary.line())
    return 0


def forget_command(args: argparse.Namespace) -> int:
    folder = os.path.abspath(os.path.expanduser(args.folder))
    with open_library(args.library, create=False) as library:
        with lock_library(library):
            roots = library.store.roots()
            root = next((r for r in roots if r.path in (folder, os.path.realpath(folder))), None)
            if root is None:
                known = ", ".join(r.path for r in roots) or "none"
                raise FolderNotFoundError(
                    f"{args.folder} is not a root of this library (its roots: {known})"
                )
            removed = library.store.remove_root(root.id)
            library.vector_index()  # rebuilds and saves vectors.faiss without them
    print(f"forgot {root.path}: {removed} photos left the library; no file was touched")
    return 0


def status_command(args: argparse.Namespace) -> int:
    with open_library(args.library, create=False) as library:
        report = library_status(library)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_status(report))
    return 0


def search_command(args: argparse.Namespace) -> int:
    if not args.query and not args.image:
        raise QueryError("give a query text, or --image FILE")
    options = {
        "k": args.k,
        "min_score": args.min_score,
        "offset": args.offset,
        "sort": args.sort,
        "folder": args.folder,
        "date_from": args.date_from,
        "date_to": args.date_to,
    }
    with open_library(args.library, create=False) as library:
        searcher = Searcher(library)
        terms = parse_query(args.query) if args.query else []
        if args.image:
            if not Path(args.image).is_file():
                raise QueryError(f"image file {args.image} does not exist")
            terms.append(QueryTerm("image", Path(args.image).resolve(), 1.0))
        label = " + ".join(filter(None, [args.query, args.image]))
        page = searcher.search_vector(searcher.combine(terms), label=label, **options)
    if args.json:
        hits = [
            {"path": str(h.path), "score": h.score, "cosine": h.cosine, "id": h.id}
            for h in page.hits
        ]
        print(json.dumps(hits, indent=1, ensure_ascii=False))
    else:
        for hit in page.hits:
            print(f"{shown(str(hit.path))}\t{hit.score:.4f}")
    return 0


def tag_command(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocabulary)
    with open_library(args.library, create=False) as library:
        with lock_library(library, args.wait):
            embedder = library.load_embedder()
            summary = tag_library(
                library,
                embedder,
                vocabulary,
                args.threshold,
                args.cap or DEFAULT_CAP,
                progress=not args.no_progress,
                retag_all=args.all,
            )
    print(summary.line())
    return 0


def duplicates_command(args: argparse.Namespace) -> int:
    with open_library(args.library, create=False) as library:
        report = find_duplicates(
            library, DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        )
    if args.json:
        document = {
            "threshold": report.threshold,
            "groups": [
                {
                    "kind": g.kind,
                    "min_cosine": g.min_cosine,
                    "images": [{"id": r.id, "path": r.path} for r in g.images],
                    "exact_copies": [[r.id for r in copies] for copies in g.exact_copies],
                }
                for g in report.groups
            ],
            "blank": [{"id": r.id, "path": r.path} for r in report.blank],
        }
        print(json.dumps(document, indent=1, ensure_ascii=False))
        return 0
    for number, group in enumerate(report.groups, start=1):
        # rounded down: 0.99996 is not ">= 1.0000"
        weakest = math.floor(group.min_cosine * 10_000) / 10_000
        print(
            f"{'' if number == 1 else chr(10)}# group {number}: {group.kind}, {len(group.images)} photos, "
            f"cosine >= {weakest:.4f}"
        )
        if group.kind == "near":
            for copies in group.exact_copies:
                print("# byte-identical: " + " = ".join(shown(r.path) for r in copies))
        for row in group.images:
            print(shown(row.path))
    if report.blank:
        print(
            f"{PROG}: {len(report.blank)} blank frames left out of near-duplicate groups",
            file=sys.stderr,
        )
    return 0


def export_command(args: argparse.Namespace) -> int:
    if not args.undo and not args.format:
        raise ExportOptionError("choose --format xmp, csv, jsonl or exiftool-csv (or --undo)")
    if args.out and (args.undo or args.format == "xmp"):
        raise ExportOptionError(
            "--out is for csv, jsonl and exiftool-csv; XMP sidecars go next to the photos"
        )
    root_tag = args.root_tag or None
    with open_library(args.library, create=False) as library:
        if args.undo or args.format == "xmp":
            with lock_library(library):
                if args.undo:
                    return _print_report(
                        undo_library_xmp(library, args.dry_run), args.dry_run, undo=True
                    )
                report = export_library_xmp(library, root_tag, args.threshold, args.dry_run)
                return _print_report(report, args.dry_run, undo=False)
        rows = library_tag_rows(library, args.threshold)
    if args.dry_run:
        if args.format == "exiftool-csv":
            # a ',' exiftool would split is refused here too
            tables.exiftool_tag_paths(rows, root_tag)
        print(
            f"would write {len(rows)} tags of {len({r.path for r in rows})} photos to {args.out or 'stdout'}"
        )
    elif args.format == "csv":
        tables.write_csv(rows, args.out)
    elif args.format == "jsonl":
        tables.write_jsonl(rows, args.out)
    else:
        tables.write_exiftool_csv(rows, args.out, root_tag)
    return 0


def _print_report(report, dry_run: bool, undo: bool) -> int:
    """One line per sidecar changed (or planned), skipped ones on stderr; exit 1 if any was skipped."""
    for change in report.planned if dry_run else report.written:
        counts = []
        for verb, values in (
            ("add", change.added),
            ("remove", change.removed_keywords if undo else change.removed),
        ):
            count = len({v for vs in values.values() for v in vs})
            if count or (verb == "remove") == undo:
                counts.append(f"{'would ' + verb if dry_run else verb.rstrip('e') + 'ed'} {count}")
        print(
            f"{change.path}\t{', '.join(counts)} keywords"
            + ("; sidecar deleted" if change.deleted else "")
        )
        for note in change.notes:
            print(f"{PROG}: note: {change.path}: {note}", file=sys.stderr)
    for path in report.missing:
        print(f"{PROG}: {path} no longer exists; forgotten", file=sys.stderr)
    for path, reason in report.skipped:
        print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr)
    done = len(report.planned if dry_run else report.written)
    print(
        f"{'planned' if dry_run else 'changed'} {done} sidecars, {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if report.skipped else 0


def format_status(report: LibraryStatus, max_failures: int = 20) -> str:
    lines = [f"library   {shown(report.library)}"]
    mode = f", {report.mode}" if report.mode else ""
    identity = report.model_identity or {}
    lines.append(
        f"model     {report.model or '(none yet)'}"
        + (f" (dim {identity['dim']}{mode})" if identity else "")
    )
    lines.append(f"images    {report.images} indexed, {report.failed_count} failed")
    for i, root in enumerate(report.roots):
        state = "online " if root.online else "OFFLINE (missing or empty; images kept)"
        lines.append(
            f"{'roots' if i == 0 else '':9} {state} {shown(root.path)} ({root.images} images)"
        )
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


def add_library_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library",
        metavar="DIR",
        default=None,
        help=f"library folder (default: ${LIBRARY_ENV} or {default_library_dir()})",
    )


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
        "--model", metavar="ID_OR_PATH", help="model for a new library (default: the recorded one)"
    )
    index.add_argument(
        "--mode", default=None, help="fp32 (default), int8, bf16 or compile; fixed per library"
    )
    index.add_argument("--batch-size", type=_positive_int, default=32, metavar="N")
    index.add_argument(
        "--workers", type=_positive_int, default=None, metavar="N", help="decode threads"
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
        type=_positive_int,
        default=None,
        metavar="N",
        help="refuse larger images as decompression bombs (default: Pillow's limit)",
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
        "status", help="what a library holds: counts, model, roots, failures"
    )
    add_library_argument(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=status_command, interrupted=INTERRUPTED)
    add_reindex_command(subparsers, add_library_argument)
    _add_search(subparsers)
    _add_tag(subparsers)
    _add_duplicates(subparsers)
    _add_export(subparsers)


def _add_search(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search",
        help="find photos by text, image or combined query",
        description='Query syntax: words, "quoted text", image paths, #ID of an indexed photo, joined by + '
        'and -, with weights: "beach" + 0.5 ./ref.jpg - "people", 2:cat. Prints one path and its '
        "probability a line (or --json).",
    )
    search.add_argument("query", nargs="?", default="", metavar="QUERY")
    add_library_argument(search)
    search.add_argument(
        "-k", type=_positive_int, default=20, metavar="N", help="hits to show (default: 20)"
    )
    search.add_argument(
        "--min-score",
        type=_probability,
        default=0.0,
        metavar="P",
        help="only hits with probability >= P (default: 0)",
    )
    search.add_argument(
        "--offset", type=_non_negative_int, default=0, metavar="N", help="skip the first N hits"
    )
    search.add_argument(
        "--sort",
        choices=("score", "date"),
        default="score",
        help="by probability, or by date taken (newest first, undated last)",
    )
    search.add_argument("--folder", metavar="F", help="only photos under this folder (of a root)")
    search.add_argument(
        "--from", dest="date_from", metavar="DATE", help="taken on or after (YYYY[-MM[-DD]])"
    )
    search.add_argument(
        "--to", dest="date_to", metavar="DATE", help="taken on or before (YYYY[-MM[-DD]])"
    )
    search.add_argument(
        "--image", metavar="FILE", help="photos like this image (added to QUERY if both)"
    )
    search.add_argument(
        "--json", action="store_true", help='a JSON list of {"path", "score", "cosine", "id"}'
    )
    search.set_defaults(func=search_command, interrupted=INTERRUPTED)


def _add_tag(subparsers: argparse._SubParsersAction) -> None:
    tag = subparsers.add_parser(
        "tag",
        help="zero-shot tags for the library's photos (incremental)",
        description="Tag photos from their stored embeddings with a vocabulary (default: the bundled "
        "data/tags/vocabulary.txt). Only new or changed photos are tagged, unless the vocabulary, "
        "threshold or cap changed, or --all.",
    )
    add_library_argument(tag)
    tag.add_argument(
        "--vocabulary",
        metavar="FILE",
        help="one tag a line, or the format of data/tags/vocabulary.txt",
    )
    tag.add_argument(
        "--threshold",
        type=_tag_threshold,
        default=None,
        metavar="P",
        help="default probability threshold; tags with their own keep theirs",
    )
    tag.add_argument(
        "--cap",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N tags a photo (default: 10)",
    )
    tag.add_argument("--all", action="store_true", help="re-tag every photo")
    tag.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for an indexer to finish"
    )
    tag.add_argument("--no-progress", action="store_true", help="no progress bar")
    tag.set_defaults(func=tag_command, interrupted=INTERRUPTED)


def _add_duplicates(subparsers: argparse._SubParsersAction) -> None:
    duplicates = subparsers.add_parser(
        "duplicates",
        help="groups of duplicate and near-duplicate photos",
        description="Exact copies (same content fingerprint) and photos whose embeddings have cosine >= "
        "the threshold; blank frames are never grouped by embedding.",
    )
    add_library_argument(duplicates)
    duplicates.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="C",
        help="cosine for near-duplicates (default: 0.998, measured on the demo model)",
    )
    duplicates.add_argument("--json", action="store_true", help="machine-readable output")
    duplicates.set_defaults(func=duplicates_command, interrupted=INTERRUPTED)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="write machine tags to XMP sidecars, CSV or JSON Lines",
        description="XMP: makes each photo's sidecar hold its tags under --root-tag (dc:subject, "
        "lr:hierarchicalSubject, digiKam:TagsList), keeping everything already there and removing what "
        "earlier exports added that is no longer a tag; photos are never modified; --undo removes exactly "
        "what exports added. Exit status 1 when a sidecar was skipped.",
    )
    add_library_argument(export)
    export.add_argument("--format", choices=("xmp", "csv", "jsonl", "exiftool-csv"))
    export.add_argument(
        "--root-tag", default="AI", metavar="TAG", help='keyword root (default: AI; "" for none)'
    )
    export.add_argument(
        "--threshold",
        type=_probability,
        default=None,
        metavar="P",
        help="only tags with probability >= P (default: all stored tags)",
    )
    export.add_argument(
        "--dry-run", action="store_true", help="show what would change, change nothing"
    )
    export.add_argument(
        "--out", metavar="FILE", help="csv/jsonl/exiftool-csv output file (default: stdout)"
    )
    export.add_argument(
        "--undo", action="store_true", help="remove the keywords earlier XMP exports added"
    )
    export.set_defaults(func=export_command, interrupted=INTERRUPTED)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text}")
    return value


def _tag_threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:  # as tag_library: 0 would tag every photo with every tag, 1 with none
        raise argparse.ArgumentTypeError(f"must be a probability above 0 and below 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
