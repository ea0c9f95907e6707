"""Zero-shot tagging: prompt ensembles, a sigmoid probability per tag, thresholds and a cap, and
incremental library tagging (the tags go out through indexer.export).

How a tag is scored. Every term of a tag (its own name and its synonyms) is put into every
template (`DEFAULT_TEMPLATES`), and the tag's verbatim prompts are added. The unit text
embeddings of these prompts are averaged and the mean is renormalised to unit length, the prompt
ensembling of CLIP and of SigLIP's zero-shot evaluation (big_vision). The tag's probability for
a photo is SigLIP's own sigmoid(t * cosine + b) with the model's t and b: each tag is an
independent yes/no, so several tags can be likely at once (never a softmax across tags). A tag
is kept when its probability reaches its own threshold (vocabulary `@ 0.3`) or else the default
one, and a photo keeps at most `cap` tags, the most probable first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .decode import decode_image, reduce_for_model, to_rgb
from .errors import DecodeError, QueryError, SearchOptionError
from .library import Library
from .progress import progress_bar
from .store import ANALYZE_MIN_ROWS, MACHINE_TAG_SOURCE
from .text_cache import TextEmbeddingCache
from .vocabulary import Vocabulary, VocabularyTag

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder

DEFAULT_TEMPLATES = ("a photo of {}.", "This is a photo of {}.", "{}")
# Measured on data/eval (400 images) with data/models/siglip-demo over the whole bundled
# vocabulary, cap 10: the best F1 of all thresholds (data/tags/README.md has the table).
DEFAULT_THRESHOLD = 0.1
DEFAULT_CAP = 10
TEXT_CACHE_META = "tag_text_embeddings"  # the library's cached vocabulary embeddings
TAGGER_META = "tagger_state"  # what the last tag run used, and how far it got
_MEMORY_CACHE = TextEmbeddingCache(size=4)  # the tag vectors of the last few vocabularies


@dataclass(frozen=True)
class TagScore:
    tag: str
    score: float  # SigLIP probability


@dataclass
class TagSummary:
    tagged: int  # photos (re)tagged in this run
    unchanged: int  # photos whose tags were already current
    tags_written: int
    vocabulary_version: str
    model: str
    threshold: float
    cap: int
    retagged_all: bool
    seconds: float = 0.0
    rejected_held_back: int = 0  # tags that passed but that the user had rejected for that photo

    def line(self) -> str:
        scope = "all photos" if self.retagged_all else "new or changed photos"
        held = (
            f", {self.rejected_held_back} you rejected left out" if self.rejected_held_back else ""
        )
        return (
            f"tagged {self.tagged} photos ({scope}), {self.unchanged} unchanged, "
            f"{self.tags_written} tags{held} "
            f"(threshold {self.threshold:g}, cap {self.cap}, vocabulary {self.vocabulary_version}; "
            f"{self.seconds:.1f} s)"
        )


def tag_prompts(tag: VocabularyTag, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every term in every template, then the verbatim prompts; duplicates dropped."""
    prompts = [template.format(term) for term in tag.terms for template in templates]
    return list(dict.fromkeys(prompts + list(tag.prompts)))


def embed_prompt_ensembles(
    embedder: Embedder, ensembles: Sequence[Sequence[str]], batch_size: int = 64
) -> np.ndarray:
    """(n_tags, dim) unit vectors: the renormalised mean of each ensemble's unit text embeddings."""
    flat = [p for prompts in ensembles for p in prompts]
    vectors = np.concatenate(
        [embedder.embed_texts(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
    )
    means, start = [], 0
    for prompts in ensembles:
        mean = vectors[start : start + len(prompts)].mean(axis=0)
        means.append(mean / np.linalg.norm(mean))
        start += len(prompts)
    return np.stack(means).astype(np.float32)


def embed_vocabulary(
    embedder: Embedder,
    vocabulary: Vocabulary,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    library: Library | None = None,
) -> np.ndarray:
    """The vocabulary's tag vectors (n_tags, dim), computed once per vocabulary version, templates
    and model: kept in memory and, with a library, in its database for the next process."""
    key = _digest(vocabulary.version, list(templates), _model_key(embedder))
    cached = _MEMORY_CACHE.get(key)
    if cached is not None:
        return cached
    vectors = (
        _load_cached(library, key, len(vocabulary), embedder.dim) if library is not None else None
    )
    if vectors is None:
        vectors = embed_prompt_ensembles(
            embedder, [tag_prompts(t, templates) for t in vocabulary.tags]
        )
        if library is not None:
            payload = {
                "key": key,
                "shape": list(vectors.shape),
                "float32": base64.b64encode(vectors.tobytes()).decode(),
            }
            library.store.set_meta(TEXT_CACHE_META, json.dumps(payload))
    _MEMORY_CACHE.put(key, vectors)
    return vectors


def _load_cached(library: Library, key: str, n_tags: int, dim: int) -> np.ndarray | None:
    text = library.store.get_meta(TEXT_CACHE_META)
    try:
        payload = json.loads(text) if text else {}
        if payload.get("key") != key or payload.get("shape") != [n_tags, dim]:
            return None
        return (
            np.frombuffer(base64.b64decode(payload["float32"]), dtype=np.float32)
            .reshape(n_tags, dim)
            .copy()
        )
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache is recomputed


def select_tags(
    probs: np.ndarray,
    vocabulary: Vocabulary,
    threshold: float = DEFAULT_THRESHOLD,
    cap: int = DEFAULT_CAP,
) -> list[TagScore]:
    """Tags of one photo from its probabilities (n_tags,): above their threshold, best first, at most cap."""
    limits = np.array(
        [t.threshold if t.threshold is not None else threshold for t in vocabulary.tags]
    )
    passing = np.flatnonzero(probs >= limits)
    best = passing[np.argsort(-probs[passing], kind="stable")][:cap]
    return [TagScore(vocabulary.tags[i].name, float(probs[i])) for i in best]


def tag_image(
    embedder: Embedder,
    image: Image.Image | str | os.PathLike,
    labels: Sequence[str] | Vocabulary,
    template: str | Sequence[str] = DEFAULT_TEMPLATES,
) -> list[TagScore]:
    """Probability of every label for one image, best first (no threshold). Plain labels are put
    into `template` (one template: the same prompts as siglip_search.pipeline()'s); a Vocabulary
    uses its own synonyms and prompts too."""
    templates = (template,) if isinstance(template, str) else tuple(template)
    if isinstance(labels, str):  # one label, not one label per character
        labels = [labels]
    vocabulary = (
        labels
        if isinstance(labels, Vocabulary)
        else Vocabulary(tuple(VocabularyTag(lb, (lb,)) for lb in labels))
    )
    if not len(vocabulary):
        raise QueryError("give at least one label to score")
    if isinstance(image, (str, os.PathLike)):
        try:
            image = decode_image(image, target_size=embedder.image_size).image
        except DecodeError as exc:
            raise QueryError(f"cannot tag {image}: {exc.reason}") from None
    vectors = embed_prompt_ensembles(embedder, [tag_prompts(t, templates) for t in vocabulary.tags])
    try:
        # transparency onto white, 16-bit scaled, reduced: as the indexer decodes
        rgb = reduce_for_model(to_rgb(image), embedder.image_size)
    except DecodeError as exc:
        raise QueryError(f"cannot tag this image: {exc.reason}") from None
    probs = np.asarray(embedder.probability(embedder.embed_images([rgb]) @ vectors.T))[0]
    return select_tags(probs, vocabulary, threshold=0.0, cap=len(vocabulary))


def tag_library(
    library: Library,
    embedder: Embedder,
    vocabulary: Vocabulary,
    threshold: float | None = None,
    cap: int = DEFAULT_CAP,
    progress: bool = True,
    *,
    retag_all: bool = False,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 2048,
) -> TagSummary:
    """Tag the library's photos from their stored embeddings (no image is decoded).

    Incremental: only photos embedded since the last run are tagged, unless the vocabulary, the
    templates, the model, the threshold or the cap changed (then all are), or `retag_all`. Each
    batch's tags and progress are committed together, so an interrupted run resumes. The caller
    holds lock_library().
    """
    started = time.monotonic()
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 < threshold < 1.0 or cap < 1:
        raise SearchOptionError(
            f"threshold must be above 0 and below 1 and cap at least 1, got {threshold}, {cap}"
        )
    library.check_model(embedder.identity(), embedder.image_mode)
    settings = {
        "vocabulary": vocabulary.version,
        "templates": list(templates),
        "model": _model_key(embedder),
        "threshold": threshold,
        "cap": cap,
    }
    key = _digest(settings)
    try:
        state = json.loads(library.store.get_meta(TAGGER_META) or "{}")
    except ValueError:
        state = {}  # unreadable progress: tag everything again
    after = _position(state.get("after")) if state.get("key") == key and not retag_all else None
    retagged_all = after is None
    tag_vectors = embed_vocabulary(embedder, vocabulary, templates, library)
    summary = TagSummary(
        0, 0, 0, vocabulary.version, embedder.model_id, threshold, cap, retagged_all
    )
    to_tag = library.store.embedding_count() if retagged_all else None
    with progress_bar(to_tag, "tagging", "photo", progress) as bar:
        for chunk in library.store.iter_embeddings_after(after, batch_size):
            probs = np.asarray(embedder.probability(chunk.vectors @ tag_vectors.T))  # (n, n_tags)
            found = {
                int(i): [(t.tag, t.score) for t in select_tags(row, vocabulary, threshold, cap)]
                for i, row in zip(chunk.ids, probs, strict=True)
            }
            state = {
                "key": key,
                "after": list(chunk.last),
                **settings,
                "vocabulary_source": vocabulary.source,
            }
            written = library.store.replace_machine_tags(
                found, embedder.model_id, vocabulary.version, meta={TAGGER_META: json.dumps(state)}
            )
            summary.tags_written += written
            summary.rejected_held_back += sum(len(tags) for tags in found.values()) - written
            summary.tagged += len(chunk.ids)
            bar.update(len(chunk.ids))
    # an empty library still records what it was tagged with
    if retagged_all and summary.tagged == 0:
        library.store.set_meta(TAGGER_META, json.dumps({"key": key, "after": None, **settings}))
    if summary.tags_written >= ANALYZE_MIN_ROWS:
        library.store.analyze()
    summary.unchanged = library.store.embedding_count() - summary.tagged
    summary.seconds = time.monotonic() - started
    return summary


def image_tags(library: Library, image_ids: Sequence[int]) -> dict[int, list[TagScore]]:
    """Stored machine tags of these photos, best first (for showing next to search hits)."""
    found: dict[int, list[TagScore]] = {int(i): [] for i in image_ids}
    for record in library.store.iter_tags(MACHINE_TAG_SOURCE, image_ids=image_ids):
        found[record.image_id].append(TagScore(record.tag, float(record.score or 0.0)))
    return found


def forget_rejections(library: Library, tag: str | None = None) -> int:
    """Forget the tags the user rejected: all, or those of one tag (`dog` or `animal|dog`: its
    stored name or last part), on every photo. Returns how many were forgotten; a `tag --all` run
    may then propose them again."""
    if tag is None:
        return library.store.clear_rejections()
    name = tag.strip()
    names = {
        row.tag
        for row in library.store.iter_rejections()
        if row.tag == name or row.tag.endswith("|" + name)
    }
    return library.store.clear_rejections(tags=names) if names else 0


def _position(saved: object) -> tuple[int, int] | None:
    """Where the last run stopped: (generation, image id). Anything else (nothing yet, or an
    (indexed_at, id) pair saved before generations) means all photos are tagged again."""
    if isinstance(saved, list) and len(saved) == 2 and all(type(part) is int for part in saved):
        return saved[0], saved[1]
    return None


def _model_key(embedder: Embedder) -> str:
    identity = embedder.identity()
    return str(identity.get("weights_sha256") or identity.get("model_id"))


def _digest(*parts: object) -> str:
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()[:32]
