"""The on-disk IVF index for very large libraries: trained once on a sample of the embeddings,
filled in shards, merged into FAISS's on-disk inverted lists and served memory-mapped.

FAISS's own recipe for indexes larger than RAM (benchs/distributed_ondisk in facebookresearch/faiss;
faiss.contrib.ondisk.merge_ondisk, as clip-retrieval and autofaiss use it for LAION-5B): one trained
empty index, shards filled from disjoint parts of the data, their inverted lists merged into one
`.ivfdata` file that is mapped, not read, so a search touches only the lists it probes. Photos
indexed or deleted since the build are handled as the approximate index in vectors.py handles
them: deleted or re-embedded ids are tombstones filtered out inside FAISS, and the vectors added
since live in a small in-memory index with the same trained quantizer. The caller re-ranks the
candidates exactly from the stored embeddings (indexer.search).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from .errors import IndexFileError

INDEX_FILE, LISTS_FILE, TRAINED_FILE, IDS_FILE = (
    "index.faiss",
    "lists.ivfdata",
    "trained.faiss",
    "ids.npy",
)
DEFAULT_NPROBE = 16
# Candidates proposed for the exact re-rank: at least MIN_CANDIDATES, or CANDIDATES_PER_HIT per hit
# asked for. Measured on 200k x 768 clustered vectors (IVF1024,PQ96x4, nprobe 32): recall@10 after
# the re-rank 0.84 from 50 candidates, 0.998 from 100 (benchmarks/search_speed.py at 1M: docs).
MIN_CANDIDATES = 100
CANDIDATES_PER_HIT = 4
# A filter allowing at most this many photos skips the index: all of them are candidates.
SUBSET_LIMIT = 2_000


def default_factory(count: int, dim: int) -> str:
    """IVF with about 2 * sqrt(count) lists (a power of two) and 4-bit PQ codes of dim / 8 bytes.

    4-bit PQ trains in seconds where 8-bit PQ takes minutes, and its coarse scores need only bring
    the true neighbours among the candidates that the exact re-rank sorts."""
    nlist = 2 ** round(np.log2(max(16.0, 2.0 * np.sqrt(max(count, 1)))))
    return f"IVF{min(nlist, 65_536)},PQ{_subquantizers(dim)}x4"


def _subquantizers(dim: int) -> int:
    """Sub-quantizers of 4 dims each (4 bits for 4 dims: dim / 8 bytes a vector), else narrower."""
    for width in (4, 3, 2, 1):
        if dim % width == 0:
            return dim // width
    return dim


def list_count(factory: str, dim: int) -> int:
    """The number of inverted lists `factory` makes; ValueError when it is no IVF index FAISS can
    keep on disk."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        raise ValueError(
            f"{factory!r} is not an inverted-file (IVF) index FAISS can build: {_last_line(exc)}"
        ) from None
    if (
        "fs" in factory.rsplit(",", 1)[-1]
    ):  # fast-scan codes live in blocks on-disk lists cannot hold
        raise ValueError(
            f"{factory!r}: fast-scan codes cannot be kept on disk; use PQ...x4 instead"
        )
    return int(ivf.nlist)


def train_empty(sample: np.ndarray, factory: str) -> bytes:
    """An empty IVF index trained on `sample` (n, dim) unit vectors, serialized.

    ValueError for a factory that is no on-disk IVF index, or more lists than training vectors."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    nlist = list_count(factory, sample.shape[1])
    if len(sample) < nlist:
        raise ValueError(
            f"{factory!r} has {nlist} lists but there are only {len(sample)} vectors to train them"
        )
    index = faiss.index_factory(sample.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if hasattr(ivf, "do_polysemous_training"):
        # On by default for IVF-PQ, and 10x the training time: it serves Hamming pre-filtering only.
        ivf.do_polysemous_training = False
    # Small libraries train without FAISS's warnings (on stderr) about few points per centroid.
    ivf.cp.min_points_per_centroid = 1
    if hasattr(ivf, "pq"):
        ivf.pq.cp.min_points_per_centroid = 1
    index.train(sample)
    return bytes(faiss.serialize_index(index))


def fill_shard(
    trained: bytes, chunks: Iterable[tuple[np.ndarray, np.ndarray]], threads: int | None = None
) -> bytes:
    """The trained index filled with streamed (ids, vectors) chunks, serialized: one shard
    (`threads`: FAISS's threads in this process, for one of several shard workers on a machine)."""
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    index = _deserialize(trained)
    for ids, vectors in chunks:
        index.add_with_ids(
            np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64)
        )
    return bytes(faiss.serialize_index(index))


def merge_shards(trained: bytes, shard_files: list[Path], ids: np.ndarray, folder: Path) -> int:
    """Merge the shard files, in order, into `folder`: the index, its on-disk lists, the trained
    empty index (for vectors added later) and the ids (sorted) it holds. Returns how many vectors
    it holds. Each list keeps the shards' order, so shards cut from id-sorted data give the lists,
    and so the ids and scores, of one index filled in one go."""
    index = _deserialize(trained)
    with (
        _c_stdout_silenced()
    ):  # FAISS prints "resizing ..." to C's stdout: it would mix into --json
        merge_ondisk(index, [str(f) for f in shard_files], str(folder / LISTS_FILE))
    faiss.write_index(index, str(folder / INDEX_FILE))
    (folder / TRAINED_FILE).write_bytes(trained)
    np.save(folder / IDS_FILE, np.sort(np.asarray(ids, np.int64)))
    return int(index.ntotal)


def index_sha256(folder: Path) -> str:
    """Checksum of the index and trained files (the lists and ids are checked by size: at a billion
    photos they hold about 100 and 8 GB)."""
    digest = hashlib.sha256()
    for name in (INDEX_FILE, TRAINED_FILE):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class IvfIndex:
    """Approximate inner-product search over a memory-mapped IVF index, keyed by image id, with
    tombstones and an in-memory part for the vectors added since it was built."""

    approximate = True  # candidates for an exact re-rank, not final answers

    def __init__(
        self, main: faiss.Index, main_ids: np.ndarray, trained: bytes, folder: str, nprobe: int
    ) -> None:
        self.dim = int(main.d)
        self.folder = folder  # as recorded in the library
        self.nprobe = int(nprobe)
        self.generation = -1  # the database's vectors_generation this index reflects
        self._main = main
        self._nlist = int(faiss.extract_index_ivf(main).nlist)
        self._main_ids = main_ids  # sorted int64, memory-mapped
        self._trained = trained
        self._added = _deserialize(trained)
        self._added_ids = np.zeros(0, np.int64)
        self._stale = np.zeros(0, np.int64)  # ids of the main part that must not answer, sorted
        self._stale_selector: faiss.IDSelector | None = None  # referenced by _exclude: kept alive
        self._exclude: faiss.IDSelector | None = None

    @classmethod
    def load(
        cls,
        folder: Path,
        nprobe: int = DEFAULT_NPROBE,
        sha256: str | None = None,
        lists_bytes: int | None = None,
    ) -> IvfIndex:
        """Map the index in `folder`; IndexFileError when a file is missing or fails its checks."""
        if not (folder / INDEX_FILE).is_file():
            raise IndexFileError(f"the index folder {folder} is missing or incomplete")
        try:
            if sha256 is not None and index_sha256(folder) != sha256:
                raise IndexFileError("checksum mismatch")
            if lists_bytes is not None and (folder / LISTS_FILE).stat().st_size != lists_bytes:
                raise IndexFileError(f"{LISTS_FILE} is not the size it had when it was built")
            # Only files whose checksum matches reach FAISS, which trusts its input.
            with _c_stdout_silenced():  # "IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename ..."
                main = faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
            ids = np.load(folder / IDS_FILE, mmap_mode="r")
            trained = (folder / TRAINED_FILE).read_bytes()
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexFileError(f"{folder}: {_last_line(exc)}") from None
        if len(ids) != main.ntotal:
            raise IndexFileError(
                f"{folder}: {IDS_FILE} holds {len(ids)} ids, the index {main.ntotal}"
            )
        return cls(main, ids, trained, folder.name, nprobe)

    # --- keeping up with the database ---------------------------------------------------------
    def main_ids(self) -> np.ndarray:
        """The ids in the built index, sorted (memory-mapped)."""
        return self._main_ids

    def set_changes(self, gone: np.ndarray, added: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """What changed since the build: `gone`, ids of the built index deleted since (tombstones),
        and `added`, (ids, vectors) chunks written since (new photos, and re-embedded ones, whose
        old vectors become tombstones too), searched from memory."""
        added_index, added_ids = _deserialize(self._trained), []
        for ids, vectors in added:
            added_index.add_with_ids(
                np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64)
            )
            added_ids.append(np.asarray(ids, np.int64))
        self._added = added_index
        self._added_ids = np.sort(np.concatenate(added_ids)) if added_ids else np.zeros(0, np.int64)
        replaced = self._added_ids[np.isin(self._added_ids, self._main_ids)]
        self._stale = np.union1d(np.asarray(gone, np.int64), replaced)
        self._stale_selector = _batch_selector(self._stale)
        self._exclude = faiss.IDSelectorNot(self._stale_selector) if len(self._stale) else None

    def __len__(self) -> int:
        return len(self._main_ids) - len(self._stale) + len(self._added_ids)

    @property
    def changed_fraction(self) -> float:
        """Share of the live photos searched from memory or tombstoned since the build."""
        return (len(self._stale) + len(self._added_ids)) / max(1, len(self))

    def changes(self) -> tuple[int, int]:
        """(photos added or re-embedded since the build, tombstones in the built index)."""
        return len(self._added_ids), len(self._stale)

    def ids(self) -> np.ndarray:
        main = np.asarray(self._main_ids)
        return np.union1d(main[~np.isin(main, self._stale)], self._added_ids)

    def candidates(self, n: int) -> int:
        """How many candidates to propose for `n` exactly re-ranked hits."""
        return max(MIN_CANDIDATES, CANDIDATES_PER_HIT * n)

    def memory_bytes(self) -> int:
        """What lives in RAM: the trained quantizer (twice: for the added part too) and the added
        codes; the built lists are mapped from disk."""
        code_size = int(faiss.extract_index_ivf(self._added).code_size)
        return 2 * len(self._trained) + int(self._added.ntotal) * code_size

    # --- search -------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(approximate cosines (n, k'), ids (n, k')), best first, k' = min(k, live or allowed
        photos); tombstones never answer; rows with fewer hits are padded with id -1. A filter of
        at most SUBSET_LIMIT photos returns them all, unscored (-inf), for the exact re-rank."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        k = max(0, min(int(k), len(self) if allowed is None else len(allowed)))
        if allowed is not None and len(allowed) <= max(k, SUBSET_LIMIT):
            ids = np.sort(np.asarray(allowed, np.int64))[:k]
            return np.full((len(queries), len(ids)), -np.inf, np.float32), np.tile(
                ids, (len(queries), 1)
            )
        cosines = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        if k == 0:
            return cosines, found
        selectors = self._selectors(allowed)
        nprobe, todo = self.nprobe, np.arange(len(queries))
        while len(todo):
            cosines[todo], found[todo] = self._search_parts(queries[todo], k, nprobe, selectors)
            if nprobe >= self._nlist:
                break
            todo = todo[(found[todo] < 0).any(axis=1)]  # a filter or tombstones left too few
            nprobe *= 4  # probe more lists
        return cosines, found

    def _selectors(self, allowed: np.ndarray | None) -> list[faiss.IDSelector | None]:
        """Per part (built, added): which ids may answer."""
        if allowed is None:
            return [self._exclude, None]
        allowed = np.asarray(allowed, np.int64)
        main = allowed[~np.isin(allowed, self._stale)]
        return [_batch_selector(main), _batch_selector(allowed[np.isin(allowed, self._added_ids)])]

    def _search_parts(
        self, queries: np.ndarray, k: int, nprobe: int, selectors: list[faiss.IDSelector | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        parts = [(self._main, selectors[0])]
        if self._added.ntotal:
            parts.append((self._added, selectors[1]))
        found = []
        for index, selector in parts:
            params = faiss.SearchParametersIVF(nprobe=min(nprobe, self._nlist))
            if selector is not None:
                params.sel = selector
            found.append(index.search(queries, k, params=params))
        if len(found) == 1:
            return found[0]
        cosines = np.concatenate([f[0] for f in found], axis=1)  # (n, 2k)
        ids = np.concatenate([f[1] for f in found], axis=1)
        cosines[ids < 0] = -np.inf
        best = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cosines, best, 1), np.take_along_axis(ids, best, 1)


def _deserialize(blob: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))


def _batch_selector(ids: np.ndarray) -> faiss.IDSelector:
    return faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))


@contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """What C code prints to stdout during the block goes to /dev/null (Python's own stdout is
    flushed first; C's buffer is flushed before stdout comes back)."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
