"""Fast embedding modes: close to fp32, and never change the fp32 model they were made from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from siglip_search.embedder import Embedder
from siglip_search.errors import InputError

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
    for a, b in (
        (fp32.embed_images(images), int8.embed_images(images)),
        (fp32.embed_texts(texts), int8.embed_texts(texts)),
    ):
        cosines = (a * b).sum(axis=1)
        assert cosines.min() >= 0.99, cosines
        assert not np.array_equal(a, b), "int8 mode gave bit-identical vectors: it did not quantize"


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
