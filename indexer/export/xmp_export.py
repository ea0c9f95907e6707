"""An XMP export or undo over many photos: every tag checked first, sidecars planned in batches,
the manifest saved before each batch is committed, a sidecar that cannot be edited reported, and
the temp files an interrupted export or undo left in the folders it visits removed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from siglip_search.atomic import remove_stale_temps

from ..errors import ManifestError, SidecarError
from .manifest import load_manifest, merged_record, record_without, save_manifest
from .sidecars import (
    ROOT_TAG,
    SidecarPlan,
    commit_sidecar_plan,
    folder_root,
    machine_tag_path,
    plan_keyword_move_out,
    plan_keyword_removal,
    plan_keyword_sync,
    sidecar_path_for,
    sidecar_root,
)
from .xmp import SidecarChange


@dataclass
class ExportReport:
    """Per sidecar: written, planned (dry run), needing nothing, or refused with a reason."""

    written: list[SidecarChange] = field(default_factory=list)
    planned: list[SidecarChange] = field(default_factory=list)  # dry run only
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)
    missing: list[Path] = field(default_factory=list)  # undo: recorded sidecars that are gone
    # (photo, tag path) an earlier export wrote that the user removed from the sidecar since: not
    # written again (export_library_xmp records them as rejected in the library)
    rejected: list[tuple[Path, tuple[str, ...]]] = field(default_factory=list)


def export_xmp(
    items: Iterable[tuple[Path, Sequence[str]]],
    manifest_path: Path,
    root_tag: str | None = ROOT_TAG,
    dry_run: bool = False,
    *,
    every_photo: bool = False,
    photo_keys: Mapping[Path, str | None] | None = None,
    naming: str = "auto",
    ancestors: bool = True,
    on_rejected: Callable[[list[tuple[Path, tuple[str, ...]]]], None] | None = None,
    roots: Sequence[Path] = (),
) -> ExportReport:
    """Make each photo's sidecar hold its machine tags, and record in the manifest what was added.

    Keywords an earlier export added that the photo's tags no longer give (re-tagged, another
    threshold or root tag) are removed; keywords no export added are never touched. every_photo:
    `items` hold the tags of every photo the manifest covers (a whole library), so a recorded photo
    missing from them has no tags any more and loses what earlier exports added. photo_keys: what
    identifies each photo's content (a library's fingerprints), recorded so that a photo renamed
    together with its sidecar keeps its record. roots: the photo folders (a library's roots): no
    sidecar is read, written or deleted through a symbolic link at it or at any folder between its
    root (else its own folder) and it; such a sidecar is skipped and reported.

    Every tag is checked before any file is touched. A sidecar that cannot be read or parsed is
    skipped and reported. The manifest records each batch before its sidecars are written, so an
    interrupted export can still be undone; entries whose write failed are rolled back.
    naming: which sidecar a photo gets (sidecars.sidecar_path_for); ancestors: see keyword_values.
    on_rejected(pairs): called with each batch's (photo, tag path) pairs the user removed since an
    earlier export, before that batch's manifest and sidecars are written (not in a dry run).
    """
    jobs = _collect_jobs(items, root_tag)
    manifest_path = Path(manifest_path)
    if not dry_run:
        remove_stale_temps(manifest_path.parent)
    records = load_manifest(manifest_path)
    keys: dict[Path, str | None] = dict(photo_keys or {})
    if _follow_moves(records, {photo: keys.get(photo) for photo, _ in jobs}) and not dry_run:
        save_manifest(manifest_path, records)
    if every_photo:
        tagged = {photo for photo, _ in jobs}
        jobs += [
            (photo, [])  # no tags any more: what earlier exports added goes
            for photo in dict.fromkeys(r.photo for r in records.values() if r.photo)
            if photo not in tagged and photo.is_file()
        ]
    report = ExportReport()
    pending: dict[Path, SidecarChange | None] = {}  # recorded but not yet written: previous entries
    saved = False
    try:
        for batch in _batches(jobs):
            plans = _plan_batch(batch, report, records, naming, ancestors, roots, clean=not dry_run)
            rejected = [(p.change.photo or p.change.path, tag) for p in plans for tag in p.rejected]
            report.rejected += rejected
            if dry_run:
                report.planned += [p.change for p in plans if p.data is not None or p.delete]
                report.unchanged += [
                    p.change.path for p in plans if p.data is None and not p.delete
                ]
                continue
            if rejected and on_rejected is not None:
                on_rejected(rejected)
            for plan in plans:
                path = plan.change.path
                pending[path] = records.get(path)
                kept = record_without(
                    record_without(records.get(path), plan.user_removed), plan.change.removed
                )
                record = merged_record(kept, plan.change)
                if record.photo is not None:
                    record = replace(record, photo_key=keys.get(record.photo, record.photo_key))
                if plan.leaves or plan.delete or not (record.added or record.mirrored):
                    records.pop(path, None)  # nothing of ours left in it
                else:
                    records[path] = record
            if plans:
                save_manifest(manifest_path, records)
                saved = True
            for plan in plans:
                try:
                    commit_sidecar_plan(plan)
                except (SidecarError, OSError) as exc:
                    _restore(records, plan.change.path, pending[plan.change.path])
                    report.skipped.append(_skip(exc, plan.change.path))
                else:
                    if plan.data is not None or plan.delete:
                        report.written.append(plan.change)
                    else:  # only the record changed: the user had removed some of our keywords
                        report.unchanged.append(plan.change.path)
                del pending[plan.change.path]
    finally:
        if saved:  # roll back entries whose sidecar was never written (an exception stopped us)
            for path, previous in pending.items():
                _restore(records, path, previous)
            save_manifest(manifest_path, records)
    return report


def undo_xmp(
    manifest_path: Path,
    dry_run: bool = False,
    photos: Iterable[Path] | Mapping[Path, str | None] = (),
    roots: Sequence[Path] = (),
) -> ExportReport:
    """Remove exactly the values the manifest says we added; the user's own keywords always stay.

    A sidecar we created is deleted when nothing but the empty XMP wrapper would remain. Sidecars that
    cannot be undone now (unparseable, changed meanwhile) stay in the manifest to retry later.
    `photos`: where the photos are now (a library's), to follow photos moved with their sidecars;
    a mapping to their content keys (as export_xmp's photo_keys) also follows renamed ones.
    `roots`: as for export_xmp; a sidecar that is (or lies behind) a symbolic link is skipped.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise ManifestError(f"no export manifest at {manifest_path}: nothing to undo")
    records = load_manifest(manifest_path)
    _follow_moves(
        records, dict(photos) if isinstance(photos, Mapping) else dict.fromkeys(map(Path, photos))
    )
    remaining = dict(records)
    report = ExportReport()
    if not dry_run:
        for folder in dict.fromkeys([manifest_path.parent, *(p.parent for p in records)]):
            remove_stale_temps(folder, root=folder_root(folder, roots))
    try:
        for path, record in records.items():
            if not os.path.lexists(path):
                report.missing.append(path)
                if not dry_run:
                    del remaining[path]
                continue
            try:
                plan = plan_keyword_removal(path, record, sidecar_root(path, roots))
                if not dry_run:
                    commit_sidecar_plan(plan)
            except (SidecarError, OSError) as exc:
                report.skipped.append(_skip(exc, path))
                continue
            if not plan.change.changed:
                report.unchanged.append(path)
            else:
                (report.planned if dry_run else report.written).append(plan.change)
            if not dry_run:
                del remaining[path]
    finally:
        if not dry_run:
            save_manifest(manifest_path, remaining)
    return report


def _follow_moves(records: dict[Path, SidecarChange], photos: Mapping[Path, str | None]) -> bool:
    """Re-key the records of photos moved or renamed together with their sidecar (a reorganised
    folder, a rename in a photo manager), where the record's sidecar and photo are both gone. The
    record follows the one photo whose content key it recorded (`photos` maps each photo now to its
    key, or None), else the one photo of the same name, when that photo has a sidecar no record
    claims. Returns whether any record moved."""
    by_name: dict[str, list[Path]] = {}
    by_key: dict[str, list[Path]] = {}
    for photo, key in photos.items():
        by_name.setdefault(Path(photo).name, []).append(Path(photo))
        if key:
            by_key.setdefault(key, []).append(Path(photo))
    moved = False
    for path, record in list(records.items()):
        if record.photo is None or os.path.lexists(path) or os.path.lexists(record.photo):
            continue
        found = [(p, sidecar_path_for(p)) for p in by_key.get(record.photo_key or "", [])]
        if len(found) != 1:  # no key, or byte-identical copies: the name decides
            found = [(p, p.parent / path.name) for p in by_name.get(record.photo.name, [])]
        found = [
            (p, sidecar) for p, sidecar in found if sidecar not in records and sidecar.is_file()
        ]
        if len(found) == 1:
            photo, sidecar = found[0]
            records[sidecar] = replace(record, path=sidecar, photo=photo)
            del records[path]
            moved = True
    return moved


def _collect_jobs(
    items: Iterable[tuple[Path, Sequence[str]]], root_tag: str | None
) -> list[tuple[Path, list[tuple[str, ...]]]]:
    """Validate every tag up front and merge repeated photos, so each sidecar is planned once."""
    jobs: dict[Path, list[tuple[str, ...]]] = {}
    for photo, tags in items:
        paths = jobs.setdefault(Path(os.path.abspath(photo)), [])
        paths += [p for p in (machine_tag_path(t, root_tag) for t in tags) if p not in paths]
    return list(jobs.items())


def _batches(jobs: list, first: int = 64, largest: int = 4096) -> Iterator[list]:
    """Growing batches: the manifest is rewritten once per batch, so small exports record often and
    large ones do not rewrite a large manifest thousands of times."""
    start, size = 0, first
    while start < len(jobs):
        yield jobs[start : start + size]
        start, size = start + size, min(size * 2, largest)


def _plan_batch(
    batch: list[tuple[Path, list[tuple[str, ...]]]],
    report: ExportReport,
    records: Mapping[Path, SidecarChange],
    naming: str = "auto",
    ancestors: bool = True,
    roots: Sequence[Path] = (),
    clean: bool = True,
) -> list[SidecarPlan]:
    listings: dict[Path, set[str]] = {}  # one directory listing per folder and batch
    plans: list[SidecarPlan] = []
    sidecars: set[Path] = set()
    photos = {photo for photo, _ in batch}
    recorded: dict[Path, list[Path]] = {}  # photo -> its sidecars earlier exports wrote to
    for path, record in records.items():
        if record.photo in photos:
            recorded.setdefault(record.photo, []).append(path)
    for photo, tag_paths in batch:
        root = sidecar_root(photo, roots)
        try:
            if photo.parent not in listings:
                listings[photo.parent] = set(os.listdir(photo.parent))
                if clean:  # what an export or undo killed here left behind
                    stale = remove_stale_temps(photo.parent, listings[photo.parent], root=root)
                    listings[photo.parent] -= {p.name for p in stale}
            sidecar = _chosen_sidecar(photo, listings[photo.parent], naming, recorded)
            moves = _move_out_plans(photo, sidecar, tag_paths, recorded, records, report, roots)
            gone = [tag for move in moves for tag in move.rejected]
            plan = plan_keyword_sync(
                photo,
                [p for p in tag_paths if p not in gone],
                records.get,
                listings[photo.parent],
                root,
                naming=naming,
                ancestors=ancestors,
                sidecar=sidecar,
            )
        except (SidecarError, OSError) as exc:
            report.skipped.append(_skip(exc, photo))
            continue
        plan.rejected += [tag for tag in dict.fromkeys(gone) if tag not in plan.rejected]
        for move in moves:
            move.rejected = []  # counted once, with the photo's own plan
        for one in (*moves, plan):
            if one.data is None and not one.delete and not one.user_removed and not one.leaves:
                report.unchanged.append(one.change.path)
            elif one.change.path in sidecars:  # two photos, one sidecar: only with odd names
                report.skipped.append(
                    (one.change.path, f"also the sidecar of another photo; {photo} skipped")
                )
            else:
                plans.append(one)
                sidecars.add(one.change.path)
    return plans


def _chosen_sidecar(
    photo: Path, listing: set[str], naming: str, recorded: Mapping[Path, list[Path]]
) -> Path:
    """The sidecar this export writes the photo's keywords to: with naming "auto", the one an
    earlier export wrote them to while it exists (so a sidecar another tool creates later, such as
    darktable's IMG_1.CR2.xmp beside our IMG_1.xmp, does not pull them away); else
    sidecar_path_for's."""
    chosen = sidecar_path_for(photo, listing, naming)
    earlier = [p for p in recorded.get(photo, []) if os.path.lexists(p)]
    if naming == "auto" and earlier and chosen not in earlier:
        return sorted(earlier)[0]
    return chosen


def _move_out_plans(
    photo: Path,
    sidecar: Path,
    tag_paths: list[tuple[str, ...]],
    recorded: Mapping[Path, list[Path]],
    records: Mapping[Path, SidecarChange],
    report: ExportReport,
    roots: Sequence[Path] = (),
) -> list[SidecarPlan]:
    """Plans taking our keywords out of the photo's other recorded sidecars (the user switched
    --sidecar-name): a sidecar that cannot be edited is reported and keeps them."""
    moves = []
    for path in recorded.get(photo, []):
        if path == sidecar or not os.path.lexists(path):
            continue  # a recorded sidecar gone since: undo reports it
        try:
            moves.append(
                plan_keyword_move_out(
                    path, records[path], tag_paths, sidecar, sidecar_root(path, roots)
                )
            )
        except (SidecarError, OSError) as exc:
            report.skipped.append(_skip(exc, path))
    return moves


def _skip(exc: Exception, path: Path) -> tuple[Path, str]:
    if isinstance(exc, SidecarError):
        return exc.path, exc.reason
    where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else path
    return where, (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


def _restore(
    records: dict[Path, SidecarChange], path: Path, previous: SidecarChange | None
) -> None:
    if previous is None:
        records.pop(path, None)
    else:
        records[path] = previous
