"""`pip install .` (not -e), then `siglip-search demo`: the installed command finds the demo model, the
sample photos, the evaluation set and the tag vocabulary inside the installed package, with no
checkout on its path."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "siglip_search", "indexer", "ui", "data")
WHERE = """
import json, siglip_search, indexer, ui
from siglip_search import resources
from siglip_search.cli import build_parser
defaults = build_parser().parse_args(["eval"])
print(json.dumps({
    "code": [siglip_search.__file__, indexer.__file__, ui.__file__],
    "data": [
        str(p)
        for p in (resources.DEMO_MODEL, resources.SAMPLES, resources.EVAL_SET, resources.VOCABULARY)
    ],
    "eval defaults": [str(defaults.model), str(defaults.data)],
}))
"""


def _pip_can_install_into_another_python() -> bool:
    # Read from pip's metadata, not by importing it: importing pip in the test process made a later
    # torch.compile test fail ("Distutils was imported before Setuptools" in its C++ builder).
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(part) for part in version.split(".")[:2]) >= (22, 3)  # `pip --python`


@pytest.mark.skipif(not _pip_can_install_into_another_python(), reason="needs pip >= 22.3")
def test_an_installed_copy_runs_the_demo_from_its_own_bundled_files(tmp_path):
    # A copy of the source, so that building it leaves no build/ or *.egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    # The system's packages (torch, gradio, ...) are seen from the venv, and so is the editable
    # install of a checkout, if there is one: the checks below make sure the venv's copy is what runs.
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    shutil.rmtree(source)  # nothing may come from it now

    elsewhere = tmp_path / "elsewhere"  # not a checkout: a user's folder
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "XDG_DATA_HOME": str(tmp_path / "xdg")
    }

    def run(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done

    where = json.loads(run(str(python), "-c", WHERE).stdout)
    installed = venv.resolve()
    for path in where["code"] + where["data"] + where["eval defaults"]:
        assert Path(path).resolve().is_relative_to(installed), path
        assert Path(path).exists(), path

    demo = run(
        str(bin_dir / "siglip-search"),
        "demo",
        "--no-serve",
        "--no-progress",
        "--library",
        str(tmp_path / "lib"),
    )
    assert "failed 0" in demo.stderr and "added 0," not in demo.stderr
    status = json.loads(
        run(
            str(bin_dir / "siglip-search"), "status", "--json", "--library", str(tmp_path / "lib")
        ).stdout
    )
    assert [Path(root["path"]) for root in status["roots"]] == [Path(where["data"][1]).resolve()]
    assert status["images"] > 0 and status["failed_count"] == 0
    assert status["tags"] > 0  # tagged with the bundled vocabulary
    assert Path(status["model"]).resolve() == Path(where["data"][0]).resolve()
