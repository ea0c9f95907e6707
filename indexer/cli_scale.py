"""The command line of running at scale (docs/scale.md): `index`'s executor options (--executor ray,
--ray-address, --actors, --gpus-per-actor) and the `reindex` command."""

from __future__ import annotations

import argparse

from .errors import ExecutorError
from .ray_executor import RayExecutor

EXECUTORS = ("local", "ray")


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
