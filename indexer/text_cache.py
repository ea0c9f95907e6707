"""Text embeddings kept in memory, least recently used dropped first: search's query texts and
tagging's vocabularies (their prompt-ensemble vectors) are embedded once per process, not per call."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class TextEmbeddingCache:
    """Vectors by key (a query text, a vocabulary's digest), at most `size` of them. Safe to share
    between threads; `compute` runs outside the lock, so a slow embedding blocks no other lookup."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            if key not in self._vectors:
                return None
            self._vectors.move_to_end(key)
            return self._vectors[key]

    def put(self, key: str, vectors: np.ndarray) -> None:
        with self._lock:
            self._vectors[key] = vectors
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached vectors of `key`, else `compute()`'s, kept for next time."""
        vectors = self.get(key)
        if vectors is None:
            vectors = compute()
            self.put(key, vectors)
        return vectors

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    def __len__(self) -> int:
        return len(self._vectors)
