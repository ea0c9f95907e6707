"""The weights' sha256 (part of an index's model identity) is hashed once per file version, not at every
load: a second load trusts a file whose path, size and mtime_ns are unchanged, and a changed one is
hashed again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from siglip_search import embedder as embedder_module
from siglip_search.embedder import Embedder, weights_cache_file


@pytest.fixture
def hash_calls(monkeypatch, tmp_path):
    """The user's cache folder under tmp_path, and a list of every _hash_files call."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real = embedder_module._hash_files

    def counting(files):
        calls.append(list(files))
        return real(files)

    monkeypatch.setattr(embedder_module, "_hash_files", counting)
    return calls


def test_a_second_load_does_not_read_the_weights_again(tiny_checkpoint, hash_calls):
    first = Embedder.from_pretrained(tiny_checkpoint)
    second = Embedder.from_pretrained(tiny_checkpoint)
    assert len(hash_calls) == 1
    assert first.weights_sha256 == second.weights_sha256
    assert (
        first.weights_sha256
        == hashlib.sha256((tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    )
    assert str(tiny_checkpoint.resolve()) in json.loads(weights_cache_file().read_text())


def test_a_changed_size_or_mtime_is_hashed_again(tmp_path, hash_calls):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    weights = directory / "model.safetensors"
    weights.write_bytes(b"version one")
    digest = embedder_module._weights_sha256(directory)
    stat = weights.stat()

    weights.write_bytes(b"version two")  # same size; the old mtime put back: trusted, not read
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert embedder_module._weights_sha256(directory) == digest and len(hash_calls) == 1

    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime: read again
    assert embedder_module._weights_sha256(directory) == hashlib.sha256(b"version two").hexdigest()
    weights.write_bytes(b"version three!")  # a new size: read again
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert (
        embedder_module._weights_sha256(directory) == hashlib.sha256(b"version three!").hexdigest()
    )
    assert len(hash_calls) == 3


def test_sharded_weights_are_stamped_file_by_file(tiny_checkpoint, tmp_path, hash_calls):
    from siglip_search import SiglipModel

    directory = tmp_path / "sharded"
    SiglipModel.from_pretrained(tiny_checkpoint).save_pretrained(directory, max_shard_size="20KB")
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) > 1
    digest = embedder_module._weights_sha256(directory)
    assert embedder_module._weights_sha256(directory) == digest and len(hash_calls) == 1
    os.utime(shards[-1], ns=(0, shards[-1].stat().st_mtime_ns + 1))
    assert embedder_module._weights_sha256(directory) == digest and len(hash_calls) == 2


def test_without_a_writable_cache_folder_the_weights_are_hashed_every_time(
    tiny_checkpoint, tmp_path, monkeypatch, hash_calls
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    digests = {embedder_module._weights_sha256(directory) for _ in range(2)}
    assert digests == {hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()}
    assert len(hash_calls) == 2


def test_a_damaged_cache_file_is_replaced(tiny_checkpoint, hash_calls):
    weights_cache_file().parent.mkdir(parents=True)
    weights_cache_file().write_text("{not json")
    digest = embedder_module._weights_sha256(tiny_checkpoint)
    assert (
        json.loads(weights_cache_file().read_text())[str(tiny_checkpoint.resolve())]["sha256"]
        == digest
    )


def test_a_checkpoint_saved_again_within_one_clock_tick_is_hashed_again(
    tiny_checkpoint, other_tiny_checkpoint, tmp_path, hash_calls
):
    from siglip_search import SiglipModel

    directory = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    first, stat = embedder_module._weights_sha256(directory), weights.stat()
    # same shapes: same size
    SiglipModel.from_pretrained(other_tiny_checkpoint).save_pretrained(directory)
    # as if saved within the same clock tick
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert (
        embedder_module._weights_sha256(directory)
        == hashlib.sha256(weights.read_bytes()).hexdigest()
        != first
    )
