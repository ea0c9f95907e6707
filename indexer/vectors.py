"""The FAISS indexes over image embeddings (the only FAISS importer): exact and approximate search,
tombstones, atomic save, verified load."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from siglip_search.atomic import atomic_path

from .errors import IndexFileError

SIDECAR_FORMAT = 1
# a new index file is readable by all, as the database (a replaced one keeps its mode)
NEW_FILE_MODE = 0o644


class VectorIndex:
    """Exact inner-product search over unit vectors (inner product = cosine), keyed by image id.

    IndexIDMap2 keeps our database ids inside FAISS, so a search answers with image ids and
    remove_ids can drop a deleted image without renumbering anything.
    """

    def __init__(
        self,
        dim: int,
        index: faiss.Index | None = None,
        generation: int = -1,
        library_id: str | None = None,
    ) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation  # the database's vectors_generation this index reflects
        self.library_id = library_id  # the database it was built from (its id, made with it)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: Iterable[int]) -> int:
        ids = np.fromiter(ids, dtype=np.int64)
        return int(self._index.remove_ids(ids)) if ids.size else 0

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        """Float32 vectors plus int64 ids (IndexIDMap2's reverse map comes on top)."""
        return len(self) * (self.dim * 4 + 8)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cosines (n, k'), ids (n, k')), best first, k' = min(k, len(self)): inner products of
        unit vectors.

        `allowed` (image ids) restricts the search inside FAISS, so a narrow filter still gets k
        hits; rows with fewer hits than k' are padded with id -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        k = min(int(k), len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if allowed is None:
            return self._index.search(queries, k)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        return self._index.search(queries, k, params=faiss.SearchParameters(sel=selector))

    def save(self, path: str | os.PathLike) -> None:
        """Write index then sidecar, each atomically (siglip_search.atomic): a crash leaves the old
        pair, a new pair, or a mismatch that load() detects; never a half-written file."""
        path = Path(path)
        mode = path.stat().st_mode & 0o777 if path.exists() else NEW_FILE_MODE
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))
            os.chmod(tmp, mode)
            digest = _sha256(tmp)
        ids = self.ids()
        sidecar = {
            "format": SIDECAR_FORMAT,
            "dim": self.dim,
            "count": len(self),
            "max_id": int(ids.max()) if ids.size else 0,
            "generation": self.generation,
            "library_id": self.library_id,
            "sha256": digest,
        }
        _write_sidecar(path, sidecar, mode)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        """Load an index saved by save(); IndexFileError if it is missing or fails its checks."""
        path = Path(path)
        try:
            sidecar = json.loads(sidecar_path(path).read_text())
            if sidecar.get("format") != SIDECAR_FORMAT:
                raise IndexFileError(f"unknown sidecar format {sidecar.get('format')!r}")
            if _sha256(path) != sidecar["sha256"]:
                raise IndexFileError("checksum mismatch")
            # Only a file whose checksum matches reaches FAISS, which trusts its input.
            index = faiss.read_index(str(path))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IndexFileError(f"{path}: {exc}") from None
        if index.d != sidecar["dim"] or index.ntotal != sidecar["count"]:
            raise IndexFileError(f"{path}: size or dim differ from its sidecar")
        return cls(
            index.d,
            index,
            generation=int(sidecar["generation"]),
            library_id=sidecar.get("library_id"),
        )


# Approximate search, chosen by benchmarks/search_speed.py: an exhaustive scan of 4-bit PQ
# fast-scan codes (dim/2 bytes a vector) proposes candidates and 8-bit scalar codes (dim bytes a
# vector) re-score them (FAISS IndexRefine), in shards scanned by parallel threads (FAISS releases
# the GIL); the caller re-ranks the best with the exact stored embeddings. Graph (HNSW) and
# inverted-file (IVF) indexes lost most of their recall on vectors without cluster structure
# (recall@10 0.49 and 0.43 at 100k x 768); a compressed exhaustive scan degrades gracefully instead.
ANN_SHARDS = 2
ANN_MIN_TRAIN = 64  # k-means of 16 centroids per sub-quantizer needs a few points per centroid
ANN_TRAIN_SIZE = 65_536
# Fast-scan candidates per hit, re-scored with the 8-bit codes (recall@10 0.955 at 1M random x 768).
ANN_K_FACTOR = 128
ANN_SUBSET_LIMIT = 50_000  # a filter allowing at most this many images is scored from 8-bit codes
_SHARD_POOL = ThreadPoolExecutor(max_workers=ANN_SHARDS, thread_name_prefix="ann-shard")


def ann_subquantizers(dim: int) -> int:
    """Sub-quantizers of 4 dims each (2 bits a dimension), or fewer when 4 does not divide dim."""
    for width in (4, 3, 2, 1):
        if dim % width == 0:
            return dim // width
    return dim


class AnnIndex:
    """Approximate inner-product search with tombstones, keyed by image id.

    Labels are global positions (0..n-1); each shard maps its own positions to labels, `_ids`
    maps labels to image ids and `_alive` marks the live ones. Codes cannot be removed, so a
    deleted or re-embedded image only loses its `_alive` bit (a tombstone) and is filtered out
    at query time; the owner rebuilds once `dead_fraction` grows too large.
    """

    def __init__(
        self,
        dim: int,
        shards: list[faiss.Index],
        shard_labels: list[np.ndarray],
        ids: np.ndarray,
        alive: np.ndarray,
        generation: int = -1,
        synced_to: tuple[int, int] | None = None,
        library_id: str | None = None,
    ) -> None:
        self.dim = dim
        self.k_factor = ANN_K_FACTOR
        self._shards, self._shard_labels = shards, [np.asarray(a, np.int64) for a in shard_labels]
        self._ids = np.asarray(ids, dtype=np.int64)  # label -> image id
        self._alive = np.asarray(alive, dtype=bool)  # label -> not tombstoned
        self.generation = generation
        self.synced_to = synced_to  # (generation, id) of the newest stored vector added
        self.library_id = library_id  # the database it was built from

    @classmethod
    def train_new(
        cls, sample: np.ndarray, dim: int, generation: int = -1, library_id: str | None = None
    ) -> AnnIndex:
        """An empty index trained on `sample` (n, dim), at least ANN_MIN_TRAIN unit vectors."""
        sample = np.ascontiguousarray(sample, dtype=np.float32).reshape(-1, dim)[:ANN_TRAIN_SIZE]
        if len(sample) < ANN_MIN_TRAIN:
            raise ValueError(
                f"an approximate index needs {ANN_MIN_TRAIN} vectors to train, got {len(sample)}"
            )
        factory = f"PQ{ann_subquantizers(dim)}x4fs,Refine(SQ8)"
        first = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        # Small libraries (tests) train without FAISS's "too few points" warnings.
        faiss.downcast_index(first.base_index).pq.cp.min_points_per_centroid = 1
        first.train(sample)
        shards = [first] + [faiss.clone_index(first) for _ in range(ANN_SHARDS - 1)]
        empty = [np.zeros(0, np.int64) for _ in shards]
        return cls(
            dim,
            shards,
            empty,
            np.zeros(0, np.int64),
            np.zeros(0, bool),
            generation,
            library_id=library_id,
        )

    def __len__(self) -> int:
        return int(self._alive.sum())

    @property
    def dead_fraction(self) -> float:
        return 1.0 - len(self) / max(1, len(self._alive))

    def ids(self) -> np.ndarray:
        return self._ids[self._alive]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors; an id already present is replaced (its old vector becomes a tombstone)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        self.remove(ids)
        labels = np.arange(len(self._ids), len(self._ids) + len(ids), dtype=np.int64)
        smallest = min(range(len(self._shards)), key=lambda s: self._shards[s].ntotal)
        self._shards[smallest].add(vectors)
        self._shard_labels[smallest] = np.concatenate([self._shard_labels[smallest], labels])
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])

    def remove(self, ids: Iterable[int]) -> int:
        ids = np.fromiter(ids, dtype=np.int64)
        if not ids.size or not self._ids.size:
            return 0
        dead = np.isin(self._ids, ids) & self._alive
        self._alive[dead] = False
        return int(dead.sum())

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like VectorIndex.search, with approximate (8-bit) cosines; tombstones and ids outside
        `allowed` are filtered out, searching deeper until k hits are found or none are left."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        k = max(0, min(int(k), len(self) if allowed is None else len(allowed)))
        cosines = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        for row, query in enumerate(queries):
            row_cosines, row_ids = self._search_one(query, k, allowed)
            cosines[row, : len(row_ids)], found[row, : len(row_ids)] = row_cosines, row_ids
        return cosines, found

    def _search_one(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        # a narrow filter: score it all
        if allowed is not None and len(allowed) <= ANN_SUBSET_LIMIT:
            keep = self._alive & np.isin(self._ids, allowed)
            return self._best(self._shard_map(lambda s: self._score_subset(s, query, keep, k)), k)
        total = len(self._alive)
        want = int(np.ceil(k / max(1e-3, 1.0 - self.dead_fraction)))  # room for the tombstones
        while True:
            want = min(total, want)
            cosines, labels = self._shard_map(lambda s, n=want: self._scan(s, query, n))
            keep = self._alive[labels]
            if allowed is not None:
                keep &= np.isin(self._ids[labels], allowed)
            if keep.sum() >= k or want >= total:
                return self._best((cosines[keep], labels[keep]), k)
            want *= 4  # a filter or tombstones left too few: search deeper

    def _scan(self, shard: int, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, labels) of a shard's n best: fast-scan candidates re-scored with 8-bit codes."""
        index = self._shards[shard]
        n = min(n, index.ntotal)
        if n <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        params = faiss.IndexRefineSearchParameters(k_factor=float(self.k_factor))
        cosines, local = index.search(query[None], n, params=params)
        found = local[0] >= 0
        return cosines[0][found], self._shard_labels[shard][local[0][found]]

    def _score_subset(
        self, shard: int, query: np.ndarray, keep: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, labels) of the k best kept vectors of a shard, from its 8-bit codes alone."""
        local = np.flatnonzero(keep[self._shard_labels[shard]])
        if not local.size:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        codes = faiss.downcast_index(self._shards[shard].refine_index)
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(local))
        cosines, found = codes.search(query[None], min(k, local.size), params=params)
        ok = found[0] >= 0
        return cosines[0][ok], self._shard_labels[shard][found[0][ok]]

    def _shard_map(self, fn) -> tuple[np.ndarray, np.ndarray]:
        """fn(shard) -> (cosines, labels) on every shard in parallel, concatenated."""
        parts = list(_SHARD_POOL.map(fn, range(len(self._shards))))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _best(self, found: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        cosines, labels = found
        best = np.argsort(-cosines, kind="stable")[:k]
        return cosines[best], self._ids[labels[best]]

    def memory_bytes(self) -> int:
        """Codes in memory (fast-scan and 8-bit) plus the label maps."""
        codes = 0
        for shard in self._shards:
            base, refine = (
                faiss.downcast_index(shard.base_index),
                faiss.downcast_index(shard.refine_index),
            )
            codes += base.ntotal * base.code_size + refine.ntotal * refine.code_size
        return int(
            codes
            + self._ids.nbytes
            + self._alive.nbytes
            + sum(a.nbytes for a in self._shard_labels)
        )

    def save(self, path: str | os.PathLike) -> None:
        """All shards and label maps in one .npz, then its sidecar, each atomically (siglip_search.atomic)."""
        path = Path(path)
        arrays = {f"shard{i}": faiss.serialize_index(s) for i, s in enumerate(self._shards)}
        arrays |= {f"shard{i}_labels": a for i, a in enumerate(self._shard_labels)}
        arrays |= {"ids": self._ids, "alive": self._alive}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.chmod(tmp, NEW_FILE_MODE)  # a replaced file keeps its own mode (atomic_path)
            digest = _sha256(tmp)
        sidecar = {
            "format": SIDECAR_FORMAT,
            "kind": "ann",
            "dim": self.dim,
            "shards": len(self._shards),
            "labels": len(self._ids),
            "generation": self.generation,
            "synced_to": self.synced_to,
            "library_id": self.library_id,
            "sha256": digest,
        }
        _write_sidecar(path, sidecar)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AnnIndex:
        path = Path(path)
        try:
            sidecar = json.loads(sidecar_path(path).read_text())
            if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("kind") != "ann":
                raise IndexFileError("not an approximate index sidecar")
            if _sha256(path) != sidecar["sha256"]:
                raise IndexFileError("checksum mismatch")
            # Only a file whose checksum matches reaches FAISS, which trusts its input.
            with np.load(path) as stored:
                count = int(sidecar["shards"])
                shards = [faiss.deserialize_index(stored[f"shard{i}"]) for i in range(count)]
                labels = [stored[f"shard{i}_labels"] for i in range(count)]
                ids, alive = stored["ids"], stored["alive"]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IndexFileError(f"{path}: {exc}") from None
        sizes_agree = [s.ntotal for s in shards] == [len(a) for a in labels] and len(ids) == len(
            alive
        ) == sum(map(len, labels))
        if shards[0].d != sidecar["dim"] or not sizes_agree:
            raise IndexFileError(f"{path}: size or dim differ from its sidecar")
        synced_to = sidecar.get("synced_to")
        if synced_to and not all(isinstance(part, int) for part in synced_to):
            raise IndexFileError(
                f"{path}: synced to an (indexed_at, id) position, from before generations"
            )
        synced_to = (int(synced_to[0]), int(synced_to[1])) if synced_to else None
        return cls(
            shards[0].d,
            shards,
            labels,
            ids,
            alive,
            int(sidecar["generation"]),
            synced_to,
            sidecar.get("library_id"),
        )


def build_index(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    dim: int,
    generation: int,
    library_id: str | None = None,
) -> VectorIndex:
    """An index from streamed (ids, vectors) chunks, e.g. Store.iter_embeddings()."""
    index = VectorIndex(dim, generation=generation, library_id=library_id)
    for ids, vectors in chunks:
        index.add(ids, vectors)
    return index


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _write_sidecar(path: Path, sidecar: dict, mode: int = NEW_FILE_MODE) -> None:
    """The index's JSON sidecar, atomically (a replaced sidecar keeps its own mode)."""
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=1))
        os.chmod(tmp, mode)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
