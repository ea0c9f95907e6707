"""Training batches from the synthetic world: the pre-rendered scene pool, the locked-text phase's
short captions, and positives for every image a caption is true of."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from siglip_search import SiglipImageProcessor, SiglipTokenizer
from siglip_search.training import synthetic
from siglip_search.training.data import StepBatches, SyntheticSource

DEMO_SPIECE = (
    Path(__file__).resolve().parents[1] / "data" / "models" / "siglip-demo" / "spiece.model"
)
SIZE = 32


def _pooled_source(scenes: int = 200, seed: int = 1, **kw) -> SyntheticSource:
    source = SyntheticSource(SIZE, max_words=15, **kw)
    source.prerender(scenes, seed, processes=2, progress=False)
    return source


def _spec_of(source: SyntheticSource, image) -> synthetic.SceneSpec:
    """Which pool scene a drawn image is, found by its pixels alone."""
    matches = np.flatnonzero((source.pool_images == np.asarray(image)).all(axis=(1, 2, 3)))
    assert len(matches) >= 1, "a drawn image should come from the pool"
    return source.pool_specs[matches[0]]


def _is_true(caption: str, spec: synthetic.SceneSpec) -> bool:
    variants = map(synthetic.canonicalise_caption, synthetic.all_caption_variants(spec))
    return synthetic.canonicalise_caption(caption) in set(variants)


def test_the_scene_pool_is_rendered_once_at_the_models_input_size_and_is_the_same_for_a_seed():
    first, again, other = _pooled_source(), _pooled_source(), _pooled_source(seed=2)
    assert first.pool_images.shape == (200, SIZE, SIZE, 3) and first.pool_images.dtype == np.uint8
    assert (
        np.array_equal(first.pool_images, again.pool_images)
        and first.pool_specs == again.pool_specs
    )
    assert not np.array_equal(first.pool_images, other.pool_images)
    assert all(len(s.objects) == 1 for s in first.pool_specs[:100]), (
        "the first half are single objects"
    )
    assert any(len(s.objects) > 1 for s in first.pool_specs[100:])
    assert first.pool_singles == 100


def test_the_locked_phase_shows_single_objects_with_short_true_captions():
    source = _pooled_source(short_steps=5)
    pairs = source.sample_batch(random.Random(0), 64, step=0)
    for image, caption, _ in pairs:
        spec = _spec_of(source, image)
        obj = spec.objects[0]
        assert len(spec.objects) == 1
        assert caption in {
            f"{synthetic._article(obj.colour)} {obj.colour} {obj.shape}",
            f"{synthetic._article(obj.shape)} {obj.shape}",
            f"{synthetic._article(obj.colour)} {obj.colour} shape",
        }, caption
    later = source.sample_batch(random.Random(0), 64, step=5)
    assert any(len(_spec_of(source, image).objects) > 1 for image, _, _ in later), (
        "after the lock: full scenes"
    )


def test_a_caption_is_a_positive_for_every_image_in_the_batch_it_is_true_of():
    source = _pooled_source(scenes=400, short_steps=5)
    tokenizer = SiglipTokenizer(DEMO_SPIECE, model_max_length=16)
    batches = StepBatches(
        source,
        SiglipImageProcessor(size={"height": SIZE, "width": SIZE}),
        tokenizer,
        batch_size=48,
        seed=3,
    )
    for step in (0, 7):  # locked phase (short captions), then full scenes
        _, _, positives = batches[step]
        pairs = source.sample_batch(random.Random(f"3-0-{step}"), 48, step)  # the same draws
        specs = [_spec_of(source, image) for image, _, _ in pairs]
        shared = 0
        for i, (_, caption, _) in enumerate(pairs):
            for j, spec in enumerate(specs):
                same_caption = synthetic.canonicalise_caption(
                    caption
                ) == synthetic.canonicalise_caption(pairs[j][1])
                if len(spec.objects) == 1 or same_caption:
                    assert bool(positives[i, j]) == (_is_true(caption, spec)), (step, caption, spec)
                elif positives[i, j]:
                    raise AssertionError(
                        f"{caption!r} marked true of a multi-object scene it is not known to fit"
                    )
                shared += i != j and bool(positives[i, j])
        assert positives.diagonal().all()
        if step == 0:
            assert shared > 48, (
                "short captions such as 'a star' should match many images in a batch"
            )


def test_a_pool_too_small_to_hold_a_single_object_is_refused_clearly():
    import pytest

    from siglip_search.errors import InputError

    with pytest.raises(InputError, match="at least 2 scenes"):
        SyntheticSource(SIZE, max_words=15).prerender(1, 0, progress=False)
