"""The Store: typed access to one library database, every public method one transaction.

Above ~400 lines as one class: its methods share the session factory and return the typed rows of
rows.py; the tables and migrations (schema.py) and opening the database (connect.py) live apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .rows import (
    Counts,
    EmbeddedImage,
    EmbeddingChunk,
    FailedImage,
    FileState,
    FileUpdate,
    ImageRow,
    RootRow,
    RunRow,
    TagRecord,
)
from .schema import Image, Meta, Root, Run, Tag, is_read_only

GENERATION_KEY = "vectors_generation"
MACHINE_TAG_SOURCE = "zero-shot"


def _run_roots(text: str | None) -> list[str]:
    """The folders of a run: a JSON list, as a folder name may hold a newline. Runs recorded before
    that wrote one folder a line; an absolute path never starts with "[", so the two cannot be confused."""
    if not text:
        return []
    return json.loads(text) if text.startswith("[") else text.splitlines()


def _vector(blob: bytes | None) -> np.ndarray:
    """A stored embedding (dim,) float32, read-only; callers select only rows that have one."""
    assert blob is not None
    return np.frombuffer(blob, dtype=np.float32)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
    )


class Store:
    """Typed access to one library database; every public method is one transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.read_only = is_read_only(engine)  # opened with mode=ro: every write would fail
        self._session = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # --- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._session() as session:
            return session.scalar(sa.select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self._session.begin() as session:
            session.merge(Meta(key=key, value=value))

    def vectors_generation(self) -> int:
        """Bumped in every transaction that changes the set of stored embeddings."""
        return int(self.get_meta(GENERATION_KEY) or 0)

    def _bump_generation(self, session: Session) -> None:
        row = session.get(Meta, GENERATION_KEY)
        if row is None:
            session.add(Meta(key=GENERATION_KEY, value="1"))
        else:
            row.value = str(int(row.value) + 1)

    # --- roots ------------------------------------------------------------------------------
    def add_root(self, path: str) -> RootRow:
        with self._session.begin() as session:
            root = session.scalar(sa.select(Root).where(Root.path == path))
            if root is None:
                root = Root(path=path, added_at=_now())
                session.add(root)
                session.flush()
            return RootRow(root.id, root.path, root.added_at)

    def roots(self) -> list[RootRow]:
        with self._session() as session:
            return [
                RootRow(r.id, r.path, r.added_at)
                for r in session.scalars(sa.select(Root).order_by(Root.path))
            ]

    def merge_root(self, child: RootRow, parent: RootRow) -> None:
        """`child` lies inside `parent`: re-home its images under `parent` and drop it."""
        prefix = os.path.relpath(child.path, parent.path).replace(os.sep, "/")
        with self._session.begin() as session:
            for image in session.scalars(sa.select(Image).where(Image.root_id == child.id)):
                image.root_id, image.rel_path = parent.id, f"{prefix}/{image.rel_path}"
            session.flush()
            session.execute(sa.delete(Root).where(Root.id == child.id))

    def remove_root(self, root_id: int) -> int:
        """Forget a root: its images, their vectors and tags go from the library (never the files).
        Returns how many images it held."""
        with self._session.begin() as session:
            ids = list(session.scalars(sa.select(Image.id).where(Image.root_id == root_id)))
            for start in range(0, len(ids), 500):
                session.execute(sa.delete(Tag).where(Tag.image_id.in_(ids[start : start + 500])))
            session.execute(sa.delete(Image).where(Image.root_id == root_id))
            session.execute(sa.delete(Root).where(Root.id == root_id))
            if ids:
                self._bump_generation(session)
        return len(ids)

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
                image.status, image.error, image.model_id = "ok", None, item.model_id
                image.embedding = np.ascontiguousarray(item.embedding, dtype=np.float32).tobytes()
                image.indexed_at = _now()
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
                image.status, image.error, image.indexed_at = "failed", fail.reason, _now()
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
        return Counts(by_status.get("ok", 0), by_status.get("failed", 0), roots, tags)

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

    def latest_embedding_position(self) -> tuple[str, int] | None:
        """The position (indexed_at, id) of the newest embedding: iter_embeddings_after(it) yields
        only what is written later. None when there is none."""
        query = (
            sa.select(Image.indexed_at, Image.id)
            .where(Image.status == "ok", Image.embedding.is_not(None))
            .order_by(Image.indexed_at.desc(), Image.id.desc())
            .limit(1)
        )
        with self._session() as session:
            row = session.execute(query).first()
        return (row[0].isoformat(), int(row[1])) if row is not None else None

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
    ) -> np.ndarray:
        """Ids of indexed images under any of `folders` ((root id, rel prefix or "" for the whole
        root)) and taken in [taken_from, taken_before) (ISO 8601 strings; undated images fail a
        date filter)."""
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
        with self._session() as session:
            return np.fromiter(session.scalars(query.order_by(Image.id)), dtype=np.int64)

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

    # --- tags -------------------------------------------------------------------------------
    def replace_machine_tags(
        self,
        tags: dict[int, list[tuple[str, float]]],
        model: str,
        vocabulary_version: str,
        meta: dict[str, str] | None = None,
    ) -> int:
        """Replace the machine tags of these images (an empty list clears them), and set `meta`
        keys, in one transaction (so an interrupted tagger resumes where it stopped). Returns the
        number of tags written."""
        ids = list(tags)
        rows = [
            {
                "image_id": i,
                "tag": tag,
                "score": float(score),
                "source": MACHINE_TAG_SOURCE,
                "model": model,
                "vocabulary_version": vocabulary_version,
            }
            for i, found in tags.items()
            for tag, score in found
        ]
        with self._session.begin() as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                session.execute(
                    sa.delete(Tag).where(Tag.image_id.in_(chunk), Tag.source == MACHINE_TAG_SOURCE)
                )
            if rows:
                session.execute(sa.insert(Tag), rows)
            for key, value in (meta or {}).items():
                session.merge(Meta(key=key, value=value))
        return len(rows)

    def iter_tags(
        self,
        source: str | None = MACHINE_TAG_SOURCE,
        min_score: float | None = None,
        image_ids: Iterable[int] | None = None,
    ) -> Iterator[TagRecord]:
        """Stored tags, by image path then best score first; optionally of one source, above a score."""
        query = (
            sa.select(Tag, Image.rel_path, Root.path)
            .join(Image, Tag.image_id == Image.id)
            .join(Root)
        )
        if source is not None:
            query = query.where(Tag.source == source)
        if min_score is not None:
            query = query.where(Tag.score >= min_score)
        if image_ids is not None:
            query = query.where(Tag.image_id.in_([int(i) for i in image_ids]))
        query = query.order_by(Root.path, Image.rel_path, Tag.score.desc(), Tag.tag)
        with self._session() as session:
            for tag, rel_path, root_path in session.execute(query):
                path = os.path.join(root_path, *rel_path.split("/"))
                yield TagRecord(
                    tag.image_id,
                    path,
                    tag.tag,
                    tag.score,
                    tag.source,
                    tag.model,
                    tag.vocabulary_version,
                )

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, roots: list[str]) -> int:
        """Record a run; runs still 'running' were killed (the caller holds the lock)."""
        with self._session.begin() as session:
            session.execute(
                sa.update(Run).where(Run.status == "running").values(status="interrupted")
            )
            run = Run(
                started_at=_now(),
                status="running",
                roots=json.dumps(list(roots), ensure_ascii=False),
            )
            session.add(run)
            session.flush()
            return run.id

    def finish_run(
        self,
        run_id: int,
        *,
        added: int,
        updated: int,
        moved: int,
        removed: int,
        failed: int,
        status: str = "ok",
    ) -> None:
        with self._session.begin() as session:
            run = session.get_one(Run, run_id)
            run.finished_at, run.status = _now(), status
            run.added, run.updated, run.moved, run.removed, run.failed = (
                added,
                updated,
                moved,
                removed,
                failed,
            )

    def last_run(self) -> RunRow | None:
        with self._session() as session:
            run = session.scalar(sa.select(Run).order_by(Run.id.desc()).limit(1))
            if run is None:
                return None
            return RunRow(
                run.id,
                run.started_at,
                run.finished_at,
                run.status,
                _run_roots(run.roots),
                run.added,
                run.updated,
                run.moved,
                run.removed,
                run.failed,
            )
