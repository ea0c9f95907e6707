"""The Store's tags: machine tags per photo, and the tags the user rejected (never proposed or
exported again for that photo)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import cast

import sqlalchemy as sa

from .base import StoreBase, chunks, now_utc, set_meta_values, unique_ids
from .rows import TagRecord, TagRejectionRow
from .schema import Image, Root, Tag, TagRejection

MACHINE_TAG_SOURCE = "zero-shot"
# Where a rejection comes from: a keyword the user deleted in a photo manager, which `export` found
# missing from the sidecar; or a tag rejected in this app.
REJECTION_SOURCES = ("sidecar", "user")


class TagStore(StoreBase):
    """Machine tags and rejections (a part of Store; every public method is one transaction)."""

    # --- tags -------------------------------------------------------------------------------
    def replace_machine_tags(
        self,
        tags: dict[int, list[tuple[str, float]]],
        model: str,
        vocabulary_version: str,
        meta: dict[str, str] | None = None,
    ) -> int:
        """Replace the machine tags of these images (an empty list clears them), and set `meta`
        keys, in one transaction (so an interrupted tagger resumes where it stopped). Tags the user
        rejected for a photo (reject_tags) are left out. Returns the number of tags written."""
        ids = list(tags)
        with self._session.begin() as session:
            rejected: set[tuple[int, str]] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                session.execute(
                    sa.delete(Tag).where(Tag.image_id.in_(chunk), Tag.source == MACHINE_TAG_SOURCE)
                )
                query = sa.select(TagRejection.image_id, TagRejection.tag).where(
                    TagRejection.image_id.in_(chunk)
                )
                rejected.update((int(i), t) for i, t in session.execute(query))
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
                if (int(i), tag) not in rejected
            ]
            if rows:
                session.execute(sa.insert(Tag), rows)
            set_meta_values(session, meta or {})
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

    # --- tags the user rejected -------------------------------------------------------------
    def reject_tags(self, rejections: Iterable[tuple[int, str]], source: str = "sidecar") -> int:
        """Record that the user rejected these machine tags of these photos ((image id, tag name as
        stored, e.g. "animal|dog")) and drop those machine tags, in one transaction: `tag` never
        proposes them again and `export` never writes them again; the photos' other tags stay. A
        pair already rejected keeps its first record; ids no longer in the library are ignored.
        `source`: one of REJECTION_SOURCES. Returns how many rejections are new."""
        if source not in REJECTION_SOURCES:
            raise ValueError(
                f"source must be one of {', '.join(REJECTION_SOURCES)}, got {source!r}"
            )
        wanted = sorted({(int(i), str(t)) for i, t in rejections})
        ids = unique_ids(i for i, _ in wanted)
        new: list[tuple[int, str]] = []
        with self._session.begin() as session:
            known: set[tuple[int, str]] = set()
            present: set[int] = set()
            for chunk in chunks(ids):
                query = sa.select(TagRejection.image_id, TagRejection.tag).where(
                    TagRejection.image_id.in_(chunk)
                )
                known.update((int(i), t) for i, t in session.execute(query))
                present.update(session.scalars(sa.select(Image.id).where(Image.id.in_(chunk))))
            new = [(i, t) for i, t in wanted if i in present and (i, t) not in known]
            if new:
                now = now_utc()
                session.execute(
                    sa.insert(TagRejection),
                    [
                        {"image_id": i, "tag": t, "source": source, "rejected_at": now}
                        for i, t in new
                    ],
                )
            for image_id, tag in wanted:
                session.execute(
                    sa.delete(Tag).where(
                        Tag.image_id == image_id, Tag.tag == tag, Tag.source == MACHINE_TAG_SOURCE
                    )
                )
        return len(new)

    def rejected_tags(self, image_ids: Iterable[int] | None = None) -> dict[int, set[str]]:
        """Image id -> the tag names the user rejected for it: every photo with a rejection, or only
        these photos (those without one are left out)."""
        found: dict[int, set[str]] = {}
        for row in self.iter_rejections(image_ids):
            found.setdefault(row.image_id, set()).add(row.tag)
        return found

    def iter_rejections(self, image_ids: Iterable[int] | None = None) -> Iterator[TagRejectionRow]:
        """Every rejection, or those of these photos, with the photo's path; by path, then tag."""
        query = (
            sa.select(TagRejection, Image.rel_path, Root.path)
            .join(Image, TagRejection.image_id == Image.id)
            .join(Root)
        )
        selections: list[sa.Select] = [query]
        if image_ids is not None:
            selections = [
                query.where(TagRejection.image_id.in_(chunk))
                for chunk in chunks(unique_ids(image_ids))
            ]
        rows: list[TagRejectionRow] = []
        with self._session() as session:
            for selection in selections:
                for rejection, rel_path, root_path in session.execute(selection):
                    path = os.path.join(root_path, *rel_path.split("/"))
                    rows.append(
                        TagRejectionRow(
                            rejection.image_id,
                            path,
                            rejection.tag,
                            rejection.source,
                            rejection.rejected_at,
                        )
                    )
        yield from sorted(rows, key=lambda r: (r.path, r.tag))

    def clear_rejections(
        self, image_ids: Iterable[int] | None = None, tags: Iterable[str] | None = None
    ) -> int:
        """Forget rejections: all of them, or those of these photos and/or these tag names; a later
        `tag --all` may then propose those tags again. Returns how many were forgotten."""
        parts = [None] if image_ids is None else list(chunks(unique_ids(image_ids)))
        names = None if tags is None else sorted({str(t) for t in tags})
        forgotten = 0
        with self._session.begin() as session:
            for chunk in parts:
                query = sa.delete(TagRejection)
                if chunk is not None:
                    query = query.where(TagRejection.image_id.in_(chunk))
                if names is not None:
                    query = query.where(TagRejection.tag.in_(names))
                result = cast("sa.CursorResult[tuple[()]]", session.execute(query))
                forgotten += int(result.rowcount or 0)
        return forgotten
