"""The `siglip-search` command line: model commands here, more registered by other packages.

Commands of the indexer and the web UI are registered through the `siglip_search.commands`
entry-point group, so this package never imports them. `main` is the one place where errors become
exit codes, for every command: a typed error is one line and exit status 2, Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__
from .errors import InputError, SiglipSearchError
from .modes import AUTO, CHOICES
from .prog import PROG
from .resources import DEMO_MODEL, EVAL_SET

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a SigLIP model with the sigmoid loss (resumable)")
    p.add_argument(
        "--out", type=Path, required=True, help="checkpoint directory (resumes if it holds one)"
    )
    p.add_argument(
        "--data", default="synthetic", help="'synthetic' or a folder with captions.jsonl/.csv"
    )
    p.add_argument("--tokenizer", help="spiece.model to use (required for folder data)")
    p.add_argument(
        "--config", type=Path, help="config.json for the model (default: the demo model's)"
    )
    # Training options default to None: TrainConfig holds the defaults, which reproduce the demo model.
    p.add_argument("--steps", type=int, help="total steps (default 3600)")
    p.add_argument("--batch-size", type=int, help="pairs per step (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-4)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        help="linear warm-up, again when the text tower unlocks (default 100)",
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument(
        "--checkpoint-every", type=int, help="steps between resumable checkpoints (default 250)"
    )
    p.add_argument("--workers", type=int, help="data-loading processes (default 1)")
    p.add_argument(
        "--threads", type=int, help="torch threads and rendering processes (default: all cores)"
    )
    p.add_argument("--device", help="default cpu")
    p.add_argument(
        "--twins",
        action="store_true",
        default=None,
        help="half of each batch are shape twins of the other half (renders every batch)",
    )
    p.add_argument(
        "--lock-text-steps",
        type=int,
        help="first train the image tower against a frozen, whitened text tower; synthetic data then "
        "shows single objects with short captions (default 1200)",
    )
    p.add_argument(
        "--text-lr-scale",
        type=float,
        help="text tower learning rate relative to --lr once unlocked (default 1/3)",
    )
    p.add_argument(
        "--pool-size",
        type=int,
        help="synthetic data: scenes rendered once, in parallel, and reused with fresh captions; "
        "0 renders every batch anew, at half the speed on 2 cores (default 80000, 2.2 GB at 96 px)",
    )
    p.add_argument("--eval", type=Path, help="evaluate on this held-out folder at the end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    # Imported when run: training imports torch (seconds), which no other command's parsing needs.
    from .training.loop import train
    from .training.options import TrainConfig

    # Every option named like a TrainConfig field and given on the command line; the rest keep its defaults.
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    cfg = TrainConfig(out_dir=args.out, progress=not args.no_progress, **given)
    if args.config:
        cfg.model_config = _read_model_config(args.config)
    if args.eval:
        from .training.evaluate import load_eval_set

        load_eval_set(args.eval)  # before training, not after it: the evaluation ends the run
    out = train(cfg)
    print(f"checkpoint: {out}")
    if args.eval:
        return _print_eval(out, args.eval, json_output=False)
    return 0


def _read_model_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read --config {path}: {exc}") from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device, for every command that runs the model."""
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (default: a CUDA GPU, else Apple's MPS, else the CPU), "
        "cpu, cuda, cuda:N or mps",
    )


def add_mode_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    """--mode for every command that embeds (eval here; index, search, tag, serve and demo)."""
    parser.add_argument(
        "--mode",
        choices=CHOICES,
        default=AUTO,
        help="auto (default): the fastest mode whose vectors are interchangeable with fp32 on "
        "this device (fp16 on a GPU; on the CPU e.g. int8 images with AVX2). fp32: exact, the "
        "slowest; fp16, bf16: half the memory and faster on a GPU (bf16 also on CPUs with bf16 "
        "units); int8 (the CPU only): images about 2-3.5x faster "
        "than fp32, texts stay fp32; compile: torch.compile, a slow first batch, then somewhat "
        f"faster{what}",
    )


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="zero-shot accuracy, recall@k and tagging P/R on a held-out synthetic set"
    )
    p.add_argument("--model", default=str(DEMO_MODEL), help="checkpoint directory or hub id")
    p.add_argument("--data", type=Path, default=EVAL_SET, help="folder with captions.jsonl")
    add_mode_argument(p)
    add_device_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: _print_eval(a.model, a.data, a.json, a.mode, a.device))


def _print_eval(
    model, data: Path, json_output: bool, mode: str | None = None, device: str = "auto"
) -> int:
    # Imported when run, as for train: the embedder imports torch.
    from .embedder import Embedder
    from .training.evaluate import evaluate

    report = evaluate(Embedder.from_pretrained(model, mode=mode, device=device), Path(data))
    if json_output:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The root command. A subcommand sets `func` (args -> exit status) and may override the defaults
    `interrupted` (what Ctrl-C prints) and `reported_errors` (exception types, besides
    SiglipSearchError, that are the user's to fix and so are reported as one line)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.set_defaults(interrupted="interrupted", reported_errors=())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub)
    for entry in sorted(entry_points(group="siglip_search.commands"), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its errors become one line on stderr and an exit status, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SiglipSearchError, *args.reported_errors) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: {args.interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `siglip-search search ... | head`: the reader left early, which is not an error. Point
        # stdout at /dev/null so Python's exit-time flush does not complain again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
