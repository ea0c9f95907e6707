"""Shared fixtures: tiny real SigLIP checkpoints; never touch the network.

pytest puts this folder on sys.path (it is no package), so the helper modules beside the tests
import by name. Those that define fixtures are loaded as plugins: a test names `embedder`,
`library` or `demo_library` as an argument and gets it, without importing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports huggingface_hub or transformers, which read these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The suite runs on the CPU everywhere: `--device auto` would take a GPU where there is one, and
# the tests compare vectors bit for bit. Before torch is imported, which reads it once.
# SIGLIP_SEARCH_TEST_GPU=1 leaves the GPUs visible, for the tests that skip without one.
if not os.environ.get("SIGLIP_SEARCH_TEST_GPU"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

from checkpoints import make_tiny_checkpoint  # noqa: E402

# indexer_fixtures: embedder, other_embedder, library; search_fixtures: demo_embedder, demo_library;
# postgres_fixtures: database_url (each test on SQLite and on PostgreSQL), postgres_url, postgres_server;
# ray_cluster: ray_cluster (a private Ray for a test module).
pytest_plugins = ["indexer_fixtures", "search_fixtures", "postgres_fixtures", "ray_cluster"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random SigLIP checkpoint in the Hugging Face layout (made by our own code)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-siglip"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_checkpoint(tmp_path_factory) -> Path:
    """Same shape, different weights: a different model."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-siglip-other"), seed=1)
