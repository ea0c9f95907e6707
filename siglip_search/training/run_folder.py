"""The training output folder: what it may hold before a run starts or resumes, and its files.

A folder is trained into only when it is new, empty or a run of the same options; so another model's
folder (a hub download, the shipped demo model) is never overwritten, and a resumed run never mixes
two recipes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_atomic
from ..errors import CheckpointError, InputError
from ..image_processor import SiglipImageProcessor
from ..tokenizer import SiglipTokenizer
from . import synthetic
from .options import TrainConfig

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
SKIPPED_FILE = "skipped_images.txt"
ARGS_FILE = "training_args.json"  # the run's options; also what marks a folder as a training run
# Options that may change when a run is resumed: they change how, not what, it trains.
RESUMABLE_OPTIONS = {
    "out_dir",
    "steps",
    "checkpoint_every",
    "workers",
    "threads",
    "device",
    "progress",
    "tokenizer",
}


def prepare_output(cfg: TrainConfig) -> tuple[SiglipTokenizer, SiglipImageProcessor]:
    """Tokenizer and processor files in out_dir (kept on resume, so ids never change mid-run).

    Nothing is written before out_dir is known to be new, empty or a run of these same options:
    training writes model.safetensors and config.json, so another model's folder would be overwritten.
    """
    out = cfg.out_dir
    previous = _previous_options(out)
    text_len = cfg.model_config["text_config"].get("max_position_embeddings", 64)
    image_size = cfg.model_config["vision_config"].get("image_size", 224)
    spiece = (
        out / "spiece.model" if (out / "spiece.model").is_file() and previous is not None else None
    )
    if spiece is None and not cfg.tokenizer and cfg.data != "synthetic":
        raise InputError(
            "training on a folder needs --tokenizer SPIECE_MODEL (e.g. from a hub checkpoint)"
        )
    if (
        spiece is not None
        and cfg.tokenizer
        and Path(cfg.tokenizer).read_bytes() != spiece.read_bytes()
    ):
        raise InputError(
            f"{out} holds a run with another tokenizer than {cfg.tokenizer}: resume without "
            "--tokenizer or with the same file, or pick a new --out"
        )
    tokenizer_file = spiece or cfg.tokenizer
    if tokenizer_file:  # before the options are compared with the run's: they hold these
        _set_special_ids(cfg, SiglipTokenizer(tokenizer_file))
    if previous is not None:
        _check_same_options(previous, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if previous is None:
        # marks the folder as a run
        write_atomic(out / ARGS_FILE, (json.dumps(cfg.to_json(), indent=2) + "\n").encode())
    if not (out / "spiece.model").is_file():
        if cfg.tokenizer:
            with atomic_path(out / "spiece.model") as temp:
                shutil.copyfile(cfg.tokenizer, temp)
        else:
            synthetic.train_sentencepiece(
                synthetic.caption_corpus(cfg.seed, 20000),
                out / "spiece.model",
                vocab_size=cfg.model_config["text_config"].get("vocab_size", 128),
            )
    tokenizer = SiglipTokenizer(
        out / "spiece.model", model_max_length=text_len, model_input_names=["input_ids"]
    )
    tokenizer.save_pretrained(out)
    processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    processor.save_pretrained(out)
    _set_special_ids(cfg, tokenizer)
    return tokenizer, processor


def _set_special_ids(cfg: TrainConfig, tokenizer: SiglipTokenizer) -> None:
    """The vocabulary size and special ids of this tokenizer into the model's text config, not
    transformers' CLIP-era defaults (49406/49407), which lie outside a small vocabulary and make
    transformers warn on every load."""
    cfg.model_config["text_config"].update(
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def _previous_options(out: Path) -> dict[str, Any] | None:
    """The options of the run out_dir holds; None for a new or empty folder; refuses anything else."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not names:
        return None
    if ARGS_FILE not in names:
        raise InputError(
            f"--out {out} holds files that siglip-search train did not write ({', '.join(names[:4])}"
            f"{', ...' if len(names) > 4 else ''}); training would overwrite them: pick a new or empty folder"
        )
    if STATE_FILE not in names and any(n.endswith(".safetensors") for n in names):
        raise InputError(
            f"--out {out} holds a finished model without its trainer state (finalized), which cannot "
            "be resumed: pick a new or empty folder"
        )
    try:
        options = json.loads((out / ARGS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"cannot read {out / ARGS_FILE} ({exc}); delete {out} to start over"
        ) from None
    return options if isinstance(options, dict) else {}


def _check_same_options(previous: dict[str, Any], cfg: TrainConfig) -> None:
    """A resumed run must train the same thing, or its checkpoints mix two recipes."""
    current, previous = _without_tokenizer_ids(cfg.to_json()), _without_tokenizer_ids(previous)
    differ = [
        k
        for k in current
        if k not in RESUMABLE_OPTIONS and k in previous and previous[k] != current[k]
    ]
    if differ:
        what = "; ".join(
            f"{k} {_short(previous[k])} there, {_short(current[k])} here" for k in differ
        )
        raise InputError(
            f"--out {cfg.out_dir} holds a run with other options ({what}): resume with the same "
            "options (only --steps and how to run may change) or pick a new --out"
        )


def _without_tokenizer_ids(options: dict[str, Any]) -> dict[str, Any]:
    """The vocabulary size and special ids follow spiece.model, which a resumed run keeps (checked
    on its own)."""
    options = json.loads(json.dumps(options))
    if isinstance(options.get("model_config"), dict) and isinstance(
        options["model_config"].get("text_config"), dict
    ):
        for key in ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id"):
            options["model_config"]["text_config"].pop(key, None)
    return options


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def open_log(path: Path, start: int):
    """The loss log, holding each step once: a resumed run drops the steps after its checkpoint,
    which it trains again."""
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] < start:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
    path.write_text("".join(kept), encoding="utf-8")
    return open(path, "a", encoding="utf-8")
