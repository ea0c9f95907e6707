"""Which folders an indexing run scans: the roots (registered on first use, a new parent absorbing
the registered roots inside it), sub-folders of a root, and the roots left with nothing to keep."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ExcludePatternError, FolderNotFoundError
from .scan import is_junk, is_root_online, normalized_pattern
from .store import RootRow, Store


@dataclass
class Target:
    """A folder to scan: a whole root, or a folder inside one (prefix = its rel path)."""

    root: RootRow
    folder: str
    prefix: str = ""


# Kernel and device trees: never photo folders, and /proc/self/root leads to everything.
_SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def drop_vanished_empty_roots(store: Store) -> None:
    """A root whose folder is gone and whose photos all moved elsewhere holds nothing to keep."""
    per_root = store.images_per_root()
    for root in store.roots():
        if not per_root.get(root.id) and not os.path.isdir(root.path):
            store.remove_root(root.id)


def resolve_targets(store: Store, paths: list[str | os.PathLike]) -> list[Target]:
    """Roots (registered on first use) and sub-folders to scan. A folder inside a registered root
    is scanned as part of it; a new folder that contains registered roots absorbs them."""
    roots = store.roots()
    if not paths:
        if not roots:
            raise FolderNotFoundError(
                "no folders are registered in this library yet; name the folders to index"
            )
        return [Target(root, root.path) for root in roots]
    targets: list[Target] = []
    # Parents first, so a new parent absorbs registered children before they are targeted.
    for given in sorted(paths, key=lambda p: len(Path(p).expanduser().resolve().parts)):
        folder = Path(given).expanduser().resolve()
        # The innermost registered root holding the folder (roots can nest, see below).
        holding = [r for r in roots if folder == Path(r.path) or Path(r.path) in folder.parents]
        root = max(holding, key=lambda r: len(Path(r.path).parts), default=None)
        if not folder.is_dir() and not (root and folder == Path(root.path)):
            what = "is not a folder" if folder.exists() else "does not exist"
            raise FolderNotFoundError(f"{given} {what}")
        if root is None:
            if folder == Path(folder.anchor) or any(
                folder == Path(d) or Path(d) in folder.parents for d in _SYSTEM_FOLDERS
            ):
                raise FolderNotFoundError(
                    f"{given} is a system folder, not a photo folder; name the folder of your photos"
                )
            root = store.add_root(str(folder))
            per_root = store.images_per_root()
            for child in [r for r in roots if folder in Path(r.path).parents]:
                # Absorb a child only where the new root's scan will see its photos: an offline child
                # (unmounted disk) or one inside a hidden folder stays a root of its own, which the
                # outer scan skips (see nested_prefixes), so its photos are never taken as removed.
                inside = Path(child.path).relative_to(folder).parts
                if is_root_online(child.path, per_root.get(child.id, 0)) and not any(
                    is_junk(part, is_dir=True) for part in inside
                ):
                    store.merge_root(child, root)
            roots = store.roots()
            root = next(r for r in roots if r.id == root.id)  # with the patterns it took over
        prefix = "" if folder == Path(root.path) else folder.relative_to(root.path).as_posix()
        targets.append(Target(root, str(folder), prefix))
    # A folder given twice, or inside another given folder of the same root, is scanned once;
    # sorting puts "" and "a" before "a/b".
    unique: list[Target] = []
    for t in sorted(targets, key=lambda t: (t.root.id, t.prefix)):
        if not any(u.root.id == t.root.id and within(t.prefix, u.prefix) for u in unique):
            unique.append(t)
    return unique


def change_excludes(
    store: Store, targets: list[Target], add: Sequence[str] = (), remove: Sequence[str] = ()
) -> list[Target]:
    """Add and remove exclude patterns of the roots these targets belong to (`index --exclude`,
    `--no-exclude`: stored per root, so later runs, the web app's included, apply them too).
    Returns the targets with their roots as now stored."""
    added = [normalized_pattern(p) for p in add]
    removed = [normalized_pattern(p) for p in remove]
    if not added and not removed:
        return targets
    rows: dict[int, RootRow] = {}
    for root in {t.root.id: t.root for t in targets}.values():
        unknown = [p for p in removed if p not in root.exclude]
        if unknown:
            stored = ", ".join(root.exclude) or "none"
            raise ExcludePatternError(
                f"{root.path} has no exclude pattern {unknown[0]} (its patterns: {stored})"
            )
        patterns = [p for p in root.exclude if p not in removed] + added
        rows[root.id] = store.set_root_exclude(root.id, patterns)
    return [Target(rows[t.root.id], t.folder, t.prefix) for t in targets]


def within(prefix: str, outer: str) -> bool:
    """Whether the rel path `prefix` is `outer` or lies inside it ("" is the whole root)."""
    return outer == "" or prefix == outer or prefix.startswith(outer + "/")


def nested_prefixes(root: RootRow, roots: list[RootRow]) -> list[str]:
    """Paths, relative to `root`, of the registered roots inside it."""
    outer = Path(root.path)
    return [
        Path(r.path).relative_to(outer).as_posix() for r in roots if outer in Path(r.path).parents
    ]
