"""Shared fixtures: tiny real SigLIP checkpoints; never touch the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import make_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random SigLIP checkpoint in the Hugging Face layout (made by our own code)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-siglip"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_checkpoint(tmp_path_factory) -> Path:
    """Same shape, different weights: a different model."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-siglip-other"), seed=1)
