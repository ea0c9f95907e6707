"""Near-duplicate photos: fingerprint copies, then embedding neighbours above a cosine; blanks left out.

Why the blank-frame guard: every black, white or uniformly grey frame (lens cap on, pocket shots,
failed exposures) embeds to nearly the same vector, so an embedding threshold alone would chain
them into one huge "duplicate" group (Immich #27688). A photo joined only by embedding
similarity is therefore decoded (small, JPEG draft mode) and counted as blank when its pixel
standard deviation is below `blank_std` in every channel; blank photos never join a near-duplicate
group. Byte-identical copies (same fingerprint) are reported whatever they show. Only photos in
candidate pairs are decoded, so the check costs little; a file that cannot be read counts as not
blank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .decode import decode_image
from .errors import DecodeError, SearchOptionError
from .ivf import IvfIndex
from .library import Library
from .store import ImageRow

# Measured with data/models/siglip-demo on the 300 data/samples photos and their copies (resized to
# 1/2 and 1/4, JPEG quality 40, 10 % brighter): at 0.998, 81 % of copies are found and 0.7 % of
# distinct photos are paired; 0.995: 93 % / 7.7 %; 0.999: 72 % / 0 %. The demo model packs all its
# images into a narrow cone (distinct photos' nearest neighbours: median cosine 0.978), so this is
# conservative for real SigLIP checkpoints, whose edited copies a lower --threshold (0.95) finds.
DEFAULT_THRESHOLD = 0.998
DEFAULT_BLANK_STD = 6.0  # pixel standard deviation (0-255 scale) below which a frame is blank
NEIGHBOURS = 16  # nearest neighbours examined per photo


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact": one fingerprint (byte-identical files); "near": joined by embeddings
    images: list[ImageRow]
    min_cosine: float  # the weakest link that joined the group (1.0 for exact copies)
    # The sets of byte-identical files in the group (each of 2 or more; for "exact", all its images).
    # A "near" group may hold some: a photo, its copy and a resized copy of either.
    exact_copies: list[list[ImageRow]] = field(default_factory=list)


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    threshold: float
    blank: list[ImageRow] = field(default_factory=list)  # left out of near-duplicate grouping


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicates(
    library: Library,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    neighbours: int = NEIGHBOURS,
    blank_std: float = DEFAULT_BLANK_STD,
) -> DuplicateReport:
    """Groups of duplicate photos: exact groups first, then near ones, each largest first; reads
    stored embeddings and only decodes candidates."""
    if not -1.0 <= threshold <= 1.0:
        raise SearchOptionError(
            f"the duplicate threshold is a cosine between -1 and 1, got {threshold}"
        )
    store = library.store
    groups = _UnionFind()
    exact_sets = [set(g) for g in store.fingerprint_groups()]
    for members in exact_sets:
        for other in members:
            groups.union(min(members), other)
    edges = _near_edges(library, threshold, neighbours)
    rows = {r.id: r for r in store.images_by_ids(sorted({i for a, b, _ in edges for i in (a, b)}))}
    blank_ids = {i for i, row in rows.items() if _is_blank(row, blank_std)}
    weakest: dict[int, float] = {}
    for a, b, cosine in edges:
        if a in blank_ids or b in blank_ids:
            continue
        groups.union(a, b)
        weakest[a], weakest[b] = min(weakest.get(a, 1.0), cosine), min(weakest.get(b, 1.0), cosine)
    components: dict[int, list[int]] = {}
    for image_id in list(groups.parent):
        components.setdefault(groups.find(image_id), []).append(image_id)
    result = []
    for component in components.values():
        if len(component) < 2:
            continue
        images = sorted(store.images_by_ids(sorted(component)), key=lambda r: r.path)
        exact = any(set(component) <= s for s in exact_sets)
        low = 1.0 if exact else min(weakest.get(m, 1.0) for m in component)
        copies = [[r for r in images if r.id in s] for s in exact_sets if s & set(component)]
        copies = sorted((c for c in copies if len(c) > 1), key=lambda c: c[0].path)
        result.append(DuplicateGroup("exact" if exact else "near", images, low, copies))
    result.sort(key=lambda g: (g.kind != "exact", -len(g.images), g.images[0].path))
    return DuplicateReport(
        result, threshold, sorted((rows[i] for i in blank_ids), key=lambda r: r.path)
    )


def _near_edges(
    library: Library, threshold: float, neighbours: int
) -> list[tuple[int, int, float]]:
    """(a, b, exact cosine) with a < b for photo pairs at or above the threshold."""
    index = library.vector_index()
    store = library.store
    if isinstance(index, IvfIndex):
        return _near_edges_reranked(library, index, threshold, neighbours)
    candidates: set[tuple[int, int]] = set()
    for chunk in store.iter_embeddings_after(None, 1024):
        cosines, ids = index.search(chunk.vectors, neighbours + 1)
        # Approximate cosines may err a little: keep near misses and check them exactly below.
        for a, row_cosines, row_ids in zip(chunk.ids, cosines, ids, strict=True):
            for cosine, b in zip(row_cosines, row_ids, strict=True):
                if b >= 0 and b != a and cosine >= threshold - 0.02:
                    candidates.add((min(int(a), int(b)), max(int(a), int(b))))
    if not candidates:
        return []
    pair_ids = sorted({i for pair in candidates for i in pair})
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(pair_ids), 500):
        vectors.update(store.embeddings_by_ids(pair_ids[start : start + 500]))
    edges = []
    for a, b in sorted(candidates):
        if a in vectors and b in vectors:
            cosine = float(vectors[a] @ vectors[b])
            if cosine >= threshold:
                edges.append((a, b, cosine))
    return edges


def _near_edges_reranked(
    library: Library, index: IvfIndex, threshold: float, neighbours: int
) -> list[tuple[int, int, float]]:
    """_near_edges through the on-disk index, whose 4-bit PQ cosines err by up to ~0.4 (measured on
    clustered 768-d vectors): its candidates are re-ranked exactly, as a search re-ranks them."""
    edges: dict[tuple[int, int], float] = {}
    for chunk in library.store.iter_embeddings_after(None, 1024):
        ids = index.search(chunk.vectors, index.candidates(neighbours + 1))[1]  # (n, candidates)
        wanted = np.unique(ids[ids >= 0])
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(wanted), 500):
            vectors.update(library.store.embeddings_by_ids(wanted[start : start + 500].tolist()))
        for a, vector, row_ids in zip(chunk.ids, chunk.vectors, ids, strict=True):
            for b in row_ids[(row_ids >= 0) & (row_ids != a)]:
                cosine = float(vector @ vectors[int(b)]) if int(b) in vectors else -1.0
                if cosine >= threshold:
                    edges[(min(int(a), int(b)), max(int(a), int(b)))] = cosine
    return [(a, b, cosine) for (a, b), cosine in sorted(edges.items())]


def _is_blank(row: ImageRow, blank_std: float) -> bool:
    """A frame with (almost) no variation: std of every channel below blank_std on a 64 px thumbnail."""
    if not os.path.exists(row.path):
        return False
    try:
        image = decode_image(row.path, target_size=(32, 32)).image
    except DecodeError:
        return False
    pixels = np.asarray(image.resize((64, 64)), dtype=np.float64).reshape(-1, 3)  # (4096, 3)
    return bool((pixels.std(axis=0) < blank_std).all())
