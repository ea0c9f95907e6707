"""Search a library: text, image and combined queries -> pages of hits with cosine and SigLIP probability.

Which number a hit's `score` is depends on the query (`score_kind`): for a text query it is SigLIP's
probability sigmoid(t * cosine + b), the model's own yes/no answer for an image-text pair; a query
with a picture in it (an image, "more like this", a mix of text and images) has no such probability,
so its score is the cosine itself, said as such ("cosine"), never passed through the sigmoid.
"""

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .decode import decode_image, reduce_for_model, to_rgb
from .errors import DecodeError, QueryError, SearchOptionError
from .ivf import IvfIndex
from .library import Library, default_database, open_library
from .query import QueryTerm, parse_query
from .store import Store
from .text_cache import TextEmbeddingCache
from .vectors import AnnIndex, VectorIndex

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder

SORTS = ("score", "date")
# sort="date" orders a fixed pool, the best this many matches (above min_score), by date: a pool
# that grew with the offset would let later pages repeat photos and skip others.
DATE_SORT_POOL = 1000
RERANK_FACTOR = 2  # approximate index: candidates re-ranked exactly per hit asked for
PROBABILITY, COSINE = "probability", "cosine"  # what a hit's score is (Hit.score_kind)
SCORE_KINDS = (PROBABILITY, COSINE)


@dataclass(frozen=True)
class Hit:
    """One photo found: where it is, how close (cosine) and how good a match (`score`, of `score_kind`)."""

    id: int
    path: Path  # absolute, on this machine
    rel_path: str  # POSIX, relative to `root`
    root: str
    cosine: float
    # score_kind "probability": SigLIP's sigmoid(t * cosine + b) with the model's own t and b (text
    # queries); "cosine": the cosine itself (queries with a picture in them have no probability)
    score: float
    taken_at: str | None  # EXIF DateTimeOriginal, ISO 8601
    width: int | None
    height: int | None
    camera: str | None
    lens: str | None = None
    latitude: float | None = None  # GPS position, decimal degrees
    longitude: float | None = None
    score_kind: str = PROBABILITY


@dataclass(frozen=True)
class SearchPage:
    """Hits offset..offset+k of a query; `total_candidates` images passed the folder/date filters."""

    hits: list[Hit]
    total_candidates: int
    offset: int
    k: int
    query: str
    has_more: bool = False  # another page exists (above min_score)
    score_kind: str = PROBABILITY  # what the hits' scores are: "probability" or "cosine"


class Searcher:
    """Keeps the library's model loaded and caches text embeddings (LRU), so a repeated query
    costs only the vector search. Safe to share between threads (e.g. a web UI's workers)."""

    def __init__(
        self,
        library: Library | str | os.PathLike,
        embedder: Embedder | None = None,
        cache_size: int = 256,
        mode: str | None = None,
        *,
        device: str = "auto",
    ) -> None:
        """`library`: a Library (open_library(path)) or the path of a library folder, which is
        opened here (never created) and closed by close(). `embedder` (checked against the library),
        or the library's recorded model loaded on `device` ('auto': CUDA, then MPS, then the CPU) in
        `mode` (None: auto, see Library.load_embedder) at the first query that needs it."""
        self._owns_library = isinstance(library, (str, os.PathLike))
        if isinstance(library, (str, os.PathLike)):
            library = open_library(library, create=False, database=default_database())
        elif not isinstance(library, Library):
            raise SearchOptionError(
                "Searcher takes a library folder path or indexer.library.open_library(path), "
                f"got {type(library).__name__}"
            )
        self.library = library
        self._mode = mode
        if embedder is not None:
            library.check_model(embedder.identity(), embedder.image_mode)
        self._embedder = embedder
        self.device = device
        self._texts = TextEmbeddingCache(cache_size)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the library when this Searcher opened it from a path (a Library passed in stays
        open: its owner closes it)."""
        if self._owns_library:
            self.library.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        """The library's recorded model, loaded on first use and kept."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self.library.load_embedder(mode=self._mode, device=self.device)
            return self._embedder

    def probability(self, cosine: np.ndarray | float) -> np.ndarray:
        return np.asarray(self.embedder.probability(cosine), dtype=np.float64)

    # --- query vectors ----------------------------------------------------------------------
    def embed_text(self, text: str) -> np.ndarray:
        """Unit text embedding (dim,), from the LRU cache when this text was asked before."""
        key = text.strip()
        # Padded to max_length and canonicalised by the embedder.
        return self._texts.get_or_compute(key, lambda: self.embedder.embed_texts([key])[0])

    def embed_image(self, image: Image.Image | str | os.PathLike) -> np.ndarray:
        """Unit image embedding (dim,) of a PIL image or an image file (decoded as the indexer does)."""
        embedder = self.embedder
        if isinstance(image, Image.Image):
            try:
                # transparency onto white, 16-bit scaled, reduced: as the indexer decodes
                rgb = reduce_for_model(to_rgb(image), embedder.image_size)
            except DecodeError as exc:
                raise QueryError(f"cannot use this image as a query: {exc.reason}") from None
            return embedder.embed_images([rgb])[0]
        if not isinstance(image, (str, os.PathLike)):
            raise QueryError(
                f"expected a PIL image or an image file path, got {type(image).__name__}"
            )
        try:
            decoded = decode_image(image, target_size=embedder.image_size)
        except DecodeError as exc:
            # not "disappeared while indexing"
            reason = exc.reason if os.path.lexists(image) else "no such file"
            raise QueryError(f"cannot use {image} as a query image: {reason}") from None
        return embedder.embed_pixels(embedder.preprocess_image(decoded.image)[None])[0]

    def stored_embedding(self, image_id: int) -> np.ndarray:
        found = self.library.store.embeddings_by_ids([int(image_id)])
        if int(image_id) not in found:
            raise QueryError(
                f"no indexed image has id {image_id}; ids come from search results or --json"
            )
        return found[int(image_id)]

    def query_vector(self, query: str, base_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Normalised weighted sum of the terms' unit vectors (negative weights subtract)."""
        return self.combine(parse_query(query, base_dir))

    def combine(self, terms: list[QueryTerm]) -> np.ndarray:
        """Unit query vector of parsed terms (see query_vector)."""
        total: np.ndarray = np.zeros(0, np.float32)
        for term in terms:
            if term.kind == "text":
                vector = self.embed_text(str(term.value))
            elif term.kind == "image" and not isinstance(term.value, int):
                vector = self.embed_image(term.value)
            elif term.kind == "image_id" and not isinstance(term.value, Path):
                vector = self.stored_embedding(int(term.value))
            else:
                raise QueryError(f"a query term of kind {term.kind!r} cannot be {term.value!r}")
            total = term.weight * vector if total.size == 0 else total + term.weight * vector
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryError("the query's terms cancel each other out; change a weight or a term")
        return (total / norm).astype(np.float32)

    # --- searches ---------------------------------------------------------------------------
    def search(self, query: str, **options: Any) -> SearchPage:
        """Text or combined query (see indexer.query). Options: k=20, min_score=0.0, offset=0,
        sort="score"|"date", folder=None, date_from=None, date_to=None (inclusive), and the photo
        filters camera, lens, has_gps, tag, rejected (PHOTO_FILTERS). Scores are probabilities
        when every term is text, cosines when a picture is among them."""
        terms = parse_query(query)
        return self.search_vector(
            self.combine(terms), label=query, score_kind=score_kind_of(terms), **options
        )

    def search_image(self, image: Image.Image | str | os.PathLike, **options: Any) -> SearchPage:
        """Photos like a PIL image or an image file (same options as search); scores are cosines."""
        label = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
        return self.search_vector(
            self.embed_image(image), label=label, score_kind=COSINE, **options
        )

    def more_like_this(self, image_id: int, **options: Any) -> SearchPage:
        """Photos like an indexed one, from its stored embedding; the photo itself is left out.
        Scores are cosines."""
        vector = self.stored_embedding(image_id)
        return self.search_vector(
            vector, label=f"#{image_id}", exclude=int(image_id), score_kind=COSINE, **options
        )

    def search_vector(
        self,
        vector: np.ndarray,
        *,
        label: str = "",
        k: int = 20,
        min_score: float = 0.0,
        offset: int = 0,
        sort: str = "score",
        folder: str | os.PathLike | None = None,
        date_from: str | date | None = None,
        date_to: str | date | None = None,
        exclude: int | None = None,
        score_kind: str = COSINE,
        **filters: Any,
    ) -> SearchPage:
        """One page of the images nearest a unit query vector (dim,), filtered and sorted. Say
        score_kind="probability" only for a text vector: SigLIP's sigmoid answers image-text pairs.
        min_score applies to the score of that kind (0: no cut-off, negative cosines included).
        `filters`: camera, lens, has_gps, tag, rejected (see PHOTO_FILTERS)."""
        _check_options(k, min_score, offset, sort)
        if score_kind not in SCORE_KINDS:
            raise SearchOptionError(f"score_kind must be one of {', '.join(SCORE_KINDS)}")
        k, offset = int(k), int(offset)  # numpy integers too
        allowed = self._allowed(folder, date_from, date_to, _photo_filters(filters))
        index = self.library.vector_index()
        total = len(index) if allowed is None else len(allowed)
        wanted = offset + k + 1 + (exclude is not None)  # one more tells whether a next page exists
        if sort == "date":  # the same pool for every page; the last page of the pool has no more
            wanted = DATE_SORT_POOL + (exclude is not None)
        cosines, ids = nearest(self.library, index, np.asarray(vector, np.float32), wanted, allowed)
        scores = self.probability(cosines) if score_kind == PROBABILITY else cosines
        keep = (scores >= min_score if min_score > 0 else np.isfinite(scores)) & (
            ids != (-1 if exclude is None else exclude)
        )
        cosines, ids = cosines[keep], ids[keep]
        order = np.arange(len(ids))
        store = self.library.store
        if sort == "date":  # newest first, undated last; stable, so equal dates stay by score
            taken = {r.id: r.taken_at for r in store.images_by_ids(ids.tolist())}
            order = np.array(
                sorted(order, key=lambda i: _newest_first(taken.get(int(ids[i])))), dtype=np.int64
            )
        page = order[offset : offset + k]
        rows = {r.id: r for r in store.images_by_ids(ids[page].tolist())}
        shown = self.probability(cosines[page]) if score_kind == PROBABILITY else cosines[page]
        hits = [
            _hit(rows[int(ids[i])], float(cosines[i]), float(score), score_kind)
            for i, score in zip(page, shown, strict=True)
            if int(ids[i]) in rows
        ]
        return SearchPage(
            hits, total, offset, k, label, has_more=len(order) > offset + k, score_kind=score_kind
        )

    # --- filters ----------------------------------------------------------------------------
    def _allowed(
        self,
        folder: str | os.PathLike | None,
        date_from: str | date | None,
        date_to: str | date | None,
        filters: dict[str, Any] | None = None,
    ) -> np.ndarray | None:
        filters = filters or {}
        if folder is None and date_from is None and date_to is None and not filters:
            return None
        taken_from = _date_bound(date_from, end=False) if date_from is not None else None
        taken_before = _date_bound(date_to, end=True) if date_to is not None else None
        if taken_from and taken_before and taken_from >= taken_before:
            raise SearchOptionError(
                f"the date range {date_from} .. {date_to} is empty; swap the dates?"
            )
        folders = self.resolve_folder(folder) if folder is not None else None
        return self.library.store.image_ids_where(folders, taken_from, taken_before, **filters)

    def resolve_folder(self, folder: str | os.PathLike) -> list[tuple[int, str]]:
        """(root id, prefix) pairs for a folder given absolute, relative to the working directory
        (when that folder exists), or relative to the roots; SearchOptionError when it lies under
        no registered root."""
        roots = self.library.store.roots()
        given = Path(folder).expanduser()
        shown = ", ".join(r.path for r in roots) or "none yet"
        here = Path(os.path.realpath(given if given.is_absolute() else Path.cwd() / given))
        if given.is_absolute() or here.is_dir():
            for root in roots:
                root_path = Path(root.path)
                if here == root_path or root_path in here.parents:
                    return [
                        (
                            root.id,
                            here.relative_to(root_path).as_posix() if here != root_path else "",
                        )
                    ]
            if given.is_absolute():
                raise SearchOptionError(
                    f"folder {folder} is not under a registered root (roots: {shown})"
                )
        parts = [p for p in PurePosixPath(given.as_posix()).parts if p not in (".", "")]
        if parts and ".." not in parts:
            prefix = "/".join(parts)
            folders = [(r.id, prefix) for r in roots]
            if any((Path(r.path) / prefix).is_dir() for r in roots) or len(
                self.library.store.image_ids_where(folders)
            ):
                return folders
        raise SearchOptionError(f"folder {folder} is not under a registered root (roots: {shown})")


# Search options that filter by what a photo's file and tags say, passed to Store.image_ids_where:
# camera and lens (text the camera's make and model, or the lens, holds, case aside), has_gps
# (True: with a GPS position, False: without), tag (a machine tag, `dog` or `animal|dog`), rejected
# (a tag the user rejected for the photo; True: any).
PHOTO_FILTERS = ("camera", "lens", "has_gps", "tag", "rejected")


def _photo_filters(given: dict[str, Any]) -> dict[str, Any]:
    """The filters that are set (None and "" are not), checked; SearchOptionError names a wrong one."""
    unknown = sorted(set(given) - set(PHOTO_FILTERS))
    if unknown:
        raise SearchOptionError(
            f"unknown search option {unknown[0]!r}; the photo filters are {', '.join(PHOTO_FILTERS)}"
        )
    found: dict[str, Any] = {}
    for name, value in given.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if name == "has_gps" and not isinstance(value, (bool, np.bool_)):
            raise SearchOptionError(f"has_gps is True, False or None, got {value!r}")
        if name == "rejected" and not isinstance(value, (str, bool)):
            raise SearchOptionError(f"rejected is a tag name or True, got {value!r}")
        if name in ("camera", "lens", "tag") and not isinstance(value, str):
            raise SearchOptionError(f"{name} is a text, got {value!r}")
        if name == "rejected" and value is False:
            continue
        found[name] = bool(value) if name == "has_gps" else value
    return found


def score_kind_of(terms: list[QueryTerm]) -> str:
    """ "probability" for a query of text terms only; "cosine" once a picture is among them."""
    return PROBABILITY if terms and all(t.kind == "text" for t in terms) else COSINE


def nearest(
    library: Library,
    index: VectorIndex | AnnIndex | IvfIndex,
    vector: np.ndarray,
    n: int,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, ids) of the n nearest allowed images, best first, exact cosines: an approximate
    index proposes candidates, re-ranked exactly from the stored embeddings."""
    if isinstance(index, (AnnIndex, IvfIndex)):
        wanted = index.candidates(n) if isinstance(index, IvfIndex) else n * RERANK_FACTOR
        candidates = index.search(vector, wanted, allowed)[1][0]
        return _rerank(library.store, vector, candidates[candidates >= 0], n)
    cosines, ids = index.search(vector, n, allowed)
    found = ids[0] >= 0
    return _sorted(cosines[0][found].astype(np.float64), ids[0][found].astype(np.int64))


def _rerank(
    store: Store, vector: np.ndarray, candidates: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosines from the stored embeddings (the database is the source of truth)."""
    stored: dict[int, np.ndarray] = {}
    for start in range(0, len(candidates), 500):
        stored.update(store.embeddings_by_ids(candidates[start : start + 500].tolist()))
    if not stored:
        return np.zeros(0), np.zeros(0, np.int64)
    ids = np.fromiter(stored, dtype=np.int64, count=len(stored))
    cosines = np.stack(list(stored.values())) @ vector
    cosines, ids = _sorted(cosines.astype(np.float64), ids)
    return cosines[:n], ids[:n]


def _check_options(k: int, min_score: float, offset: int, sort: str) -> None:
    if not isinstance(k, numbers.Integral) or k < 1:
        raise SearchOptionError(f"k must be a whole number of at least 1, got {k!r}")
    if not isinstance(offset, numbers.Integral) or offset < 0:
        raise SearchOptionError(f"offset must be 0 or more, got {offset!r}")
    if not 0.0 <= float(min_score) <= 1.0:
        raise SearchOptionError(f"min score must be between 0 and 1, got {min_score!r}")
    if sort not in SORTS:
        raise SearchOptionError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")


# An exclusive upper bound after every ISO 8601 date of year 9999 (they compare as text): the
# calendar ends there, so `--to 9999` cannot name the year after.
_AFTER_LAST_DATE = "9999-12-32"


def _date_bound(value: str | date, end: bool) -> str:
    """ISO lower bound (end=False) or exclusive upper bound (end=True) of a date, month, year or
    date-time: `2021` -> 2021-01-01 / 2022-01-01, `2021-07-14` -> that day / the next."""
    try:
        bound = _iso_bound(value, end)
    except OverflowError:  # the day (second) after 9999-12-31
        return _AFTER_LAST_DATE
    return _AFTER_LAST_DATE if bound.startswith("10000-") else bound


def _iso_bound(value: str | date, end: bool) -> str:
    if isinstance(value, datetime):
        return (value + timedelta(seconds=1) if end else value).isoformat()
    if isinstance(value, date):
        return (value + timedelta(days=1) if end else value).isoformat()
    text = str(value).strip()
    try:
        if len(text) == 4 and text.isdigit():
            return f"{int(text) + end:04d}-01-01"
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:])
            if not 1 <= month <= 12:
                raise ValueError(text)
            if end:
                year, month = year + month // 12, month % 12 + 1
            return f"{year:04d}-{month:02d}-01"
        if len(text) == 10:
            return _iso_bound(date.fromisoformat(text), end)
        return _iso_bound(datetime.fromisoformat(text), end)
    except ValueError:
        raise SearchOptionError(
            f"cannot read date {value!r}; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        ) from None


def _newest_first(taken_at: str | None) -> tuple[bool, tuple[int, ...]]:
    """Sort key: later ISO 8601 dates first, undated photos last."""
    return taken_at is None, tuple(-ord(c) for c in taken_at or "")


def _sorted(cosines: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best first; equal cosines by id, so pages of the same query never disagree."""
    order = np.lexsort((ids, -cosines))
    return cosines[order], ids[order]


def _hit(row: Any, cosine: float, score: float, score_kind: str) -> Hit:
    return Hit(
        row.id,
        Path(row.path),
        row.rel_path,
        row.root_path,
        cosine,
        score,
        row.taken_at,
        row.width,
        row.height,
        row.camera,
        row.lens,
        row.latitude,
        row.longitude,
        score_kind,
    )
