"""The Store: typed access to one library database, every public method one transaction. This
module holds the images (writes, reads, embeddings, filters); the Store's other parts are its bases:
roots and runs (roots.py), tags and rejections (tags.py), the session and meta table (base.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from .base import now_utc
from .roots import RootStore
from .rows import (
    Counts,
    EmbeddedImage,
    EmbeddingChunk,
    FailedImage,
    FileState,
    FileUpdate,
    ImageRow,
)
from .schema import Image, Root, Tag, TagRejection
from .tags import MACHINE_TAG_SOURCE, TagStore


def _tag_named(column: InstrumentedAttribute[str], name: str) -> sa.ColumnElement[bool]:
    """A stored tag name equal to `name`, or ending with it as its last part (`dog`: `animal|dog`)."""
    name = name.strip()
    return sa.or_(column == name, column.endswith("|" + name, autoescape=True))


def _vector(blob: bytes | None) -> np.ndarray:
    """A stored embedding (dim,) float32, read-only; callers select only rows that have one."""
    assert blob is not None
    return np.frombuffer(blob, dtype=np.float32)


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


class Store(RootStore, TagStore):
    """Typed access to one library database; every public method is one transaction."""

    # --- images: writes ---------------------------------------------------------------------
    def write_batch(
        self, embedded: Iterable[EmbeddedImage], failed: Iterable[FailedImage] = ()
    ) -> None:
        """Insert or replace images by (root, rel_path), all in one transaction."""
        embedded, failed = list(embedded), list(failed)
        with self._session.begin() as session:
            existing = self._existing(session, [(e.root_id, e.rel_path) for e in embedded + failed])
            vectors_changed = bool(embedded)
            for item in embedded:
                image = existing.get((item.root_id, item.rel_path)) or Image(
                    root_id=item.root_id, rel_path=item.rel_path
                )
                image.size_bytes, image.mtime_ns, image.fingerprint = (
                    item.size_bytes,
                    item.mtime_ns,
                    item.fingerprint,
                )
                image.width, image.height, image.taken_at, image.camera = (
                    item.width,
                    item.height,
                    item.taken_at,
                    item.camera,
                )
                image.lens, image.latitude, image.longitude = (
                    item.lens,
                    item.latitude,
                    item.longitude,
                )
                image.status, image.error, image.model_id = "ok", None, item.model_id
                image.embedding = np.ascontiguousarray(item.embedding, dtype=np.float32).tobytes()
                image.indexed_at = now_utc()
                session.add(image)
            failed_keys = {(f.root_id, f.rel_path) for f in failed}
            stale = [
                i.id
                for key, i in existing.items()
                if key in failed_keys and i.embedding is not None
            ]
            if stale:  # a photo that no longer decodes keeps no machine tags of its old content
                session.execute(
                    sa.delete(Tag).where(Tag.image_id.in_(stale), Tag.source == MACHINE_TAG_SOURCE)
                )
            for fail in failed:
                image = existing.get((fail.root_id, fail.rel_path)) or Image(
                    root_id=fail.root_id, rel_path=fail.rel_path
                )
                vectors_changed |= image.embedding is not None
                image.size_bytes, image.mtime_ns = fail.size_bytes, fail.mtime_ns
                image.fingerprint = fail.fingerprint
                image.width = image.height = None
                image.taken_at = image.camera = image.model_id = image.embedding = None
                image.lens = image.latitude = image.longitude = None
                image.status, image.error, image.indexed_at = "failed", fail.reason, now_utc()
                session.add(image)
            if vectors_changed:
                self._bump_generation(session)

    def upsert_image(self, item: EmbeddedImage) -> None:
        self.write_batch([item])

    def mark_failed(self, item: FailedImage) -> None:
        self.write_batch([], [item])

    @staticmethod
    def _existing(session: Session, keys: list[tuple[int, str]]) -> dict[tuple[int, str], Image]:
        found: dict[tuple[int, str], Image] = {}
        for root_id in {root_id for root_id, _ in keys}:
            paths = [rel for r, rel in keys if r == root_id]
            for start in range(0, len(paths), 500):  # stay below any bound-parameter limit
                query = sa.select(Image).where(
                    Image.root_id == root_id, Image.rel_path.in_(paths[start : start + 500])
                )
                found.update({(i.root_id, i.rel_path): i for i in session.scalars(query)})
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
            for start in range(0, len(ids), 500):
                session.execute(sa.delete(Tag).where(Tag.image_id.in_(ids[start : start + 500])))
                session.execute(
                    sa.delete(TagRejection).where(
                        TagRejection.image_id.in_(ids[start : start + 500])
                    )
                )
                session.execute(sa.delete(Image).where(Image.id.in_(ids[start : start + 500])))
            self._bump_generation(session)
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

    def iter_embeddings(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 (n,), vectors float32 (n, dim)) chunks of all indexed images, by id; streamed."""
        query = (
            sa.select(Image.id, Image.embedding)
            .where(Image.status == "ok", Image.embedding.is_not(None))
            .order_by(Image.id)
            .execution_options(yield_per=batch_size)
        )
        with self._session() as session:
            for rows in session.execute(query).partitions():
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.stack([_vector(r[1]) for r in rows])
                yield ids, vectors

    def embeddings_by_ids(self, image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        ids = list(image_ids)
        with self._session() as session:
            rows = session.execute(
                sa.select(Image.id, Image.embedding).where(
                    Image.id.in_(ids), Image.embedding.is_not(None)
                )
            )
            return {i: _vector(e).copy() for i, e in rows}

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

    def images_per_root(self) -> dict[int, int]:
        with self._session() as session:
            query = (
                sa.select(Image.root_id, sa.func.count())
                .where(Image.status == "ok")
                .group_by(Image.root_id)
            )
            return dict(session.execute(query).all())

    # --- embeddings for search, tagging, duplicates -----------------------------------------
    def embedding_count(self) -> int:
        with self._session() as session:
            query = (
                sa.select(sa.func.count())
                .select_from(Image)
                .where(Image.status == "ok", Image.embedding.is_not(None))
            )
            return session.scalar(query) or 0

    def embedding_ids(self) -> np.ndarray:
        with self._session() as session:
            rows = session.scalars(
                sa.select(Image.id).where(Image.status == "ok", Image.embedding.is_not(None))
            )
            return np.fromiter(rows, dtype=np.int64)

    def iter_embeddings_after(
        self, after: tuple[str, int] | None = None, batch_size: int = 4096
    ) -> Iterator[EmbeddingChunk]:
        """Embeddings written after position `after` (all when None), oldest first: what an
        incremental consumer (tagging, the approximate index) has not seen yet. Re-embedding a
        changed file sets a new indexed_at, so it comes again."""
        query = sa.select(Image.id, Image.embedding, Image.indexed_at).where(
            Image.status == "ok", Image.embedding.is_not(None)
        )
        if after is not None:
            at = datetime.fromisoformat(after[0])
            query = query.where(
                sa.or_(Image.indexed_at > at, sa.and_(Image.indexed_at == at, Image.id > after[1]))
            )
        query = query.order_by(Image.indexed_at, Image.id).execution_options(yield_per=batch_size)
        with self._session() as session:
            for rows in session.execute(query).partitions():
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.stack([_vector(r[1]) for r in rows])
                yield EmbeddingChunk(ids, vectors, (rows[-1][2].isoformat(), int(rows[-1][0])))

    def image_ids_where(
        self,
        folders: list[tuple[int, str]] | None = None,
        taken_from: str | None = None,
        taken_before: str | None = None,
        *,
        camera: str | None = None,
        lens: str | None = None,
        has_gps: bool | None = None,
        tag: str | None = None,
        rejected: str | bool | None = None,
    ) -> np.ndarray:
        """Ids of indexed images under any of `folders` ((root id, rel prefix or "" for the whole
        root)) and taken in [taken_from, taken_before) (ISO 8601 strings; undated images fail a
        date filter); whose camera (make and model) or lens holds this text, case aside; with
        (True) or without (False) a GPS position; with this machine tag; whose user rejected this
        tag (True: any tag). A tag is its stored name (`animal|dog`) or its last part (`dog`)."""
        query = sa.select(Image.id).where(Image.status == "ok", Image.embedding.is_not(None))
        if folders is not None:
            clauses = [
                sa.and_(
                    Image.root_id == root_id,
                    sa.func.substr(Image.rel_path, 1, len(prefix) + 1) == prefix + "/",
                )
                if prefix
                else Image.root_id == root_id
                for root_id, prefix in folders
            ]
            query = query.where(sa.or_(*clauses) if clauses else sa.false())
        if taken_from is not None:
            query = query.where(Image.taken_at >= taken_from)
        if taken_before is not None:
            query = query.where(Image.taken_at < taken_before)
        for column, text in ((Image.camera, camera), (Image.lens, lens)):
            if text is not None:
                query = query.where(column.icontains(text.strip(), autoescape=True))
        if has_gps is not None:
            located = sa.and_(Image.latitude.is_not(None), Image.longitude.is_not(None))
            query = query.where(located if has_gps else sa.not_(located))
        if tag is not None:
            tagged = sa.select(Tag.image_id).where(_tag_named(Tag.tag, tag))
            query = query.where(Image.id.in_(tagged))
        if rejected is not None and rejected is not False:
            refused = sa.select(TagRejection.image_id)
            if isinstance(rejected, str):
                refused = refused.where(_tag_named(TagRejection.tag, rejected))
            query = query.where(Image.id.in_(refused))
        with self._session() as session:
            return np.fromiter(session.scalars(query.order_by(Image.id)), dtype=np.int64)

    def metadata_values(self, column: str) -> list[tuple[str, int]]:
        """The cameras ("camera") or lenses ("lens") of indexed photos, with how many photos each,
        most photos first: the choices of a search filter."""
        field = {"camera": Image.camera, "lens": Image.lens}[column]
        query = (
            sa.select(field, sa.func.count())
            .where(Image.status == "ok", field.is_not(None))
            .group_by(field)
            .order_by(sa.func.count().desc(), field)
        )
        with self._session() as session:
            return [(str(value), int(n)) for value, n in session.execute(query)]

    def fingerprint_groups(self) -> list[list[int]]:
        """Ids of indexed images sharing a content fingerprint (size + head/tail hash), per group."""
        with self._session() as session:
            shared = (
                sa.select(Image.fingerprint)
                .where(Image.status == "ok", Image.fingerprint.is_not(None))
                .group_by(Image.fingerprint)
                .having(sa.func.count() > 1)
            )
            rows = session.execute(
                sa.select(Image.fingerprint, Image.id)
                .where(Image.status == "ok", Image.fingerprint.in_(shared))
                .order_by(Image.fingerprint, Image.id)
            ).all()
        groups: dict[str | None, list[int]] = {}
        for fingerprint, image_id in rows:
            groups.setdefault(fingerprint, []).append(image_id)
        return list(groups.values())
