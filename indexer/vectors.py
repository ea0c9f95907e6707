"""The FAISS index over image embeddings (the only FAISS importer): build, search, atomic save, verified load."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

SIDECAR_FORMAT = 1


class IndexFileError(Exception):
    """The index file on disk is missing, corrupt or does not match its sidecar: rebuild it."""


class VectorIndex:
    """Exact inner-product search over unit vectors (inner product = cosine), keyed by image id.

    IndexIDMap2 keeps our database ids inside FAISS, so a search answers with image ids and
    remove_ids can drop a deleted image without renumbering anything.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None, generation: int = -1) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation  # the database's vectors_generation this index reflects

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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n, k'), ids (n, k')), best first, k' = min(k, len(self)); scores are cosines."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # (n, dim)
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = self._index.search(queries, k)
        return scores, ids

    def save(self, path: str | os.PathLike) -> None:
        """Write index then sidecar, each via temp file + fsync + rename: a crash leaves the old
        pair, a new pair, or a mismatch that load() detects; never a half-written file."""
        path = Path(path)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp makes 0600
        with _temp_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))
            os.chmod(tmp, mode)
            digest = _sha256_and_fsync(tmp)
            os.replace(tmp, path)
        ids = self.ids()
        sidecar = {
            "format": SIDECAR_FORMAT,
            "dim": self.dim,
            "count": len(self),
            "max_id": int(ids.max()) if ids.size else 0,
            "generation": self.generation,
            "sha256": digest,
        }
        with _temp_path(path) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=1))
            os.chmod(tmp, mode)
            _sha256_and_fsync(tmp)
            os.replace(tmp, sidecar_path(path))
        _fsync_dir(path.parent)

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
        return cls(index.d, index, generation=int(sidecar["generation"]))


def build_index(chunks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, generation: int) -> VectorIndex:
    """An index from streamed (ids, vectors) chunks, e.g. Store.iter_embeddings()."""
    index = VectorIndex(dim, generation=generation)
    for ids, vectors in chunks:
        index.add(ids, vectors)
    return index


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


@contextmanager
def _temp_path(target: Path) -> Iterator[Path]:
    """A temp file next to `target` (same filesystem, so os.replace is atomic); removed on error."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _sha256_and_fsync(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
