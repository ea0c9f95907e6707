"""What a first-time user of the command line meets: --version, help that explains each option, a
first `index` that says which --model to pass (and creates nothing), and mismatch messages that say
what differs and what to do."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from indexer_fixtures import make_photo_folder

from siglip_search.cli import build_parser, main
from siglip_search.resources import DEMO_MODEL

REPO = Path(__file__).resolve().parents[1]


def _help(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = next(
            a.choices[name]
            for a in parser._actions
            if getattr(a, "choices", None)
            if isinstance(a.choices, dict) and name in a.choices
        )
    return " ".join(parser.format_help().split())


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    version = re.search(r'(?m)^version = "(.+)"$', (REPO / "pyproject.toml").read_text()).group(1)
    assert capsys.readouterr().out == f"siglip-search {version}\n"


def test_every_index_option_and_status_explain_themselves():
    index = _help("index")
    for option in ("--batch-size", "--workers", "--model", "--mode", "--device"):
        shown = re.search(re.escape(option) + r"(?: \S+)? (.{20})", index.split("options:")[1])
        assert shown and not shown.group(1).startswith("-"), option
    for mode in ("fp32", "fp16", "bf16", "int8", "compile"):
        assert re.search(rf"{mode}[^.;]*:", index), f"--mode does not say what {mode} does"
    assert "2-3.5x faster" in index
    status = _help("status")
    assert "read-only" in status and "failed" in status


def test_a_first_index_without_model_names_the_choices_and_creates_nothing(tmp_path, capsys):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 2)
    library = tmp_path / "library"
    assert main(["index", str(photos), "--library", str(library)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs --model" in err
    assert str(DEMO_MODEL) in err and "google/siglip-base-patch16-224" in err
    assert not library.exists()


def test_weights_that_changed_under_the_recorded_model_are_named_not_blamed_on_model(
    tmp_path, tiny_checkpoint, other_tiny_checkpoint, capsys
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 2)
    model = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    library = tmp_path / "library"
    assert main(["index", str(photos), "--library", str(library), "--model", str(model)]) == 0
    capsys.readouterr()
    shutil.copyfile(other_tiny_checkpoint / "model.safetensors", model / "model.safetensors")
    assert main(["index", str(photos), "--library", str(library), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_sha256" in err
    assert "leave out --model" not in err and "put the original model back" in err
    assert main(["index", "--library", str(library), "--model", str(other_tiny_checkpoint)]) == 2
    assert "leave out --model" in capsys.readouterr().err
