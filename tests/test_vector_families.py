"""Libraries move between machines: a library indexed in one mode (fp16 on a GPU, simulated here
with the same code on the CPU) is searched and extended in another mode of its vector family
(fp32 on a laptop, bf16); a mode of another family (int8) is refused in one line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from indexer_fixtures import draw_photo, make_photo_folder

from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.search import Searcher
from indexer.status import library_status
from siglip_search.embedder import Embedder
from siglip_search.errors import InputError
from siglip_search.modes import INTERCHANGEABLE_COSINE, MODES, family_modes, vector_family

TEXTS = ["a red circle", "two small blue squares on a striped background", "a yellow star", ""]


def index(library, folder, embedder):
    with lock_library(library):
        return index_paths(library, [folder], embedder, batch_size=4, workers=2, progress=False)


def _images(n: int = 6) -> list:
    return [draw_photo(seed, (96, 72)) for seed in range(n)]


# fp16 casts the towers' weights, as on a GPU; bf16 on the CPU computes under autocast from the fp32
# weights (oneDNN's bf16 kernels), as the CPU's auto mode runs it.
@pytest.mark.parametrize("mode, dtype", [("fp16", torch.float16), ("bf16", torch.float32)])
def test_half_modes_compute_in_half_and_stay_interchangeable_with_fp32(
    tiny_checkpoint, mode, dtype
):
    fp32 = Embedder.from_pretrained(tiny_checkpoint, device="cpu")
    half = Embedder.from_pretrained(tiny_checkpoint, mode=mode, device="cpu")
    # The towers' weights in the dtype the mode computes from, logit scale and bias in fp32.
    assert {p.dtype for p in half.model.vision_model.parameters()} == {dtype}
    assert {p.dtype for p in half.model.text_model.parameters()} == {dtype}
    assert half.model.logit_scale.dtype == torch.float32
    for a, b in (
        (fp32.embed_images(_images()), half.embed_images(_images())),
        (fp32.embed_texts(TEXTS), half.embed_texts(TEXTS)),
    ):
        assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
        assert (a * b).sum(axis=1).min() >= INTERCHANGEABLE_COSINE
        assert not np.array_equal(a, b), (
            f"{mode} gave fp32's exact vectors: it did not run in {mode}"
        )
    assert vector_family(mode) == vector_family("fp32")


def test_a_half_mode_leaves_the_fp32_model_it_was_given_as_it_was(tiny_checkpoint):
    fp32 = Embedder.from_pretrained(tiny_checkpoint, device="cpu")
    before = fp32.embed_texts(TEXTS)
    Embedder(fp32.model, fp32.tokenizer, fp32.image_processor, "same weights", mode="fp16")
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}
    np.testing.assert_array_equal(fp32.embed_texts(TEXTS), before)


def test_fp16_overflow_is_a_one_line_error_not_nan_vectors(tiny_checkpoint):
    fp32 = Embedder.from_pretrained(tiny_checkpoint, device="cpu")
    loud = copy.deepcopy(fp32.model)
    with torch.no_grad():  # activations past fp16's largest number, 65504
        loud.vision_model.embeddings.patch_embedding.weight.mul_(1e6)
    fp16 = Embedder(loud, fp32.tokenizer, fp32.image_processor, "loud", mode="fp16")
    with pytest.raises(
        InputError, match="non-finite features in mode 'fp16'.*use mode 'bf16' or 'fp32'"
    ):
        fp16.embed_images(_images(2))
    assert np.isfinite(
        Embedder(loud, fp32.tokenizer, fp32.image_processor, "loud").embed_images(_images(2))
    ).all()


def test_a_library_indexed_in_fp16_is_searched_in_fp32_and_takes_bf16_photos(
    tmp_path, tiny_checkpoint
):
    photos = make_photo_folder(tmp_path / "photos")
    gpu_like = Embedder.from_pretrained(tiny_checkpoint, mode="fp16", device="cpu")
    with open_library(tmp_path / "library") as library:
        index(library, tmp_path / "photos", gpu_like)
    with open_library(tmp_path / "library", create=False) as library:  # the laptop
        laptop = library.load_embedder(device="cpu")
        # auto's pick on this CPU (fp32, bf16 or int8 images): one of the library's family
        assert laptop.mode == "auto" and laptop.image_mode in family_modes("fp16")
        assert library_status(library).mode == "fp16"  # what it was built in
        searcher = Searcher(library, laptop)
        for rel, path in photos.items():
            best = searcher.search_image(path, k=1).hits[0]
            assert best.rel_path == rel and best.cosine >= INTERCHANGEABLE_COSINE, rel
        draw_photo(99).save(tmp_path / "photos" / "new.png")
        bf16 = Embedder.from_pretrained(tiny_checkpoint, mode="bf16", device="cpu")
        assert index(library, tmp_path / "photos", bf16).added == 1
        new = searcher.search_image(tmp_path / "photos" / "new.png", k=1).hits[0]
        assert new.rel_path == "new.png" and new.cosine >= INTERCHANGEABLE_COSINE


def test_every_mode_belongs_to_one_family_and_fp32s_takes_the_gpu_modes():
    families = {mode: vector_family(mode) for mode in MODES}
    assert families["fp32"] == families["compile"] == families["fp16"] == families["bf16"] == "fp32"
    assert families["int8"] == "fp32"  # on base-sized weights (modes.FAMILY_EVIDENCE)
    assert sorted(family_modes("fp16")) == sorted(m for m in MODES if families[m] == "fp32")
    with pytest.raises(InputError, match="unknown mode 'fp8'"):
        vector_family("fp8")
