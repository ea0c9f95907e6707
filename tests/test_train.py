"""Training a small SigLIP with the sigmoid loss: the loss falls, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from siglip_search import SiglipModel
from siglip_search.training.loop import train
from siglip_search.training.options import TrainConfig
from siglip_search.training.run_folder import LOG_FILE, STATE_FILE

TINY = {
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "vocab_size": 128,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
}


DEMO_SPIECE = (
    Path(__file__).resolve().parents[1] / "data" / "models" / "siglip-demo" / "spiece.model"
)


def _config(out: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(
        out_dir=out,
        model_config=json.loads(json.dumps(TINY)),
        steps=steps,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        workers=0,
        progress=False,
        tokenizer=str(DEMO_SPIECE),
        **({"lock_text_steps": 0, "pool_size": 0} | kw),
    )


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / LOG_FILE).read_text().splitlines()]


def test_short_training_run_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    out = train(_config(tmp_path / "run", steps=80, checkpoint_every=1000))
    losses = _losses(out)
    assert len(losses) == 80
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, f"loss did not fall clearly: {first:.2f} -> {last:.2f}"
    model = SiglipModel.from_pretrained(out)  # Hugging Face layout, strict load
    assert model.config.vision_config.image_size == 32
    for name in (
        "config.json",
        "model.safetensors",
        "spiece.model",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        assert (out / name).is_file(), name


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    # Across the unlock at step 20, with a scene pool: both must come back exactly on resume.
    reference = train(
        _config(
            tmp_path / "uninterrupted",
            steps=40,
            checkpoint_every=10,
            lock_text_steps=20,
            pool_size=64,
        )
    )
    out = tmp_path / "killed"
    script = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from test_train import _config; from siglip_search.training.loop import train;"
        f"train(_config(Path({str(out)!r}), steps=40, checkpoint_every=10, lock_text_steps=20, pool_size=64))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    deadline = time.time() + 120
    while not (out / STATE_FILE).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(out / STATE_FILE, weights_only=False)
    assert 0 < state["step"] < 40, "the kill should land mid-run"
    train(_config(out, steps=40, checkpoint_every=10, lock_text_steps=20, pool_size=64))
    ours = SiglipModel.from_pretrained(out).state_dict()
    ref = SiglipModel.from_pretrained(reference).state_dict()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], atol=1e-5, rtol=1e-4, msg=key)


def test_torchrun_trains_data_parallel_with_the_distributed_loss(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "-m",
        "siglip_search",
        "train",
        "--out",
        str(out),
        "--config",
        str(config),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--tokenizer",
        str(DEMO_SPIECE),
        "--no-progress",
        "--lock-text-steps",
        "2",
        "--pool-size",
        "64",
    ]
    result = subprocess.run(
        command, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_losses(out)) == 4  # rank 0 logs every step
    SiglipModel.from_pretrained(out)


def test_training_on_a_folder_of_captioned_photos(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    colours = {
        "red": (220, 30, 30),
        "blue": (30, 70, 225),
        "green": (30, 165, 50),
        "yellow": (245, 220, 20),
    }
    lines = []
    for name, rgb in colours.items():
        Image.new("RGB", (40, 40), rgb).save(folder / f"{name}.jpg")
        lines.append(json.dumps({"file": f"{name}.jpg", "caption": f"a {name} square"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    # With a locked-text start: the text tower is whitened on the folder's own captions.
    out = train(_config(tmp_path / "folder-run", steps=5, data=str(folder), lock_text_steps=3))
    assert len(_losses(out)) == 5
    SiglipModel.from_pretrained(out)


def test_folder_training_without_captions_says_what_is_missing(tmp_path):
    import pytest

    from siglip_search.errors import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="captions.jsonl or captions.csv"):
        train(_config(tmp_path / "run", steps=2, data=str(tmp_path / "empty")))


def _tower(out: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in SiglipModel.from_pretrained(out).state_dict().items()
        if k.startswith(prefix)
    }


def test_the_text_tower_stays_frozen_during_the_lock_and_learns_after_it(tmp_path):
    out = tmp_path / "locked"
    train(_config(out, steps=3, lock_text_steps=6))
    text_3, vision_3 = _tower(out, "text_model."), _tower(out, "vision_model.")
    train(_config(out, steps=6, lock_text_steps=6))  # resumes at step 3, still locked
    text_6, vision_6 = _tower(out, "text_model."), _tower(out, "vision_model.")
    train(_config(out, steps=10, lock_text_steps=6))  # unlocked from step 6
    text_10 = _tower(out, "text_model.")
    for key in text_3:
        torch.testing.assert_close(text_6[key], text_3[key], atol=0, rtol=0, msg=key)
    assert any(not torch.equal(vision_6[k], vision_3[k]) for k in vision_3), (
        "the image tower should train"
    )
    assert any(not torch.equal(text_10[k], text_6[k]) for k in text_6), (
        "the text tower should train after the lock"
    )


def test_the_whitened_text_start_tells_the_shape_prompts_apart():
    from siglip_search import SiglipConfig, SiglipTokenizer
    from siglip_search.training import synthetic
    from siglip_search.training.loop import whiten_text_start
    from siglip_search.training.options import DEMO_CONFIG

    tokenizer = SiglipTokenizer(DEMO_SPIECE, model_max_length=32)
    config = json.loads(json.dumps(DEMO_CONFIG))
    config["text_config"]["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig.from_dict(config))
    model.init_weights()
    prompts = tokenizer(
        synthetic.zero_shot_labels()["shape"], padding="max_length", return_tensors="pt"
    )["input_ids"]

    def closest_pair() -> float:
        with torch.no_grad():
            e = torch.nn.functional.normalize(model.get_text_features(prompts), dim=-1)
        return float((e @ e.T - 2 * torch.eye(len(e))).max())

    before = closest_pair()
    whiten_text_start(model, tokenizer, synthetic.caption_corpus(0, 2000))
    after = closest_pair()
    assert before > 0.9, (
        f"a random text tower should map the shape prompts close together ({before:.3f})"
    )
    assert after < 0.8, f"whitening should spread them ({before:.3f} -> {after:.3f})"


def test_the_schedule_warms_up_holds_through_the_lock_then_warms_up_again_and_decays():
    from siglip_search.training.loop import _optimizer, learning_rate

    # warm-up 10, lr 3e-3
    cfg = _config(Path("unused"), steps=100, lock_text_steps=40, text_lr_scale=0.25)
    lrs = [learning_rate(step, cfg) for step in range(100)]
    assert lrs[0] == 3e-3 / 10 and lrs[9] == 3e-3, "linear warm-up over 10 steps"
    assert all(lr == 3e-3 for lr in lrs[10:40]), "constant while the text tower is locked"
    assert lrs[40] == 3e-3 / 10 and lrs[49] == 3e-3, "a second warm-up when it unlocks"
    assert all(a >= b for a, b in zip(lrs[49:], lrs[50:], strict=False)) and lrs[-1] < 1e-5, (
        "cosine to zero"
    )
    torch.manual_seed(0)
    from siglip_search import SiglipConfig

    model = SiglipModel(SiglipConfig.from_dict(json.loads(json.dumps(TINY))))
    text = {id(p) for p in model.text_model.parameters()}
    for group in _optimizer(model, cfg).param_groups:
        expected = 0.25 if all(id(p) in text for p in group["params"]) else 1.0
        assert group["lr_scale"] == expected and all(
            (id(p) in text) == (expected == 0.25) for p in group["params"]
        )


def _ids_inside_the_vocabulary(text_config) -> None:
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(text_config, name)
        assert value is None or 0 <= value < text_config.vocab_size, (name, value)


def test_a_trained_model_runs_in_transformers_zero_shot_pipeline_with_our_scores(tmp_path):
    """transformers' pipeline pads every SigLIP text to 64 tokens and reads the special ids from
    config.json: a model trained here (64 positions, its own tokenizer's ids) runs there as it does
    in ours."""
    tf = pytest.importorskip("transformers")
    from PIL import Image

    from siglip_search import pipeline

    config = _config(tmp_path / "run", steps=2, checkpoint_every=1000)
    config.model_config["text_config"]["max_position_embeddings"] = 64
    out = train(config)
    _ids_inside_the_vocabulary(tf.SiglipConfig.from_pretrained(out).text_config)
    image = Image.effect_mandelbrot((32, 32), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    labels = ["a red circle", "a blue star", "a green heart"]
    theirs = tf.pipeline("zero-shot-image-classification", model=str(out), device=-1)(
        image, candidate_labels=labels
    )
    ours = pipeline("zero-shot-image-classification", model=out)(image, candidate_labels=labels)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine["score"] == pytest.approx(ref["score"], abs=1e-5)
