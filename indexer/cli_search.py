"""`siglip-search search` and `duplicates`: argument parsing and output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from siglip_search.cli import PROG, add_device_argument, add_mode_argument

from .cli_options import (
    INTERRUPTED,
    add_library_argument,
    non_negative_int,
    positive_int,
    probability,
)
from .duplicates import DEFAULT_THRESHOLD, find_duplicates
from .errors import QueryError
from .library import open_library
from .names import shown
from .query import QueryTerm, parse_query
from .scores import format_scores
from .search import COSINE, PROBABILITY, Searcher, score_kind_of

# What `search` says on stderr about the second column (--json says it per hit: "score_kind").
SCORE_NOTES = {
    PROBABILITY: "scores are SigLIP probabilities, sigmoid(t*cosine + b), that a photo matches the text",
    COSINE: "scores are cosine similarities (-1..1): a query with a picture in it has no probability",
}


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
        "camera": args.camera,
        "lens": args.lens,
        "has_gps": args.has_gps,
        "tag": args.tag,
        "rejected": args.rejected,
    }
    with open_library(args.library, create=False, database=args.database) as library:
        searcher = Searcher(library, mode=args.mode, device=args.device)
        terms = parse_query(args.query) if args.query else []
        if args.image:
            if not Path(args.image).is_file():
                raise QueryError(f"image file {args.image} does not exist")
            terms.append(QueryTerm("image", Path(args.image).resolve(), 1.0))
        label = " + ".join(filter(None, [args.query, args.image]))
        kind = score_kind_of(terms)
        page = searcher.search_vector(
            searcher.combine(terms), label=label, score_kind=kind, **options
        )
    if args.json:
        hits = [
            {
                "path": str(h.path),
                "score": h.score,
                "score_kind": h.score_kind,
                "cosine": h.cosine,
                "id": h.id,
                "taken_at": h.taken_at,
                "camera": h.camera,
                "lens": h.lens,
                "gps": None if h.latitude is None else [h.latitude, h.longitude],
            }
            for h in page.hits
        ]
        print(json.dumps(hits, indent=1, ensure_ascii=False))
        return 0
    print(f"{PROG}: {SCORE_NOTES[kind]}", file=sys.stderr)
    for hit, score in zip(page.hits, format_scores([h.score for h in page.hits]), strict=True):
        print(f"{shown(str(hit.path))}\t{score}")
    return 0


def duplicates_command(args: argparse.Namespace) -> int:
    with open_library(args.library, create=False, database=args.database) as library:
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


def add_search_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_search(subparsers)
    _add_duplicates(subparsers)


def _add_search(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search",
        help="find photos by text, image or combined query",
        description='Query syntax: words, "quoted text", image paths, #ID of an indexed photo, joined by + '
        'and -, with weights: "beach" + 0.5 ./ref.jpg - "people", 2:cat. Prints one path and its '
        "score a line (or --json): SigLIP's probability for a text query, the cosine similarity when "
        "a picture is in the query (stderr says which).",
    )
    search.add_argument("query", nargs="?", default="", metavar="QUERY")
    add_library_argument(search)
    search.add_argument(
        "-k", type=positive_int, default=20, metavar="N", help="hits to show (default: 20)"
    )
    search.add_argument(
        "--min-score",
        type=probability,
        default=0.0,
        metavar="P",
        help="only hits scoring >= P (probability for text, cosine with a picture; default: 0)",
    )
    search.add_argument(
        "--offset", type=non_negative_int, default=0, metavar="N", help="skip the first N hits"
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
        "--camera", metavar="TEXT", help="only photos whose camera make or model holds TEXT"
    )
    search.add_argument("--lens", metavar="TEXT", help="only photos whose lens holds TEXT")
    gps = search.add_mutually_exclusive_group()
    gps.add_argument(
        "--has-gps",
        dest="has_gps",
        action="store_const",
        const=True,
        help="only photos with a GPS position",
    )
    gps.add_argument(
        "--no-gps",
        dest="has_gps",
        action="store_const",
        const=False,
        help="only photos without one",
    )
    search.add_argument(
        "--tag", metavar="TAG", help="only photos with this machine tag (dog, or animal|dog)"
    )
    search.add_argument(
        "--rejected",
        nargs="?",
        const=True,
        default=None,
        metavar="TAG",
        help="only photos where you rejected TAG (any tag without TAG)",
    )
    search.add_argument(
        "--image", metavar="FILE", help="photos like this image (added to QUERY if both)"
    )
    search.add_argument(
        "--json",
        action="store_true",
        help='a JSON list of {"path", "score", "score_kind", "cosine", "id", "taken_at", "camera", '
        '"lens", "gps"}',
    )
    add_mode_argument(search)
    add_device_argument(search)
    search.set_defaults(func=search_command, interrupted=INTERRUPTED)


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
