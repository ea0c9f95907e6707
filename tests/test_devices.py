"""--device: `auto` takes the first device this machine has (CUDA, then MPS, then the CPU) and says
which; a device that is not there is one line, from every command that runs the model; the batch
size suits the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from indexer_fixtures import make_photo_folder

from siglip_search.cli import main
from siglip_search.devices import (
    CPU_BATCH_SIZE,
    available_devices,
    grow_batch_size,
    host_array,
    resolve_device,
    to_device,
)
from siglip_search.embedder import Embedder
from siglip_search.errors import InputError
from siglip_search.modes import pick_modes

# Devices no machine running this suite has: CUDA is hidden from the tests (conftest.py), a ninth
# GPU is rare, and the names are not devices at all.
MISSING = ["cuda", "cuda:8", "gpu0", "cuda:x"]
if not torch.backends.mps.is_available():
    MISSING.append("mps")


def test_auto_takes_the_first_device_this_machine_has_and_the_embedder_says_which(tiny_checkpoint):
    first = available_devices()[0]
    assert available_devices()[-1] == "cpu"  # the CPU is always there, and tried last
    assert resolve_device("auto") == torch.device(first)
    embedder = Embedder.from_pretrained(tiny_checkpoint)  # device="auto" is the default
    assert embedder.device == torch.device(first)
    expected_mode = "fp32" if first == "cpu" else "fp16"
    assert embedder.mode == expected_mode
    assert embedder.describe().startswith(first) and embedder.describe().endswith(expected_mode)
    assert resolve_device(None) is None  # None: leave a model where it is


@pytest.mark.parametrize("device", MISSING)
def test_a_device_this_machine_lacks_is_refused_in_one_line_naming_the_ones_it_has(
    tiny_checkpoint, device
):
    with pytest.raises(InputError) as info:
        Embedder.from_pretrained(tiny_checkpoint, device=device)
    message = str(info.value)
    assert message.startswith(f"device '{device}' cannot be used on this machine (")
    assert f"(this machine has: {', '.join(available_devices())})" in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def indexed_library(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("device-cli")
    make_photo_folder(folder / "photos", n=3)
    library = folder / "library"
    args = ["index", str(folder / "photos"), "--library", str(library), "--no-progress"]
    assert main([*args, "--model", str(tiny_checkpoint)]) == 0
    return library


@pytest.mark.parametrize(
    "command",
    [
        ["index"],
        ["search", "a red circle"],
        ["tag"],
        ["serve", "--port", "1"],  # refused before a server starts
        ["eval"],
        ["demo", "--no-serve"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_that_runs_the_model_refuses_a_missing_device_in_one_line(
    indexed_library, tiny_checkpoint, tmp_path, capsys, command
):
    if command[0] == "eval":
        where = ["--model", str(tiny_checkpoint)]
    elif command[0] == "demo":
        where = ["--library", str(tmp_path / "demo")]
    else:
        where = ["--library", str(indexed_library)]
    capsys.readouterr()
    assert main([*command, *where, "--device", "cuda:8"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(
        "siglip-search: error: device 'cuda:8' cannot be used on this machine"
    )
    assert not any("Traceback" in line for line in err)


def test_index_and_search_with_device_auto_run_on_the_cpu_here_and_say_so(
    tmp_path, tiny_checkpoint, capsys
):
    photos = make_photo_folder(tmp_path / "photos", n=4)
    library = ["--library", str(tmp_path / "library"), "--device", "auto"]
    assert main(["index", str(tmp_path / "photos"), *library, "--model", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    picked = pick_modes("auto", "cpu").describe()  # --mode auto, the default, on this CPU
    assert f"added {len(photos)}, updated 0" in out and out.rstrip().endswith(
        f"; cpu, auto: {picked})"
    )
    query = next(path for path in photos.values() if path.suffix == ".png")
    assert main(["search", "--image", str(query), *library, "-k", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{query}\t")


def test_the_batch_size_suits_the_device(tiny_checkpoint):
    assert Embedder.from_pretrained(tiny_checkpoint, device="cpu").batch_size == CPU_BATCH_SIZE

    def plateau_at_256(batch: int) -> float:  # images/s of a GPU that is full at 256 images
        return 1000.0 * min(batch, 256)

    assert grow_batch_size(plateau_at_256) == 256
    assert grow_batch_size(plateau_at_256, largest=128) == 128

    def out_of_memory_past_128(batch: int) -> float:
        if batch > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return float(batch)

    assert grow_batch_size(out_of_memory_past_128) == 128

    def broken(batch: int) -> float:
        raise RuntimeError("a real error, not memory")

    with pytest.raises(RuntimeError, match="a real error"):
        grow_batch_size(broken)


def test_host_memory_is_plain_on_the_cpu_and_reaches_the_model_without_a_copy():
    values = host_array((2, 3, 4, 4), torch.device("cpu"))
    assert values.dtype == np.float32 and values.shape == (2, 3, 4, 4)
    tensor = to_device(values, torch.device("cpu"))
    assert not tensor.is_pinned()
    assert tensor.data_ptr() == values.ctypes.data  # the same memory, not a copy
