"""A run's batches and what it counts: prepared photos grouped into batches, and each batch
committed (rows, vectors, failures) in one transaction. Whichever executor embedded a batch, here
is the one place where it becomes rows and counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from .prepare import Prepared
from .store import EmbeddedImage, FailedImage, FileUpdate, Store


class RunCounts(TypedDict):
    """A run's counts as the runs table keeps them (Store.finish_run's keyword arguments)."""

    added: int
    updated: int
    moved: int
    removed: int
    failed: int


@dataclass
class RunSummary:
    added: int = 0
    updated: int = 0  # changed files, re-embedded
    moved: int = 0  # moved or renamed: vector kept
    removed: int = 0
    failed: int = 0  # files that failed in this run
    unchanged: int = 0
    offline_roots: list[str] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)  # absolute; their rows are kept
    # suffix -> photos this Python cannot read
    undecodable: Counter[str] = field(default_factory=Counter)
    # absolute; folder links leaving their root
    outside_links: list[str] = field(default_factory=list)
    # suffix ("" for none) -> files that are not photos this indexer reads
    passed_over: Counter[str] = field(default_factory=Counter)
    hidden: int = 0  # hidden or system files and folders
    excluded: int = 0  # files and folders the roots' exclude patterns matched
    facts_read: int = 0  # photos indexed before whose lens and GPS were read now (metadata.py)
    seconds: float = 0.0
    device: str = ""  # where and how the model ran: "cpu, fp32", "cuda:0 (NVIDIA H200), fp16"
    nodes: Counter[str] = field(default_factory=Counter)  # photos embedded per node (Ray jobs)

    def counts(self) -> RunCounts:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "failed": self.failed,
        }

    @property
    def written(self) -> int:
        """Rows this run wrote or deleted."""
        return self.added + self.updated + self.moved + self.removed + self.failed

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        # A remote executor's photos were embedded on its nodes, not on this process's device.
        on = f"; {self.device}" if self.device and self.embedded and not self.nodes else ""
        line = (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, removed {self.removed}, "
            f"failed {self.failed} ({self.seconds:.1f} s, {self.images_per_s:.1f} img/s{on})"
        )
        if self.nodes:
            line += "; embedded on " + ", ".join(f"{n} {c}" for n, c in sorted(self.nodes.items()))
        return line


@dataclass
class Batch:
    """Up to batch_size photos to embed, and the failures and touched files met on the way."""

    ready: list[Prepared] = field(default_factory=list)
    failed: list[FailedImage] = field(default_factory=list)
    touched: list[FileUpdate] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ready) + len(self.failed) + len(self.touched)

    @property
    def embedded_elsewhere(self) -> bool:
        """Every ready photo came with its vector (a remote executor embedded them)."""
        return bool(self.ready) and all(p.vector is not None for p in self.ready)

    def take_vectors(self) -> np.ndarray:
        """(len(ready), dim) the vectors a remote executor embedded, in order."""
        return np.stack([p.vector for p in self.ready if p.vector is not None])

    def take_pixels(self, out: np.ndarray) -> np.ndarray:
        """The ready photos' pixels moved into `out` (batch_size, 3, H, W), the rows after them
        zero: each photo's own array is dropped, so a batch is held once. Every batch keeps one
        shape, so a photo gets bit-identical vectors however a run was cut into batches (kill -9
        and resume = one clean run)."""
        for row, prepared in enumerate(self.ready):
            if prepared.pixels is None:
                raise AssertionError(f"{prepared.work.file.rel_path} has no pixels to embed")
            out[row], prepared.pixels = prepared.pixels, None
        out[len(self.ready) :] = 0.0
        return out


def iter_batches(prepared: Iterable[Prepared], batch_size: int) -> Iterator[Batch]:
    """Group prepared photos in their order: a batch ends at batch_size photos to embed, or at
    batch_size failures and touched files."""
    batch = Batch()
    for item in prepared:
        w, f = item.work, item.work.file
        if item.error is not None:
            failure = (f.size_bytes, f.mtime_ns, item.error, item.fingerprint)
            batch.failed.append(FailedImage(w.root_id, f.rel_path, *failure))
        elif item.same_row is not None:
            stat = (f.size_bytes, f.mtime_ns)
            batch.touched.append(FileUpdate(item.same_row.id, w.root_id, f.rel_path, *stat))
        else:
            batch.ready.append(item)
        if len(batch.ready) >= batch_size or len(batch.failed) + len(batch.touched) >= batch_size:
            yield batch
            batch = Batch()
    if len(batch):
        yield batch


def commit_batch(
    store: Store, batch: Batch, vectors: np.ndarray, model_id: str, summary: RunSummary
) -> None:
    """Write one batch, its photos with `vectors` (row i for batch.ready[i]) and its failures, in
    one transaction (the touched files in a second), and count it in `summary`."""
    embedded = []
    for prepared, vector in zip(batch.ready, vectors, strict=True):
        w, f = prepared.work, prepared.work.file
        fingerprint, (width, height, m) = prepared.row_parts()
        embedded.append(
            EmbeddedImage(
                w.root_id,
                f.rel_path,
                f.size_bytes,
                f.mtime_ns,
                fingerprint,
                width,
                height,
                m.taken_at,
                m.camera,
                model_id,
                vector,
                m.lens,
                m.latitude,
                m.longitude,
            )
        )
    if embedded or batch.failed:
        store.write_batch(embedded, batch.failed)
    if batch.touched:
        store.update_locations(batch.touched)
    summary.nodes.update(p.node for p in batch.ready if p.node is not None)
    summary.added += sum(p.work.old is None for p in batch.ready)
    summary.updated += sum(p.work.old is not None for p in batch.ready)
    summary.failed += len(batch.failed)
    summary.unchanged += len(batch.touched)
