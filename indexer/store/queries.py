"""The Store's reads for search, tagging and duplicates: embeddings in bulk or since a point,
the ids a search filter allows, fingerprint groups, the cameras and lenses to choose from."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute

from .base import StoreBase, stored_vector
from .rows import EmbeddingChunk
from .schema import Image, Tag, TagRejection


def _tag_named(column: InstrumentedAttribute[str], name: str) -> sa.ColumnElement[bool]:
    """A stored tag name equal to `name`, or ending with it as its last part (`dog`: `animal|dog`)."""
    name = name.strip()
    return sa.or_(column == name, column.endswith("|" + name, autoescape=True))


class QueryStore(StoreBase):
    """Reads for search, tagging and duplicates (a part of Store; each method one transaction)."""

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

    def latest_embedding_position(self) -> tuple[int, int] | None:
        """The position (generation, id) of the newest embedding: iter_embeddings_after(it)
        yields only what is written later. None when there is none."""
        query = (
            sa.select(Image.generation, Image.id)
            .where(Image.status == "ok", Image.embedding.is_not(None))
            .order_by(Image.generation.desc().nulls_last(), Image.id.desc())
            .limit(1)
        )
        with self._session() as session:
            row = session.execute(query).first()
        return (int(row[0] or 0), int(row[1])) if row is not None else None

    def iter_embeddings_after(
        self, after: tuple[int, int] | None = None, batch_size: int = 4096
    ) -> Iterator[EmbeddingChunk]:
        """Embeddings written after position `after` (all when None), oldest first: what an
        incremental consumer (tagging, the approximate index) has not seen yet. Positions are
        (generation, id), and generations become visible in order (generation.py), so a row
        committed by another writer later never lands behind a position already passed.
        Re-embedding a changed file gives it a new generation, so it comes again."""
        query = sa.select(Image.id, Image.embedding, Image.generation).where(
            Image.status == "ok", Image.embedding.is_not(None)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(Image.generation, Image.id) > sa.tuple_(int(after[0]), int(after[1]))
            )
        query = query.order_by(Image.generation, Image.id).execution_options(yield_per=batch_size)
        with self._session() as session:
            for rows in session.execute(query).partitions():
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.stack([stored_vector(r[1]) for r in rows])
                yield EmbeddingChunk(ids, vectors, (int(rows[-1][2] or 0), int(rows[-1][0])))

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
