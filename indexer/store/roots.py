"""The Store's roots and runs: the folders a library indexes, and the record of each indexing run."""

from __future__ import annotations

import json
import os

import sqlalchemy as sa

from .base import StoreBase, insert, now_utc
from .generation import next_generation, prune_generations
from .rows import PassedOver, RootRow, RunRow
from .schema import Image, Root, Run, Tag, TagRejection


def _run_roots(text: str | None) -> list[str]:
    """The folders of a run: a JSON list, as a folder name may hold a newline. Runs recorded before
    that wrote one folder a line; an absolute path never starts with "[", so the two cannot be confused."""
    if not text:
        return []
    return json.loads(text) if text.startswith("[") else text.splitlines()


def _overlap(folders: list[str], others: list[str]) -> bool:
    """Whether a folder of one list is a folder of the other, or inside or around one."""
    return any(
        a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
        for a in folders
        for b in others
    )


def _root_row(root: Root) -> RootRow:
    exclude = tuple(json.loads(root.exclude)) if root.exclude else ()
    return RootRow(
        root.id, root.path, root.added_at, exclude, PassedOver.from_json(root.passed_over)
    )


def _rehomed_patterns(patterns: tuple[str, ...], prefix: str) -> list[str]:
    """A merged child root's exclude patterns, as patterns of its parent: one anchored at the
    child's top (`/raw/*`) gets the child's place (`/2024/raw/*`); the others (`*/@eaDir/*`) match at
    any depth and now apply to the whole parent."""
    return [f"/{prefix}{p}" if p.startswith("/") else p for p in patterns]


class RootStore(StoreBase):
    """Roots and runs (a part of Store; every public method is one transaction)."""

    # --- roots ------------------------------------------------------------------------------
    def add_root(self, path: str) -> RootRow:
        with self._session.begin() as session:
            # Two writers may register one folder at once (indexing it and a folder inside it).
            session.execute(
                insert(session, Root).values(path=path, added_at=now_utc()).on_conflict_do_nothing()
            )
            return _root_row(session.scalars(sa.select(Root).where(Root.path == path)).one())

    def roots(self) -> list[RootRow]:
        with self._session() as session:
            return [_root_row(r) for r in session.scalars(sa.select(Root).order_by(Root.path))]

    def set_root_exclude(self, root_id: int, patterns: list[str]) -> RootRow:
        """Replace a root's exclude patterns (`index --exclude`), kept in the order given."""
        with self._session.begin() as session:
            root = session.get_one(Root, root_id)
            unique = list(dict.fromkeys(patterns))
            root.exclude = json.dumps(unique, ensure_ascii=False) if unique else None
            return _root_row(root)

    def set_passed_over(self, root_id: int, passed_over: PassedOver) -> None:
        """What a scan of the whole root left out (replacing the last scan's)."""
        with self._session.begin() as session:
            session.get_one(Root, root_id).passed_over = passed_over.to_json()

    def merge_root(self, child: RootRow, parent: RootRow) -> None:
        """`child` lies inside `parent`: re-home its images (and its exclude patterns) under
        `parent` and drop it."""
        prefix = os.path.relpath(child.path, parent.path).replace(os.sep, "/")
        with self._session.begin() as session:
            for image in session.scalars(sa.select(Image).where(Image.root_id == child.id)):
                image.root_id, image.rel_path = parent.id, f"{prefix}/{image.rel_path}"
            outer = session.get_one(Root, parent.id)
            patterns = [*_root_row(outer).exclude, *_rehomed_patterns(child.exclude, prefix)]
            unique = list(dict.fromkeys(patterns))
            outer.exclude = json.dumps(unique, ensure_ascii=False) if unique else None
            session.flush()
            session.execute(sa.delete(Root).where(Root.id == child.id))

    def remove_root(self, root_id: int) -> int:
        """Forget a root: its images, their vectors and tags go from the library (never the files).
        Returns how many images it held."""
        with self._session.begin() as session:
            ids = list(session.scalars(sa.select(Image.id).where(Image.root_id == root_id)))
            if ids:
                next_generation(session)
            for start in range(0, len(ids), 500):
                session.execute(sa.delete(Tag).where(Tag.image_id.in_(ids[start : start + 500])))
                session.execute(
                    sa.delete(TagRejection).where(
                        TagRejection.image_id.in_(ids[start : start + 500])
                    )
                )
            session.execute(sa.delete(Image).where(Image.root_id == root_id))
            session.execute(sa.delete(Root).where(Root.id == root_id))
        return len(ids)

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, roots: list[str], *, whole_library: bool = True) -> int:
        """Record a run. Runs still 'running' that the caller's lock excludes were killed: all of
        them when it holds the whole library, else those over the same folders, or folders inside
        or around them (runs over other folders may be running now, from another machine)."""
        with self._session.begin() as session:
            running = session.execute(
                sa.select(Run.id, Run.roots).where(Run.status == "running")
            ).all()
            dead = [
                run_id
                for run_id, text in running
                if whole_library or _overlap(_run_roots(text), roots)
            ]
            if dead:
                session.execute(sa.update(Run).where(Run.id.in_(dead)).values(status="interrupted"))
            run = Run(
                started_at=now_utc(),
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
            run.finished_at, run.status = now_utc(), status
            run.added, run.updated, run.moved, run.removed, run.failed = (
                added,
                updated,
                moved,
                removed,
                failed,
            )
            prune_generations(session)

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
