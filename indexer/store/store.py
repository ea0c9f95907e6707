"""The Store: typed access to one library database, every public method one transaction. This
module holds the images (writes, reads, embeddings, filters); the Store's other parts are its bases:
roots and runs (roots.py), tags and rejections (tags.py), the session and meta table (base.py).
Batched writes (bulk.py), the vectors' generation (generation.py) and a server's locks (locks.py)
live apart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from .base import now_utc, stored_vector
from .bulk import embedded_row, failed_row, upsert_images
from .generation import next_generation
from .queries import QueryStore
from .roots import RootStore
from .rows import (
    Counts,
    EmbeddedImage,
    FailedImage,
    FileState,
    FileUpdate,
    ImageRow,
    PhotoFacts,
)
from .schema import METADATA_VERSION, Image, Root, Tag, TagRejection
from .tags import MACHINE_TAG_SOURCE, TagStore


def _image_row(image: Image, root_path: str) -> ImageRow:
    return ImageRow(
        image.id,
        image.root_id,
        root_path,
        image.rel_path,
        image.size_bytes,
        image.mtime_ns,
        image.fingerprint,
        image.width,
        image.height,
        image.taken_at,
        image.camera,
        image.status,
        image.error,
        image.model_id,
        image.lens,
        image.latitude,
        image.longitude,
    )


class Store(QueryStore, RootStore, TagStore):
    """Typed access to one library database; every public method is one transaction."""

    # --- images: writes ---------------------------------------------------------------------
    def write_batch(
        self, embedded: Iterable[EmbeddedImage], failed: Iterable[FailedImage] = ()
    ) -> None:
        """Insert or replace images by (root, rel_path), all in one transaction (bulk.py)."""
        embedded, failed = list(embedded), list(failed)
        if not embedded and not failed:
            return
        with self._session.begin() as session:
            stale = (
                self._with_vectors(session, [(f.root_id, f.rel_path) for f in failed])
                if failed
                else []
            )
            # The generation comes first: it takes the lock that orders commits (generation.py).
            generation = next_generation(session, durable=False) if embedded or stale else None
            now = now_utc()
            if stale:  # a photo that no longer decodes keeps no machine tags of its old content
                session.execute(
                    sa.delete(Tag).where(Tag.image_id.in_(stale), Tag.source == MACHINE_TAG_SOURCE)
                )
            upsert_images(
                session,
                [embedded_row(item, now, generation) for item in embedded]
                + [failed_row(item, now, generation) for item in failed],
            )

    def upsert_image(self, item: EmbeddedImage) -> None:
        self.write_batch([item])

    def mark_failed(self, item: FailedImage) -> None:
        self.write_batch([], [item])

    @staticmethod
    def _with_vectors(session: Session, keys: list[tuple[int, str]]) -> list[int]:
        """Ids of the stored images at these (root id, rel_path) that hold a vector."""
        found: list[int] = []
        for root_id in {root_id for root_id, _ in keys}:
            paths = [rel for r, rel in keys if r == root_id]
            for start in range(0, len(paths), 500):  # stay below any bound-parameter limit
                query = sa.select(Image.id).where(
                    Image.root_id == root_id,
                    Image.rel_path.in_(paths[start : start + 500]),
                    Image.embedding.is_not(None),
                )
                found += session.scalars(query)
        return found

    def update_locations(self, updates: Iterable[FileUpdate]) -> None:
        """Moves, renames and touched files: new place or stat, same row id and vector."""
        with self._session.begin() as session:
            for u in updates:
                session.execute(
                    sa.update(Image)
                    .where(Image.id == u.image_id)
                    .values(
                        root_id=u.root_id,
                        rel_path=u.rel_path,
                        size_bytes=u.size_bytes,
                        mtime_ns=u.mtime_ns,
                    )
                )

    def delete_images(self, image_ids: Iterable[int]) -> int:
        ids = list(image_ids)
        if not ids:
            return 0
        with self._session.begin() as session:
            next_generation(session)
            for start in range(0, len(ids), 500):
                session.execute(sa.delete(Tag).where(Tag.image_id.in_(ids[start : start + 500])))
                session.execute(
                    sa.delete(TagRejection).where(
                        TagRejection.image_id.in_(ids[start : start + 500])
                    )
                )
                session.execute(sa.delete(Image).where(Image.id.in_(ids[start : start + 500])))
        return len(ids)

    # --- images: reads ----------------------------------------------------------------------
    def file_states(self, root_id: int, prefix: str = "") -> dict[str, FileState]:
        """Stored files of a root (only under `prefix`/, when given), keyed by rel_path."""
        query = sa.select(
            Image.id,
            Image.rel_path,
            Image.size_bytes,
            Image.mtime_ns,
            Image.fingerprint,
            Image.status,
            Image.error,
        ).where(Image.root_id == root_id)
        with self._session() as session:
            rows = [FileState(*row) for row in session.execute(query)]
        if prefix:
            rows = [r for r in rows if r.rel_path.startswith(prefix + "/")]
        return {r.rel_path: r for r in rows}

    def iter_embeddings(
        self, batch_size: int = 4096, first_id: int | None = None, last_id: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 (n,), vectors float32 (n, dim)) chunks of all indexed images (with ids in
        [first_id, last_id] when given: one shard of an index build), by id; streamed."""
        query = sa.select(Image.id, Image.embedding).where(
            Image.status == "ok", Image.embedding.is_not(None)
        )
        if first_id is not None:
            query = query.where(Image.id >= first_id)
        if last_id is not None:
            query = query.where(Image.id <= last_id)
        query = query.order_by(Image.id).execution_options(yield_per=batch_size)
        with self._session() as session:
            for rows in session.execute(query).partitions():
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.stack([stored_vector(r[1]) for r in rows])
                yield ids, vectors

    def embeddings_by_ids(self, image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        ids = list(image_ids)
        with self._session() as session:
            rows = session.execute(
                sa.select(Image.id, Image.embedding).where(
                    Image.id.in_(ids), Image.embedding.is_not(None)
                )
            )
            return {i: stored_vector(e).copy() for i, e in rows}

    def image_by_id(self, image_id: int) -> ImageRow | None:
        rows = self.images_by_ids([image_id])
        return rows[0] if rows else None

    def images_by_ids(self, image_ids: Iterable[int]) -> list[ImageRow]:
        """Rows in the order of `image_ids`; ids that no longer exist are left out."""
        ids = [int(i) for i in image_ids]
        found: dict[int, ImageRow] = {}
        with self._session() as session:
            for start in range(0, len(ids), 500):
                query = (
                    sa.select(Image, Root.path)
                    .join(Root)
                    .options(defer(Image.embedding))
                    .where(Image.id.in_(ids[start : start + 500]))
                )
                found.update(
                    {image.id: _image_row(image, path) for image, path in session.execute(query)}
                )
        return [found[i] for i in ids if i in found]

    def iter_images(self, status: str = "ok", batch_size: int = 1000) -> Iterator[ImageRow]:
        query = (
            sa.select(Image, Root.path)
            .join(Root)
            .options(defer(Image.embedding))
            .where(Image.status == status)
            .order_by(Image.id)
            .execution_options(yield_per=batch_size)
        )
        with self._session() as session:
            for image, path in session.execute(query):
                yield _image_row(image, path)

    def failures(self) -> list[ImageRow]:
        return sorted(self.iter_images("failed"), key=lambda r: r.path)

    def counts(self) -> Counts:
        with self._session() as session:
            by_status = dict(
                session.execute(
                    sa.select(Image.status, sa.func.count()).group_by(Image.status)
                ).all()
            )
            roots = session.scalar(sa.select(sa.func.count()).select_from(Root)) or 0
            tags = session.scalar(sa.select(sa.func.count()).select_from(Tag)) or 0
            rejected = session.scalar(sa.select(sa.func.count()).select_from(TagRejection)) or 0
        return Counts(by_status.get("ok", 0), by_status.get("failed", 0), roots, tags, rejected)

    def images_missing_facts(self, root_ids: Iterable[int]) -> list[ImageRow]:
        """Indexed photos of these roots whose date, camera, lens and position were read by an
        older version (metadata_version below METADATA_VERSION, or NULL), by id."""
        query = (
            sa.select(Image, Root.path)
            .join(Root)
            .options(defer(Image.embedding))
            .where(
                Image.status == "ok",
                Image.root_id.in_(list(root_ids)),
                sa.or_(Image.metadata_version.is_(None), Image.metadata_version < METADATA_VERSION),
            )
            .order_by(Image.id)
        )
        with self._session() as session:
            return [_image_row(image, path) for image, path in session.execute(query)]

    def set_photo_facts(self, facts: Iterable[PhotoFacts]) -> None:
        """Store what photo files say about themselves, read again (metadata.py); the rows'
        vectors and everything else stay."""
        with self._session.begin() as session:
            for f in facts:
                session.execute(
                    sa.update(Image)
                    .where(Image.id == f.image_id)
                    .values(
                        taken_at=f.taken_at,
                        camera=f.camera,
                        lens=f.lens,
                        latitude=f.latitude,
                        longitude=f.longitude,
                        metadata_version=METADATA_VERSION,
                    )
                )

    def images_per_root(self) -> dict[int, int]:
        with self._session() as session:
            query = (
                sa.select(Image.root_id, sa.func.count())
                .where(Image.status == "ok")
                .group_by(Image.root_id)
            )
            return dict(session.execute(query).all())
