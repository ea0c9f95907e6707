"""Tag export: machine tags into XMP sidecars with an undo manifest (tables.py writes the CSV and
JSON Lines files)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from siglip_search.atomic import fsync_directory, open_atomic

from .errors import IndexerError
from .xmp import (
    NEW_SIDECAR,
    SidecarChange,
    SidecarError,
    add_keywords,
    keyword_values,
    remove_keywords,
)

# fmt: off
__all__ = [
    "ROOT_TAG", "ExportReport", "ManifestError", "SidecarChange", "SidecarError", "SidecarPlan", "TagNameError",
    "commit_sidecar_plan", "export_xmp", "load_manifest", "machine_tag_path", "merge_keywords_into_sidecar",
    "plan_keyword_merge", "plan_keyword_removal", "plan_keyword_sync", "sidecar_path_for", "undo_xmp",
]
# fmt: on

ROOT_TAG = "AI"
# darktable histories reach a few hundred KiB; anything this big is not a sidecar we should edit.
MAX_SIDECAR_BYTES = 32 << 20
MANIFEST_FORMAT = "siglip-search xmp export"
MANIFEST_VERSION = 1


class TagNameError(IndexerError, ValueError):
    """A tag name that cannot be written as a hierarchical keyword."""


class ManifestError(IndexerError, ValueError):
    """The export manifest is missing (for undo), unreadable, or from an unknown format version."""


@dataclass
class ExportReport:
    """Per sidecar: written, planned (dry run), needing nothing, or refused with a reason."""

    written: list[SidecarChange] = field(default_factory=list)
    planned: list[SidecarChange] = field(default_factory=list)  # dry run only
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)
    missing: list[Path] = field(default_factory=list)  # undo: recorded sidecars that are gone


@dataclass
class SidecarPlan:
    """One sidecar's new bytes (or deletion), and the file identity they were computed from."""

    change: SidecarChange
    data: bytes | None  # None: nothing to write
    before: tuple[int, int, int] | None  # (inode, size, mtime_ns) when read; None: did not exist
    delete: bool = False


# ---- sidecars ----


def machine_tag_path(tag: str | Sequence[str], root_tag: str | None = ROOT_TAG) -> tuple[str, ...]:
    """`"animal|dog"` or `("animal", "dog")` -> `("AI", "animal", "dog")`; refuses what readers split."""
    root = tuple(root_tag.split("|")) if root_tag else ()
    parts = tuple(tag.split("|")) if isinstance(tag, str) else tuple(tag)
    shown = tag if isinstance(tag, str) else "|".join(tag)
    if not parts or parts == ("",):
        raise TagNameError("empty tag name")
    _check_components(root, f"root tag {root_tag!r}")
    _check_components(parts, f"tag {shown!r}")
    return (*root, *parts)


def _check_components(parts: Sequence[str], what: str) -> None:
    for part in parts:
        if not part.strip() or part != part.strip():
            raise TagNameError(f"{what} has an empty component or one with surrounding spaces")
        if "|" in part or "/" in part:
            raise TagNameError(
                f"component {part!r} of {what} contains '|' or '/', which photo managers read "
                "as hierarchy separators; rename it"
            )
        if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF or ch in "\ufffe\uffff" for ch in part):
            raise TagNameError(f"{what} contains a control character XMP cannot hold")


def sidecar_path_for(photo: Path, folder_names: Collection[str] | None = None) -> Path:
    """`IMG_1.jpg.xmp` if it exists; else `IMG_1.xmp` if it exists and no other file is `IMG_1.*`;
    else `IMG_1.jpg.xmp` (to be created). `folder_names`: the folder's listing, if at hand."""
    photo = Path(photo)
    names = set(os.listdir(photo.parent)) if folder_names is None else folder_names
    full = _existing_xmp(names, photo.name)
    if full is not None:
        return photo.with_name(full)
    base = _existing_xmp(names, photo.stem)
    if base is not None and not _shares_base_name(names, photo):
        return photo.with_name(base)
    return photo.with_name(photo.name + ".xmp")


def _existing_xmp(names: Collection[str], stem: str) -> str | None:
    if stem + ".xmp" in names:
        return stem + ".xmp"
    found = sorted(n for n in names if n[: len(stem)] == stem and n[len(stem) :].lower() == ".xmp")
    return found[0] if found else None


# Files that travel beside a photo without being photos: they do not make `IMG_1.xmp` ambiguous.
# (.aae: Apple Photos edits; .thm: camera video thumbnails; .pp3/.dop/.on1: raw developers' settings.)
COMPANION_SUFFIXES = {".xmp", ".aae", ".thm", ".pp3", ".dop", ".on1", ".json", ".txt", ".md5", ".ini", ".db"}


def _shares_base_name(names: Collection[str], photo: Path) -> bool:
    """Another photo or video `IMG_1.*` (a JPEG beside the raw, a Live Photo's movie) makes
    `IMG_1.xmp` ambiguous: never ours to use. Companion files (COMPANION_SUFFIXES) do not count."""
    base = photo.stem.casefold()
    return any(
        name != photo.name
        and Path(name).suffix.lower() not in COMPANION_SUFFIXES
        and Path(name).stem.casefold() == base
        for name in names
    )


def plan_keyword_merge(
    photo: Path, tag_paths: Sequence[tuple[str, ...]], folder_names: Collection[str] | None = None
) -> SidecarPlan:
    """Plan adding tag paths to the photo's sidecar (new `name.ext.xmp` if none); never opens the photo."""
    return plan_keyword_sync(photo, tag_paths, lambda _sidecar: None, folder_names)


def plan_keyword_sync(
    photo: Path,
    tag_paths: Sequence[tuple[str, ...]],
    previous: Callable[[Path], SidecarChange | None],
    folder_names: Collection[str] | None = None,
) -> SidecarPlan:
    """Plan making the machine keywords of the photo's sidecar equal to `tag_paths`: add what is
    missing, and remove what an earlier export added (`previous(sidecar)`, its manifest record) that
    these tags no longer give. Keywords no export of ours added are never removed. A sidecar we
    created is deleted when nothing but the empty wrapper would remain."""
    photo = Path(photo)
    if not photo.is_file():
        raise FileNotFoundError(errno.ENOENT, "photo not found", str(photo))
    sidecar = sidecar_path_for(photo, folder_names)
    raw, before = _read_sidecar(sidecar, missing_ok=True)
    wanted = keyword_values(tag_paths)
    record = previous(sidecar) if before is not None else None
    stale = _stale_part(record, wanted) if record is not None else None
    removed: dict[str, list[str]] = {}
    notes: list[str] = []
    data: bytes | None = None
    if stale is not None:
        data, removal = remove_keywords(raw, stale, sidecar)
        if removal.deleted:
            removal.photo = photo
            return SidecarPlan(removal, None, before, delete=True)
        removed, notes = removal.removed, removal.notes
    added_data, change = add_keywords(data if data is not None else raw, wanted, sidecar)
    data = added_data if added_data is not None else data
    change.photo, change.created = photo, before is None
    change.removed, change.notes = removed, [*notes, *change.notes]
    return SidecarPlan(change, data, before)


def _stale_part(record: SidecarChange, wanted: dict[str, list[str]]) -> SidecarChange | None:
    """The part of an earlier export's record that the wanted values no longer hold, as a record
    for remove_keywords; None when nothing is stale. A list we created counts as ours to remove
    whole (with its copies of the user's keywords) only when nothing is wanted in it any more, and
    the file only when nothing is wanted at all."""
    added = _less(record.added, wanted)
    if not added:
        return None
    return replace(
        record,
        added=added,
        created=record.created and not any(wanted.values()),
        created_properties=[k for k in record.created_properties if not wanted.get(k)],
    )


def plan_keyword_removal(sidecar: Path, record: SidecarChange) -> SidecarPlan:
    """Plan removing what `record` says we added; deleting the file if we created it and it is empty."""
    raw, before = _read_sidecar(sidecar, missing_ok=False)
    data, change = remove_keywords(raw, record, sidecar)
    return SidecarPlan(change, data, before, delete=change.deleted)


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns): notices another program writing between our read and our write."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_sidecar(path: Path, missing_ok: bool) -> tuple[bytes, tuple[int, int, int] | None]:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_SIDECAR_BYTES:
                raise SidecarError(
                    path, f"{st.st_size} bytes is too large for an XMP sidecar; left untouched"
                )
            raw = f.read()
    except FileNotFoundError:
        if missing_ok:
            return NEW_SIDECAR, None
        raise
    # The mode bits too: os.access says yes to root (photo tools in containers often run as root).
    if not os.access(path, os.W_OK) or not st.st_mode & 0o222:
        raise SidecarError(path, "read-only; left untouched")
    return raw, file_identity(path)


def merge_keywords_into_sidecar(
    photo: Path, tags: Sequence[str], root_tag: str | None = ROOT_TAG, dry_run: bool = False
) -> SidecarChange:
    """Add machine tags under `root_tag` to the photo's sidecar (creating `name.ext.xmp` if none).

    Raises TagNameError for a bad tag, SidecarError for a sidecar we refuse to touch, else OSError.
    """
    plan = plan_keyword_merge(Path(photo), [machine_tag_path(t, root_tag) for t in tags])
    if not dry_run:
        commit_sidecar_plan(plan)
    return plan.change


def commit_sidecar_plan(plan: SidecarPlan) -> None:
    """Write (atomically) or delete the sidecar, unless another program changed it since we read it."""
    path = plan.change.path

    def unchanged_since_read() -> None:
        if file_identity(path) != plan.before:
            raise SidecarError(path, "changed by another program while we were working; run again")

    if plan.delete:
        unchanged_since_read()
        os.unlink(path)
        fsync_directory(path.parent)
    elif plan.data is not None:
        # A symlinked sidecar has its target replaced, not the link.
        with open_atomic(os.path.realpath(path), before_replace=unchanged_since_read) as f:
            f.write(plan.data)


def export_xmp(
    items: Iterable[tuple[Path, Sequence[str]]],
    manifest_path: Path,
    root_tag: str | None = ROOT_TAG,
    dry_run: bool = False,
    *,
    every_photo: bool = False,
    photo_keys: Mapping[Path, str | None] | None = None,
) -> ExportReport:
    """Make each photo's sidecar hold its machine tags, and record in the manifest what was added.

    Keywords an earlier export added that the photo's tags no longer give (re-tagged, another
    threshold or root tag) are removed; keywords no export added are never touched. every_photo:
    `items` hold the tags of every photo the manifest covers (a whole library), so a recorded photo
    missing from them has no tags any more and loses what earlier exports added. photo_keys: what
    identifies each photo's content (a library's fingerprints), recorded so that a photo renamed
    together with its sidecar keeps its record.

    Every tag is checked before any file is touched. A sidecar that cannot be read or parsed is
    skipped and reported. The manifest records each batch before its sidecars are written, so an
    interrupted export can still be undone; entries whose write failed are rolled back.
    """
    jobs = _collect_jobs(items, root_tag)
    manifest_path = Path(manifest_path)
    records = load_manifest(manifest_path)
    keys = dict(photo_keys or {})
    if _follow_moves(records, {photo: keys.get(photo) for photo, _ in jobs}) and not dry_run:
        _save_manifest(manifest_path, records)
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
            plans = _plan_batch(batch, report, records.get)
            if dry_run:
                report.planned += [p.change for p in plans]
                continue
            for plan in plans:
                path = plan.change.path
                pending[path] = records.get(path)
                record = _merged(_without(records.get(path), plan.change.removed), plan.change)
                record = replace(record, photo_key=keys.get(record.photo, record.photo_key))
                if plan.delete or not (record.added or record.mirrored):
                    records.pop(path, None)  # nothing of ours left in it
                else:
                    records[path] = record
            if plans:
                _save_manifest(manifest_path, records)
                saved = True
            for plan in plans:
                try:
                    commit_sidecar_plan(plan)
                except (SidecarError, OSError) as exc:
                    _restore(records, plan.change.path, pending[plan.change.path])
                    report.skipped.append(_skip(exc, plan.change.path))
                else:
                    report.written.append(plan.change)
                del pending[plan.change.path]
    finally:
        if saved:  # roll back entries whose sidecar was never written (an exception stopped us)
            for path, previous in pending.items():
                _restore(records, path, previous)
            _save_manifest(manifest_path, records)
    return report


def undo_xmp(
    manifest_path: Path, dry_run: bool = False, photos: Iterable[Path] | Mapping[Path, str | None] = ()
) -> ExportReport:
    """Remove exactly the values the manifest says we added; the user's own keywords always stay.

    A sidecar we created is deleted when nothing but the empty XMP wrapper would remain. Sidecars that
    cannot be undone now (unparseable, changed meanwhile) stay in the manifest to retry later.
    `photos`: where the photos are now (a library's), to follow photos moved with their sidecars;
    a mapping to their content keys (as export_xmp's photo_keys) also follows renamed ones.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise ManifestError(f"no export manifest at {manifest_path}: nothing to undo")
    records = load_manifest(manifest_path)
    _follow_moves(records, dict(photos) if isinstance(photos, Mapping) else dict.fromkeys(map(Path, photos)))
    remaining = dict(records)
    report = ExportReport()
    try:
        for path, record in records.items():
            if not os.path.lexists(path):
                report.missing.append(path)
                if not dry_run:
                    del remaining[path]
                continue
            try:
                plan = plan_keyword_removal(path, record)
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
            _save_manifest(manifest_path, remaining)
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
        found = [(p, sidecar) for p, sidecar in found if sidecar not in records and sidecar.is_file()]
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
    previous: Callable[[Path], SidecarChange | None],
) -> list[SidecarPlan]:
    listings: dict[Path, set[str]] = {}  # one directory listing per folder and batch
    plans: list[SidecarPlan] = []
    sidecars: set[Path] = set()
    for photo, tag_paths in batch:
        try:
            if photo.parent not in listings:
                listings[photo.parent] = set(os.listdir(photo.parent))
            plan = plan_keyword_sync(photo, tag_paths, previous, listings[photo.parent])
        except (SidecarError, OSError) as exc:
            report.skipped.append(_skip(exc, photo))
            continue
        if plan.data is None and not plan.delete:
            report.unchanged.append(plan.change.path)
        elif plan.change.path in sidecars:  # two photos, one sidecar: only reachable with odd names
            report.skipped.append(
                (plan.change.path, f"also the sidecar of another photo; {photo} skipped")
            )
        else:
            plans.append(plan)
            sidecars.add(plan.change.path)
    return plans


def _skip(exc: Exception, path: Path) -> tuple[Path, str]:
    if isinstance(exc, SidecarError):
        return exc.path, exc.reason
    where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else path
    return where, (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


# ---- manifest ----


def load_manifest(path: Path) -> dict[Path, SidecarChange]:
    """Sidecar path -> what our exports added there; empty when there is no manifest yet."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not an export manifest ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not a siglip-search export manifest")
    if document.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"{path} has manifest version {document.get('version')}; this build reads 1"
        )
    try:
        return {Path(p): _change_from_record(Path(p), r) for p, r in document["sidecars"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{path} has a malformed entry ({exc!r})") from None


def _save_manifest(path: Path, records: dict[Path, SidecarChange]) -> None:
    sidecars = {}
    for sidecar, change in sorted(records.items()):
        record = asdict(change)
        for transient in ("path", "removed", "deleted", "notes"):
            del record[transient]
        record["photo"] = str(change.photo) if change.photo else None
        sidecars[str(sidecar)] = record
    document = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "sidecars": sidecars}
    with open_atomic(os.path.realpath(path)) as f:  # a symlinked manifest: its target is replaced
        f.write(json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n")


def _change_from_record(path: Path, record: dict) -> SidecarChange:
    return SidecarChange(
        path=path,
        photo=Path(record["photo"]) if record.get("photo") else None,
        photo_key=record.get("photo_key"),
        created=bool(record.get("created", False)),
        added={k: list(v) for k, v in record.get("added", {}).items()},
        mirrored={k: list(v) for k, v in record.get("mirrored", {}).items()},
        created_properties=list(record.get("created_properties", [])),
        declared_namespaces=dict(record.get("declared_namespaces", {})),
    )


def _merged(old: SidecarChange | None, new: SidecarChange) -> SidecarChange:
    """Union of two exports' records for one sidecar; `created` sticks once we created the file."""
    old = old or SidecarChange(path=new.path)

    def union(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
        return {
            k: list(dict.fromkeys([*a.get(k, []), *b.get(k, [])])) for k in dict.fromkeys([*a, *b])
        }

    return SidecarChange(
        path=new.path,
        photo=new.photo or old.photo,
        photo_key=new.photo_key or old.photo_key,
        created=old.created or new.created,
        added=union(old.added, new.added),
        mirrored=union(old.mirrored, new.mirrored),
        created_properties=list(dict.fromkeys([*old.created_properties, *new.created_properties])),
        declared_namespaces={**old.declared_namespaces, **new.declared_namespaces},
    )


def _without(record: SidecarChange | None, removed: dict[str, list[str]]) -> SidecarChange | None:
    """An earlier record less the values just removed from the sidecar."""
    if record is None or not removed:
        return record
    return replace(record, added=_less(record.added, removed), mirrored=_less(record.mirrored, removed))


def _less(values: dict[str, list[str]], taken: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per keyword property, the values not in `taken`; properties left empty are dropped."""
    kept = {k: [v for v in vs if v not in taken.get(k, [])] for k, vs in values.items()}
    return {k: vs for k, vs in kept.items() if vs}


def _restore(
    records: dict[Path, SidecarChange], path: Path, previous: SidecarChange | None
) -> None:
    if previous is None:
        records.pop(path, None)
    else:
        records[path] = previous
