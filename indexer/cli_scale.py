"""The command line of running at scale (docs/scale.md): `index`'s executor options (--executor ray,
--ray-address, --actors, --gpus-per-actor) and the `reindex` command."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from siglip_search.cli import PROG

from .errors import ExecutorError
from .ivf import DEFAULT_NPROBE, IvfIndex
from .library import Library, lock_library, open_library
from .ray_executor import RayExecutor
from .reindex import KINDS, reindex_library

EXECUTORS = ("local", "ray")
# `index` suggests a reindex once this share of the photos is searched from memory or tombstoned.
REBUILD_HINT_FRACTION = 0.25


def add_executor_arguments(parser: argparse.ArgumentParser, where: str) -> None:
    """--executor and the Ray options; `where` says what the executor does, for the help."""
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help=f"{where}: this process (local, the default) or a Ray cluster (ray)",
    )
    ray = parser.add_argument_group("Ray (with --executor ray; docs/scale.md)")
    ray.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        default=None,
        help="the Ray head to join, or auto for the one `ray start` made on this machine "
        "(default: $RAY_ADDRESS, else a Ray started for this command)",
    )
    ray.add_argument(
        "--actors",
        type=_positive_int,
        default=None,
        metavar="N",
        help="model replicas (default: as many as the GPUs hold, else one per node)",
    )
    ray.add_argument(
        "--gpus-per-actor",
        type=_positive_float,
        default=0.0,
        metavar="F",
        help="GPUs each model replica takes, e.g. 1 or 0.5 (default: 0, on CPUs)",
    )


def executor_from_args(args: argparse.Namespace) -> RayExecutor | None:
    """The executor the options ask for: None runs here."""
    if args.executor == "ray":
        executor = RayExecutor(args.ray_address, args.actors, args.gpus_per_actor)
        executor.check()  # before the model loads and the folders are scanned
        return executor
    given = [
        flag
        for flag, value in (
            ("--ray-address", args.ray_address),
            ("--actors", args.actors),
            ("--gpus-per-actor", args.gpus_per_actor),
        )
        if value
    ]
    if given:
        raise ExecutorError(f"{', '.join(given)} need --executor ray")
    return None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def reindex_command(args: argparse.Namespace) -> int:
    executor = executor_from_args(args)
    with open_library(args.library, create=False, database=args.database) as library:
        with lock_library(library, args.wait, command="reindex"):
            summary = reindex_library(
                library,
                args.index,
                shards=args.shards,
                executor=executor,
                factory=args.factory,
                nprobe=args.nprobe,
            )
            library.vector_index()  # maps the new index now: a broken build fails here, not later
    print(summary.line())
    return 0


def index_notes(library: Library) -> list[str]:
    """After `index`: whether the on-disk index should be rebuilt to fold in what changed."""
    index = library.vector_index()
    if not isinstance(index, IvfIndex) or index.changed_fraction <= REBUILD_HINT_FRACTION:
        return [library.index_problem] if library.index_problem else []
    added, tombstones = index.changes()
    return [
        f"the ivfpq index was built before {added} photos were added or changed and {tombstones} "
        f"left it; `{PROG} reindex --index ivfpq` folds them in"
    ]


def add_reindex_command(
    subparsers: argparse._SubParsersAction,
    add_library_argument: Callable[[argparse.ArgumentParser], None],
) -> None:
    reindex = subparsers.add_parser(
        "reindex",
        help="choose the vector index: ivfpq builds a sharded on-disk index for millions of photos",
        description="Build the library's vector index from its stored embeddings. ivfpq: an IVF "
        "index with PQ codes, trained on a sample, filled in shards in parallel, merged on disk "
        "and searched memory-mapped, candidates re-ranked exactly (docs/scale.md). auto: back to "
        "the default (exact, approximate above 50,000 photos). The choice is recorded in the "
        "library; photos indexed or removed later are searched too, from memory, until the next "
        "reindex.",
    )
    add_library_argument(reindex)
    reindex.add_argument("--index", choices=KINDS, default="ivfpq", help="ivfpq (default) or auto")
    reindex.add_argument(
        "--shards",
        type=_positive_int,
        default=max(1, min(8, os.cpu_count() or 1)),
        metavar="N",
        help="shards filled in parallel (default: the CPU count, at most 8)",
    )
    reindex.add_argument(
        "--factory",
        default=None,
        metavar="SPEC",
        help="FAISS index_factory string of an IVF index, e.g. IVF4096,PQ96x4 (default: about "
        "2 x sqrt(photos) lists and 4-bit PQ codes of dim/8 bytes)",
    )
    reindex.add_argument(
        "--nprobe",
        type=_positive_int,
        default=DEFAULT_NPROBE,
        metavar="N",
        help=f"lists a search probes (default: {DEFAULT_NPROBE})",
    )
    reindex.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for an indexer to finish (default: 0)",
    )
    add_executor_arguments(reindex, "where the shards are filled")
    reindex.set_defaults(
        func=reindex_command, interrupted="interrupted; the index was left as it was"
    )
