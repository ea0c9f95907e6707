"""Fast embedding modes: close to fp32, and never change the fp32 model they were made from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from siglip_search.embedder import Embedder
from siglip_search.errors import InputError
from siglip_search.inference import gelu_tanh_
from siglip_search.modes import pick_modes, vector_family

TEXTS = [
    "a red circle",
    "two small blue squares on a striped background",
    "a photo of a yellow star",
    "",
]


def _images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


def test_int8_embeddings_stay_within_cosine_0_99_of_fp32(tiny_checkpoint):
    fp32 = Embedder.from_pretrained(tiny_checkpoint)
    int8 = Embedder.from_pretrained(tiny_checkpoint, mode="int8")
    images, texts = _images(), TEXTS
    a, b = fp32.embed_images(images), int8.embed_images(images)
    assert (a * b).sum(axis=1).min() >= 0.99, (a * b).sum(axis=1)
    assert not np.array_equal(a, b), "int8 mode gave bit-identical vectors: it did not quantize"
    # Texts in int8 fell below cosine 0.999 on the demo model (modes.MEASURED_MIN_COSINE): --mode
    # int8 embeds them in fp32, so a query's vector is fp32's exactly.
    assert int8.text_mode == "fp32"
    np.testing.assert_allclose(int8.embed_texts(texts), fp32.embed_texts(texts), atol=1e-6)


def test_a_fast_mode_leaves_the_exact_model_untouched(tiny_checkpoint):
    # The int8 copy swaps in a faster GELU; the model it was made from must keep the exact one.
    exact = Embedder.from_pretrained(tiny_checkpoint)
    fast = Embedder.from_pretrained(tiny_checkpoint, mode="int8")
    reference = exact.embed_texts(TEXTS)
    again = Embedder(fast.model, fast.tokenizer, fast.image_processor, "same weights").embed_texts(
        TEXTS
    )
    np.testing.assert_array_equal(again, reference)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compile_mode_gives_the_fp32_vectors(tiny_checkpoint):
    # torch.compile generates and builds C++ on first use (about 40 s here), then reuses it.
    exact = Embedder.from_pretrained(tiny_checkpoint)
    compiled = Embedder.from_pretrained(tiny_checkpoint, mode="compile")
    images = _images(3)
    np.testing.assert_allclose(compiled.embed_texts(TEXTS), exact.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(compiled.embed_images(images), exact.embed_images(images), atol=1e-5)


def test_int8_mode_off_the_cpu_is_refused_in_one_line(tiny_checkpoint):
    cpu = Embedder.from_pretrained(tiny_checkpoint)
    # any device that is not the CPU; no GPU is needed to check this
    elsewhere = cpu.model.to("meta")
    with pytest.raises(
        InputError, match="mode 'int8' runs on the CPU only; use fp16, bf16 or fp32 on meta"
    ):
        Embedder(elsewhere, cpu.tokenizer, cpu.image_processor, "meta", mode="int8")


AVX2 = frozenset({"avx2", "fma", "f16c"})


@pytest.mark.parametrize(
    ("flags", "int8_kernels", "images", "texts"),
    [
        (AVX2, True, "int8", "fp32"),  # this project's CPU: int8 measured about 2x fp32
        (AVX2 | {"avx512f", "avx512_vnni"}, True, "int8", "fp32"),
        (AVX2 | {"avx512_vnni", "avx512_bf16"}, True, "int8", "bf16"),
        (AVX2 | {"amx_tile", "amx_int8", "amx_bf16"}, True, "int8", "bf16"),
        (AVX2 | {"avx512_bf16"}, False, "bf16", "bf16"),  # no oneDNN int8 in this torch
        (AVX2, False, "fp32", "fp32"),
        (frozenset({"sse4_2"}), True, "fp32", "fp32"),  # int8 without AVX2 is not faster
        (frozenset(), False, "fp32", "fp32"),  # flags unreadable
    ],
)
def test_auto_picks_the_fastest_interchangeable_mode_from_the_cpu_flags(
    flags, int8_kernels, images, texts
):
    picked = pick_modes("auto", "cpu", flags, int8_kernels)
    assert (picked.image_mode, picked.text_mode) == (images, texts)
    # whatever it picks, its vectors are of fp32's family: a library mixes them freely
    assert (
        vector_family(picked.image_mode) == vector_family(picked.text_mode) == vector_family("fp32")
    )


def test_a_named_mode_is_run_as_asked_and_an_unknown_one_is_refused_in_one_line():
    assert pick_modes("bf16", "cpu", AVX2, True).image_mode == "bf16"
    assert pick_modes("auto", "cuda", AVX2, True).image_mode == "fp16"  # int8 is CPU-only
    with pytest.raises(
        InputError, match="unknown mode 'fp8'; choose one of auto, fp32, fp16, bf16, int8, compile"
    ):
        pick_modes("fp8")


def test_auto_runs_what_it_picked_here_and_its_vectors_stay_close_to_fp32(tiny_checkpoint):
    fp32 = Embedder.from_pretrained(tiny_checkpoint)
    auto = Embedder(fp32.model, fp32.tokenizer, fp32.image_processor, "tiny", mode="auto")
    here = pick_modes("auto")
    assert (auto.image_mode, auto.text_mode) == (here.image_mode, here.text_mode)
    assert auto.describe_mode().startswith(f"auto: {here.image_mode}")
    images = _images()
    cosines = (auto.embed_images(images) * fp32.embed_images(images)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    texts = auto.embed_texts(TEXTS)
    if auto.text_mode == "fp32":  # texts are never int8: the same vectors as fp32 mode's
        np.testing.assert_array_equal(texts, fp32.embed_texts(TEXTS))


def test_the_in_place_tanh_gelu_is_torchs_tanh_gelu():
    x = torch.linspace(-12, 12, 20001)
    expected = F.gelu(x.double(), approximate="tanh")
    assert (gelu_tanh_(x.clone()).double() - expected).abs().max() < 2e-6
    assert (F.gelu(x.double()) - expected).abs().max() > 1e-4  # the erf form would be caught
