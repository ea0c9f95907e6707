"""`siglip-search tag` and `export`: argument parsing and output."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timezone

from siglip_search.cli import PROG, add_device_argument, add_mode_argument

from .cli_options import INTERRUPTED, add_library_argument, positive_int, probability, tag_threshold
from .errors import ExportOptionError
from .export import SIDECAR_NAMINGS, export_library_xmp, library_tag_rows, tables, undo_library_xmp
from .library import lock_library, open_library
from .names import shown
from .tags import DEFAULT_CAP, forget_rejections, tag_library
from .vocabulary import load_vocabulary

EXIT_PARTIAL = 1  # export: some sidecars were skipped (each reported on stderr)


def tag_command(args: argparse.Namespace) -> int:
    if args.rejections:
        return _print_rejections(args)
    vocabulary = load_vocabulary(args.vocabulary)
    with open_library(args.library, create=False, database=args.database) as library:
        with lock_library(library, args.wait, command="tag"):
            embedder = library.load_embedder(mode=args.mode, device=args.device)
            clearing = args.clear_rejections is not None
            tag = None if args.clear_rejections is True else args.clear_rejections
            cleared = forget_rejections(library, tag) if clearing else 0
            summary = tag_library(
                library,
                embedder,
                vocabulary,
                args.threshold,
                args.cap or DEFAULT_CAP,
                progress=not args.no_progress,
                retag_all=args.all or bool(cleared),
            )
    if clearing:
        again = "; every photo was tagged again" if cleared else ""
        print(f"forgot {cleared} rejected tags{again}")
    print(summary.line())
    return 0


def _print_rejections(args: argparse.Namespace) -> int:
    """`tag --rejections`: the tags the user rejected, a photo and tag a line (or --json)."""
    with open_library(args.library, create=False, database=args.database) as library:
        rows = list(library.store.iter_rejections())
    if args.json:
        document = [
            {
                "path": r.path,
                "id": r.image_id,
                "tag": r.tag,
                "source": r.source,
                "rejected_at": r.rejected_at.replace(tzinfo=timezone.utc).isoformat(),
            }
            for r in rows
        ]
        print(json.dumps(document, indent=1, ensure_ascii=False))
        return 0
    for r in rows:
        where = "removed from its sidecar" if r.source == "sidecar" else "rejected in the app"
        print(f"{shown(r.path)}\t{r.tag}\t{where} {r.rejected_at:%Y-%m-%d %H:%M} UTC")
    print(
        f"{len(rows)} rejected tags on {len({r.image_id for r in rows})} photos; "
        "`tag --clear-rejections [TAG]` forgets them",
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
    with open_library(args.library, create=False, database=args.database) as library:
        if args.undo or args.format == "xmp":
            with lock_library(library, command="export"):
                if args.undo:
                    return _print_report(
                        undo_library_xmp(library, args.dry_run), args.dry_run, undo=True
                    )
                report = export_library_xmp(
                    library,
                    root_tag,
                    args.threshold,
                    args.dry_run,
                    naming=args.sidecar_name,
                    ancestors=not args.no_ancestors,
                )
                for photo, tag_path in report.rejected:
                    verb = "would record" if args.dry_run else "recorded"
                    print(
                        f"{PROG}: {shown(str(photo))}: you removed {'|'.join(tag_path)!r} from its "
                        f"sidecar; {verb} as rejected, not written again",
                        file=sys.stderr,
                    )
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
        tables.write_exiftool_csv(rows, args.out, root_tag, ancestors=not args.no_ancestors)
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
            f"{shown(str(change.path))}\t{', '.join(counts)} keywords"
            + ("; sidecar deleted" if change.deleted else "")
        )
        for note in change.notes:
            print(f"{PROG}: note: {shown(str(change.path))}: {shown(note)}", file=sys.stderr)
    for path in report.missing:
        print(f"{PROG}: {shown(str(path))} no longer exists; forgotten", file=sys.stderr)
    for path, reason in report.skipped:
        print(f"{PROG}: skipped {shown(str(path))}: {shown(reason)}", file=sys.stderr)
    done = len(report.planned if dry_run else report.written)
    print(
        f"{'planned' if dry_run else 'changed'} {done} sidecars, {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if report.skipped else 0


def add_tag_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_tag(subparsers)
    _add_export(subparsers)


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
        type=tag_threshold,
        default=None,
        metavar="P",
        help="default probability threshold; tags with their own keep theirs",
    )
    tag.add_argument(
        "--cap",
        type=positive_int,
        default=None,
        metavar="N",
        help="at most N tags a photo (default: 10)",
    )
    tag.add_argument("--all", action="store_true", help="re-tag every photo")
    tag.add_argument(
        "--rejections",
        action="store_true",
        help="list the tags you rejected (removed in a photo manager, or in the web app); tag nothing",
    )
    tag.add_argument(
        "--clear-rejections",
        nargs="?",
        const=True,
        default=None,
        metavar="TAG",
        help="forget the tags you rejected (only TAG, when given) and re-tag every photo",
    )
    tag.add_argument("--json", action="store_true", help="with --rejections: machine-readable")
    tag.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for an indexer to finish"
    )
    tag.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mode_argument(tag)
    add_device_argument(tag)
    tag.set_defaults(func=tag_command, interrupted=INTERRUPTED)


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
        type=probability,
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
    export.add_argument(
        "--sidecar-name",
        choices=SIDECAR_NAMINGS,
        default="auto",
        help="auto (default): an existing sidecar's name, else IMG.xmp for RAW files (Lightroom, "
        "Capture One) and IMG.jpg.xmp for the rest (digiKam, darktable, Immich)",
    )
    export.add_argument(
        "--no-ancestors",
        action="store_true",
        help="write each tag alone, not also its parents (no bare AI keyword on every photo)",
    )
    export.set_defaults(func=export_command, interrupted=INTERRUPTED)
