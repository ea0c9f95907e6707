"""`siglip-search train` on what users hand it: bad options, messy caption folders, folders that are not
runs, resumes with other options, torn and unwritable checkpoints. Tiny configs, a few steps each."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_train import DEMO_SPIECE, TINY, _config, _losses

from siglip_search import SiglipModel
from siglip_search.cli import main
from siglip_search.errors import InputError
from siglip_search.training.loop import train
from siglip_search.training.run_folder import STATE_FILE

REPO = Path(__file__).resolve().parents[1]


def _cli(tmp_path, *extra: str) -> list[str]:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    return [
        "train",
        "--config",
        str(config),
        "--tokenizer",
        str(DEMO_SPIECE),
        "--no-progress",
        "--workers",
        "0",
        "--lock-text-steps",
        "0",
        "--pool-size",
        "0",
        "--batch-size",
        "4",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--lr", "-0.001"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (["--device", "cuda:99"], "device 'cuda:99' cannot be used on this machine"),
        (
            ["--tokenizer", "/no/such/spiece.model"],
            "tokenizer file /no/such/spiece.model does not exist",
        ),
        (["--config", "BAD_JSON"], "cannot read --config"),
        (["--config", "LIST_JSON"], '"text_config" and "vision_config"'),
        (["--eval", "EMPTY"], "cannot read the evaluation set"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_before_anything_is_trained(
    tmp_path, capsys, extra, message
):
    (tmp_path / "bad.json").write_text("{text_config: 1")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "empty").mkdir()
    names = {
        "BAD_JSON": tmp_path / "bad.json",
        "LIST_JSON": tmp_path / "list.json",
        "EMPTY": tmp_path / "empty",
    }
    out = tmp_path / "run"
    argv = _cli(tmp_path, "--out", str(out), "--steps", "2") + [str(names.get(a, a)) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not out.exists(), "a refused run writes nothing"


def _messy_folder(folder: Path) -> None:
    """Excel's "CSV UTF-8" (a byte-order mark, CRLF), a text file named .jpg, a truncated JPEG, a
    listed file that is gone, an empty caption; two good photos, fewer than the batch."""
    folder.mkdir()
    Image.new("RGB", (40, 40), (220, 30, 30)).save(folder / "red.jpg")
    Image.new("RGB", (40, 40), (30, 70, 225)).save(folder / "blue, sky.jpg")
    (folder / "notes.jpg").write_text("not a picture")
    Image.new("RGB", (300, 300), (30, 165, 50)).save(folder / "cut.jpg", quality=95)
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:400])
    Image.new("RGB", (40, 40), (245, 220, 20)).save(folder / "untitled.jpg")
    rows = [
        "file,caption",
        "red.jpg,a red square",
        '"blue, sky.jpg","a blue square, sky"',
        "notes.jpg,notes",
        "cut.jpg,a green square",
        "gone.jpg,a lost photo",
        "untitled.jpg,",
    ]
    (folder / "captions.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))


def test_a_messy_caption_folder_trains_on_its_good_pairs_and_lists_the_others(tmp_path, capsys):
    _messy_folder(tmp_path / "photos")
    out = tmp_path / "run"
    assert (
        main(_cli(tmp_path, "--out", str(out), "--steps", "3", "--data", str(tmp_path / "photos")))
        == 0
    )
    err = capsys.readouterr().err
    assert "skipped 4 of 6 image-caption pairs" in err, err
    listed = (out / "skipped_images.txt").read_text()
    for name in (
        "notes.jpg",
        "cut.jpg",
        "gone.jpg\tno such file",
        "captions.csv:7\tempty file name or caption",
    ):
        assert name in listed, listed
    assert "red.jpg" not in listed and "blue, sky.jpg" not in listed
    assert len(_losses(out)) == 3
    SiglipModel.from_pretrained(out)


def test_a_csv_without_file_and_caption_columns_names_its_header(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "captions.csv").write_text("name,text\na.jpg,a cat\n")
    with pytest.raises(InputError, match="must name the columns file,caption .found name,text"):
        train(_config(tmp_path / "run", steps=2, data=str(tmp_path / "photos")))


def test_training_never_overwrites_a_folder_it_did_not_write(tmp_path):
    # a finished, finalized model: its training_args.json, no trainer state
    shipped = tmp_path / "siglip-demo"
    shutil.copytree(REPO / "data" / "models" / "siglip-demo", shipped)
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    shutil.copy(shipped / "config.json", downloaded)
    shutil.copy(shipped / "model.safetensors", downloaded)
    for folder, message in (
        (shipped, "finished model without its trainer state"),
        (downloaded, "did not write .config.json, model.safetensors."),
    ):
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(InputError, match=message):
            train(_config(folder, steps=2))
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_resume_with_other_options_or_fewer_steps_is_refused(tmp_path):
    out = train(_config(tmp_path / "run", steps=3))
    weights = (out / "model.safetensors").read_bytes()
    faster = _config(out, steps=6)
    faster.lr = 1e-2
    with pytest.raises(InputError, match="other options .lr 0.003 there, 0.01 here"):
        train(faster)
    wider = _config(out, steps=6)
    wider.model_config["vision_config"]["hidden_size"] = 64
    with pytest.raises(InputError, match="other options .model_config"):
        train(wider)
    with pytest.raises(InputError, match="already trained to step 3; --steps 2 is fewer"):
        train(_config(out, steps=2))
    assert (out / "model.safetensors").read_bytes() == weights
    train(_config(out, steps=5, checkpoint_every=2))  # more steps and how to run may change
    assert [
        json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
    ] == list(range(5))


def test_a_run_killed_between_its_two_checkpoint_files_resumes_to_the_same_weights(tmp_path):
    # While the text tower is locked the schedule does not depend on --steps: a 4-step run is the first
    # 4 steps of an 8-step one. A kill between writing the trainer state and the weights file leaves
    # them from different steps; here the weights file is a later step's.
    reference = train(_config(tmp_path / "uninterrupted", steps=8, lock_text_steps=1000))
    out = train(_config(tmp_path / "torn", steps=4, lock_text_steps=1000))
    shutil.copy(reference / "model.safetensors", out / "model.safetensors")
    # cut short
    (out / "train_log.jsonl").write_text((out / "train_log.jsonl").read_text() + '{"step": 4, "lo')
    train(_config(out, steps=8, lock_text_steps=1000))
    ours, ref = (
        SiglipModel.from_pretrained(out).state_dict(),
        SiglipModel.from_pretrained(reference).state_dict(),
    )
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], atol=1e-5, rtol=1e-4, msg=key)
    assert [
        json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
    ] == list(range(8))


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_checkpoint_that_cannot_be_written_keeps_the_last_one(tmp_path):
    out = tmp_path / "run"
    argv = _cli(tmp_path, "--out", str(out), "--checkpoint-every", "2")
    assert main(argv + ["--steps", "2"]) == 0
    # the trainer state is larger: its write fails
    limit = (out / "model.safetensors").stat().st_size
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}));"
        f"from siglip_search.cli import main; sys.exit(main({argv + ['--steps', '4']!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        "cannot write the step 4 checkpoint" in result.stderr and "Traceback" not in result.stderr
    )
    assert torch.load(out / STATE_FILE, weights_only=False)["step"] == 2
    assert not (out / (STATE_FILE + ".tmp")).exists()
    assert main(argv + ["--steps", "4"]) == 0  # with room again, it resumes
    assert torch.load(out / STATE_FILE, weights_only=False)["step"] == 4


def test_an_evaluation_set_with_a_missing_or_broken_image_is_one_line(tmp_path, capsys):
    from siglip_search.training.evaluate import write_eval_set

    folder = write_eval_set(tmp_path / "eval", seed=3, n_single=3, n_multi=1, size=32).parent
    first, second, third = sorted(p for p in folder.iterdir() if p.suffix != ".jsonl")[:3]
    first.unlink()  # missing
    second.write_bytes(b"not a picture")  # broken
    for named in (first, second):
        assert main(["eval", "--data", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"evaluation image {named} cannot be read" in err, err
        first.write_bytes(third.read_bytes())  # restored: the broken one is named next
