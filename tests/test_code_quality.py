"""The checks CI runs besides the tests: ruff's lint and format, and mypy over the three packages.

CI runs only `python -m pytest`, so the checks run from here, each over the whole repository as a
developer would run it at its root (settings in pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]' installs it)")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args[2:])} failed:\n{result.stdout}{result.stderr}"
    )


def test_ruff_finds_nothing_to_fix():
    _assert_passes(_run("ruff", "check", "."))


def test_the_code_is_formatted_as_ruff_format_writes_it():
    _assert_passes(_run("ruff", "format", "--check", "."))


def test_mypy_finds_no_type_errors():
    # The packages and settings come from [tool.mypy]; its cache in .mypy_cache makes reruns fast.
    _assert_passes(_run("mypy"))
