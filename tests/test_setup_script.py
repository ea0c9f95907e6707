"""scripts/setup.sh: the torch pin either way, the CPU wheel index with --cpu, and a one-line refusal
of an unknown option. pip is stood in for by a `python` that records what it was asked to run."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A python without torch: the check fails, every other call (pip) is recorded and succeeds.
FAKE_PYTHON = """#!/bin/sh
case "$*" in *"import torch"*) exit 1 ;; esac
echo "$*" >> "$CALLS"
"""


def _run_setup(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)}
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, calls.read_text().splitlines()


def test_the_pin_comes_from_the_default_index_and_cpu_asks_pytorchs_cpu_index(tmp_path):
    done, calls = _run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls[0].endswith("install --disable-pip-version-check -q torch==2.13.0")
    assert calls[-1].endswith("-e .")
    done, calls = _run_setup(tmp_path, "--cpu")
    assert done.returncode == 0, done.stderr
    assert calls[0].endswith("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"), (
        calls
    )
    assert calls[-1].endswith("-e .")


def test_an_unknown_option_is_one_line_and_installs_nothing(tmp_path):
    done, calls = _run_setup(tmp_path, "--gpu")
    assert done.returncode == 2 and calls == []
    assert done.stderr == "setup: unknown option --gpu (options: --dev, --cpu)\n"
