"""Train a SigLIP model with the sigmoid loss: AdamW, warm-up + cosine, resumable HF checkpoints.

Single process by default; under torchrun (WORLD_SIZE > 1) it runs data-parallel with the
chunked distributed sigmoid loss, so no process builds the global logit matrix.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..atomic import atomic_path, write_atomic
from ..config import SiglipConfig
from ..devices import resolve_device
from ..errors import CheckpointError, InputError
from ..image_processor import SiglipImageProcessor
from ..loss import distributed_sigmoid_loss, sigmoid_loss
from ..model import SiglipModel
from ..prog import PROG
from ..tokenizer import SiglipTokenizer
from . import synthetic
from .data import CaptionFolderSource, StepBatches, SyntheticSource
from .options import TrainConfig
from .run_folder import ARGS_FILE, LOG_FILE, SKIPPED_FILE, STATE_FILE, open_log, prepare_output


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Warm-up, then cosine to zero. With a locked-text phase: warm-up and constant during the lock,
    then warm-up again (the text tower starts to learn) and cosine over the rest."""
    lock = min(cfg.lock_text_steps, cfg.steps)
    start, end = (0, lock) if step < lock else (lock, cfg.steps)
    k = step - start
    if k < cfg.warmup_steps:
        return cfg.lr * (k + 1) / cfg.warmup_steps
    if step < lock:
        return cfg.lr
    progress = (k - cfg.warmup_steps) / max(1, end - start - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save(model: SiglipModel, optimizer, step: int, cfg: TrainConfig) -> None:
    """The trainer state first, atomically: it holds the weights, the optimizer and the step, so a run
    killed at any moment resumes from one consistent file. Then the exported Hugging Face weights.
    Only plain data goes into the state (cfg.to_json() turns paths into strings), so that _resume can
    load it with weights_only=True."""
    state = {
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "config": cfg.to_json(),
    }
    state["optimizer"]["state"] = {
        k: {n: t.cpu() if isinstance(t, torch.Tensor) else t for n, t in v.items()}
        for k, v in state["optimizer"]["state"].items()
    }
    try:
        with atomic_path(cfg.out_dir / STATE_FILE) as temp:
            torch.save(state, temp)
        model.save_pretrained(cfg.out_dir)
    # torch.save reports a failed write (a full disk) as RuntimeError
    except (OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot write the step {step} checkpoint in {cfg.out_dir} ({reason}); "
            "the last complete checkpoint is kept and a rerun resumes from it"
        ) from None


def _resume(model: SiglipModel, optimizer, cfg: TrainConfig) -> int:
    state_path = cfg.out_dir / STATE_FILE
    if not state_path.is_file():
        return 0
    try:
        # weights_only: the state holds only tensors, dicts, lists, tuples, strings and numbers (see _save),
        # so unpickling runs no code from the file
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    # torch.load raises anything from EOFError to UnpicklingError on a damaged file
    except Exception as exc:
        raise CheckpointError(
            f"{state_path} is damaged ({type(exc).__name__}: {exc}); delete {cfg.out_dir} "
            "to start over"
        ) from None
    # Trainer states written before the weights moved into them: the weights file next to them.
    weights = (
        state["model"]
        if "model" in state
        else SiglipModel.from_pretrained(cfg.out_dir).state_dict()
    )
    model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    step = int(state["step"])
    if step > cfg.steps:
        raise InputError(
            f"{cfg.out_dir} is already trained to step {step}; --steps {cfg.steps} is fewer "
            f"(pass --steps {step} or more to continue it)"
        )
    return step


def _optimizer(model: SiglipModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases, norms, embeddings' scalars and the learned temperature/bias.
    groups = []
    for text in (False, True):
        for decay in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if n.startswith("text_model.") == text
                and (p.ndim >= 2 and "probe" not in n) == decay
            ]
            groups.append(
                {
                    "params": params,
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "lr_scale": cfg.text_lr_scale if text else 1.0,
                }
            )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _lock_text(model: SiglipModel, locked: bool) -> None:
    """A frozen tower gets no gradients, so AdamW leaves it (and its moments) untouched."""
    for p in model.text_model.parameters():
        p.requires_grad_(not locked)


@torch.no_grad()
def whiten_text_start(model: SiglipModel, tokenizer: SiglipTokenizer, captions: list[str]) -> None:
    """Spread a randomly initialised text tower's outputs before it is locked.

    At a random start every caption's embedding is nearly the same vector (pooling reads the last
    position, a pad for short captions): the five shape prompts sit at cosine 0.99. A frozen tower
    like that leaves the image tower almost nothing to align to. So: zero the pad embedding, shrink
    the position embeddings, and set the text head to whiten the pooled features of `captions`
    (their mean becomes the origin, their covariance the identity); the shape prompts then sit at
    cosine 0.5 or less.
    """
    embeddings = model.text_model.embeddings
    embeddings.token_embedding.weight[tokenizer.pad_token_id].zero_()
    embeddings.position_embedding.weight.mul_(0.1)
    ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    head = model.text_model.head
    pooled = model.text_model(ids).last_hidden_state[:, -1].double()  # what the head reads
    mean = pooled.mean(0)
    cov = torch.cov((pooled - mean).T) + 1e-4 * torch.eye(pooled.shape[1], dtype=pooled.dtype)
    values, vectors = torch.linalg.eigh(cov)
    whiten = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    weight = head.weight.double() @ whiten / math.sqrt(pooled.shape[1])
    head.weight.copy_(weight.float())
    head.bias.copy_((-weight @ mean).float())


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the checkpoint directory."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    cfg.validate()
    if cfg.data != "synthetic":
        # the same folder, however a resume names it
        cfg.data = str(Path(cfg.data).expanduser().resolve())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if rank == 0:
        prepare_output(cfg)
    if distributed:
        dist.barrier()
    # Every process reads the files rank 0 wrote, so all use the same ids and preprocessing.
    tokenizer = SiglipTokenizer.from_pretrained(cfg.out_dir)
    processor = SiglipImageProcessor.from_pretrained(cfg.out_dir)
    cfg.model_config["text_config"]["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(cfg.seed)
    model = SiglipModel(SiglipConfig.from_dict(cfg.model_config))
    model.init_weights()
    source = (
        SyntheticSource(
            processor.size["height"],
            tokenizer.model_max_length - 1,
            twins=cfg.twins,
            short_steps=cfg.lock_text_steps,
        )
        if cfg.data == "synthetic"
        else CaptionFolderSource(cfg.data, threads=cfg.threads)
    )
    if rank == 0 and isinstance(source, CaptionFolderSource) and source.skipped:
        _report_skipped(cfg, source)
    # a resumed run loads its weights
    if cfg.lock_text_steps and not (cfg.out_dir / STATE_FILE).is_file():
        whiten_text_start(model, tokenizer, _whitening_captions(cfg, source))
    optimizer = _optimizer(model, cfg)
    start = _resume(model, optimizer, cfg)
    device = resolve_device(cfg.device) or torch.device("cpu")  # "auto": CUDA, MPS, else the CPU
    model.to(device).train()
    _move_optimizer_state(optimizer, device)

    if cfg.pool_size and isinstance(source, SyntheticSource):
        source.prerender(
            cfg.pool_size,
            cfg.seed * 1000 + rank,
            processes=cfg.threads,
            resample=processor.resample,
            progress=cfg.progress and rank == 0,
        )
    batches = StepBatches(source, processor, tokenizer, cfg.batch_size, cfg.seed, rank, cfg.steps)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, range(start, cfg.steps)),
        batch_size=None,
        num_workers=cfg.workers,
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not cfg.progress or rank != 0,
        unit="step",
        dynamic_ncols=True,
    )
    began, seen, step = time.perf_counter(), 0, start
    log = open_log(cfg.out_dir / LOG_FILE, start) if rank == 0 else None
    locked = None
    for step, (pixels, ids, positives) in enumerate(loader, start=start):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg) * group["lr_scale"]
        if locked != (step < cfg.lock_text_steps):
            locked = step < cfg.lock_text_steps
            _lock_text(model, locked)
            # DDP registers the parameters that need gradients when it is built: rebuild on unlock.
            ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
        pixels, ids, positives = pixels.to(device), ids.to(device), positives.to(device)
        loss = _loss(ddp, model, pixels, ids, positives, distributed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += len(ids) * (dist.get_world_size() if distributed else 1)
        bar.set_postfix(
            loss=f"{loss.item():.3f}",
            pairs_s=f"{seen / (time.perf_counter() - began):.0f}",
            t=f"{model.logit_scale.exp().item():.1f}",
            b=f"{model.logit_bias.item():.1f}",
        )
        bar.update(1)
        if log is not None:
            log.write(
                json.dumps(
                    {"step": step, "loss": round(loss.item(), 5), "lr": learning_rate(step, cfg)}
                )
                + "\n"
            )
            log.flush()
        if rank == 0 and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save(model, optimizer, step + 1, cfg)
    bar.close()
    if log is not None:
        log.close()
    if rank == 0:
        _save(model, optimizer, cfg.steps, cfg)
        write_atomic(cfg.out_dir / ARGS_FILE, (json.dumps(cfg.to_json(), indent=2) + "\n").encode())
    if distributed:
        dist.barrier()
    return cfg.out_dir


def _report_skipped(cfg: TrainConfig, source: CaptionFolderSource) -> None:
    """Left-out pairs, counted on stderr and listed in skipped_images.txt, so a bad file is findable."""
    (cfg.out_dir / SKIPPED_FILE).write_text(
        "".join(f"{name}\t{why}\n" for name, why in source.skipped), encoding="utf-8"
    )
    first = ", ".join(name for name, _ in source.skipped[:3])
    print(
        f"{PROG}: skipped {len(source.skipped)} of {len(source.skipped) + len(source.pairs)} "
        f"image-caption pairs that cannot be used ({first}{', ...' if len(source.skipped) > 3 else ''}; "
        f"reasons in {cfg.out_dir / SKIPPED_FILE})",
        file=sys.stderr,
        flush=True,
    )


def _whitening_captions(
    cfg: TrainConfig, source: SyntheticSource | CaptionFolderSource
) -> list[str]:
    """The captions the locked text tower will see: synthetic ones, or the folder's own."""
    if isinstance(source, CaptionFolderSource):
        return [caption for _, caption in source.pairs[:4000]]
    rng = random.Random(cfg.seed)
    short = [
        synthetic.short_caption(synthetic.single_object_scene(rng).objects[0], rng)
        for _ in range(1000)
    ]
    return synthetic.caption_corpus(cfg.seed, 3000) + short


def _move_optimizer_state(optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)


def _loss(ddp, model: SiglipModel, pixels, ids, positives, distributed: bool) -> torch.Tensor:
    out = ddp(input_ids=ids, pixel_values=pixels)
    if distributed:
        return distributed_sigmoid_loss(
            out.text_embeds, out.image_embeds, model.logit_scale, model.logit_bias
        )
    return sigmoid_loss(out.logits_per_text, positives)


def finalize(out_dir: Path, dtype: torch.dtype = torch.float16) -> None:
    """Drop the optimizer state and store the weights compactly, for shipping."""
    model = SiglipModel.from_pretrained(out_dir)
    model.save_pretrained(out_dir, dtype=dtype)
    (out_dir / STATE_FILE).unlink(missing_ok=True)
