"""What the library commands share: the --library option, argument types, the Ctrl-C message."""

from __future__ import annotations

import argparse

from .library import DATABASE_ENV, LIBRARY_ENV, default_database, default_library_dir

# What Ctrl-C prints for the library commands: indexing and tagging commit batch by batch, so the same
# command run again resumes where the interrupted one stopped.
INTERRUPTED = "interrupted; run the same command again to resume"


def add_library_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library",
        metavar="DIR",
        default=None,
        help=f"library folder (default: ${LIBRARY_ENV} or {default_library_dir()}); with --database, "
        "the folder of this machine's own files",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        default=default_database(),
        help="keep the library on a PostgreSQL server, e.g. postgresql://USER@HOST/DATABASE "
        f"(default: ${DATABASE_ENV} if set, else an SQLite file in the library folder)",
    )


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text}")
    return value


def tag_threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:  # as tag_library: 0 would tag every photo with every tag, 1 with none
        raise argparse.ArgumentTypeError(f"must be a probability above 0 and below 1, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
