"""One photo's XMP sidecar: machine tag names as keyword paths, which sidecar file a photo has,
and the plan-then-commit of one edit (plan new bytes from what is on disk; write them only if
nobody changed the file meanwhile). The bytes themselves are xmp.py's."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from siglip_search.atomic import fsync_directory, open_atomic

from ..errors import SidecarError, TagNameError
from ..raw import RAW_EXTENSIONS
from .manifest import values_less
from .xmp import (
    NEW_SIDECAR,
    SidecarChange,
    add_keywords,
    keyword_lists,
    keyword_values,
    remove_keywords,
    removed_tags,
)

ROOT_TAG = "AI"
# darktable histories reach a few hundred KiB; anything this big is not a sidecar we should edit.
MAX_SIDECAR_BYTES = 32 << 20
# --sidecar-name: see sidecar_path_for.
SIDECAR_NAMINGS = ("auto", "photo.ext.xmp", "photo.xmp")


@dataclass
class SidecarPlan:
    """One sidecar's new bytes (or deletion), and the file identity they were computed from."""

    change: SidecarChange
    data: bytes | None  # None: nothing to write
    before: tuple[int, int, int] | None  # (inode, size, mtime_ns) when read; None: did not exist
    delete: bool = False
    # Tags an earlier export wrote that the user has removed from the sidecar since (not written
    # again), and the values of theirs the sidecar no longer holds (to leave the manifest).
    rejected: list[tuple[str, ...]] = field(default_factory=list)
    user_removed: dict[str, list[str]] = field(default_factory=dict)
    # All of ours leaves this sidecar (the photo's keywords moved to another one): its record goes.
    leaves: bool = False


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


def sidecar_path_for(
    photo: Path, folder_names: Collection[str] | None = None, naming: str = "auto"
) -> Path:
    """The sidecar `photo` has or gets (`folder_names`: the folder's listing, if at hand). `naming`:
    - "auto": an existing `IMG_1.jpg.xmp`; else an existing `IMG_1.xmp` that is this photo's; else a
      new `IMG_1.xmp` for a RAW file other than DNG (what Lightroom Classic and Capture One read)
      and `IMG_1.jpg.xmp` for any other photo (digiKam's, darktable's and Immich's name);
    - "photo.ext.xmp": always `IMG_1.jpg.xmp`;
    - "photo.xmp": `IMG_1.xmp` where it is this photo's, else `IMG_1.jpg.xmp`.
    `IMG_1.xmp` is this photo's when no other photo is `IMG_1.*`, or when this is the one RAW file
    of a RAW+JPEG pair (Lightroom's convention; the JPEG then gets `IMG_1.JPG.xmp`)."""
    if naming not in SIDECAR_NAMINGS:
        raise ValueError(
            f"sidecar naming must be one of {', '.join(SIDECAR_NAMINGS)}, got {naming!r}"
        )
    photo = Path(photo)
    names = set(os.listdir(photo.parent)) if folder_names is None else folder_names
    full = photo.with_name(_existing_xmp(names, photo.name) or photo.name + ".xmp")
    if naming == "photo.ext.xmp" or not _owns_base_name(names, photo):
        return full
    base = photo.with_name(_existing_xmp(names, photo.stem) or photo.stem + ".xmp")
    if naming == "photo.xmp" or base.name in names and full.name not in names:
        return base
    return base if full.name not in names and prefers_base_name(photo) else full


def prefers_base_name(photo: Path) -> bool:
    """RAW files other than DNG: Lightroom Classic and Capture One read `IMG_1.xmp` beside them. For
    DNG, JPEG, TIFF and HEIC they read the XMP inside the file and no sidecar."""
    suffix = Path(photo).suffix.lower()
    return suffix in RAW_EXTENSIONS and suffix != ".dng"


def _existing_xmp(names: Collection[str], stem: str) -> str | None:
    if stem + ".xmp" in names:
        return stem + ".xmp"
    found = sorted(n for n in names if n[: len(stem)] == stem and n[len(stem) :].lower() == ".xmp")
    return found[0] if found else None


# Files that travel beside a photo without being photos: they do not make `IMG_1.xmp` ambiguous.
# (.aae: Apple Photos edits; .thm: camera video thumbnails; .pp3/.dop/.on1: raw developers' settings.)
COMPANION_SUFFIXES = {
    ".xmp",
    ".aae",
    ".thm",
    ".pp3",
    ".dop",
    ".on1",
    ".json",
    ".txt",
    ".md5",
    ".ini",
    ".db",
}


def _owns_base_name(names: Collection[str], photo: Path) -> bool:
    """Whether `IMG_1.xmp` is this photo's: no other photo or video is `IMG_1.*` (a JPEG beside the
    raw, a Live Photo's movie; companion files, COMPANION_SUFFIXES, do not count), or this is the one
    RAW file among them (a RAW+JPEG pair: Lightroom's and Capture One's sidecar of the raw)."""
    base = photo.stem.casefold()
    others = [
        Path(name).suffix.lower()
        for name in names
        if name != photo.name
        and Path(name).suffix.lower() not in COMPANION_SUFFIXES
        and Path(name).stem.casefold() == base
    ]
    return not others or (prefers_base_name(photo) and not any(s in RAW_EXTENSIONS for s in others))


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
    *,
    naming: str = "auto",
    ancestors: bool = True,
    sidecar: Path | None = None,
) -> SidecarPlan:
    """Plan making the machine keywords of the photo's sidecar equal to `tag_paths`: add what is
    missing, and remove what an earlier export added (`previous(sidecar)`, its manifest record) that
    these tags no longer give. Keywords no export of ours added are never removed. A sidecar we
    created is deleted when nothing but the empty wrapper would remain. A tag the earlier export
    wrote that the user has removed from the sidecar since (xmp.removed_tags) is not written again:
    the plan names it in `rejected`. `naming` and `ancestors`: see sidecar_path_for, keyword_values;
    `sidecar`: the sidecar to use, already chosen by the caller."""
    photo = Path(photo)
    if not photo.is_file():
        raise FileNotFoundError(errno.ENOENT, "photo not found", str(photo))
    sidecar = sidecar or sidecar_path_for(photo, folder_names, naming)
    raw, before = _read_sidecar(sidecar, missing_ok=True)
    record = previous(sidecar) if before is not None else None
    rejected: list[tuple[str, ...]] = []
    user_removed: dict[str, list[str]] = {}
    if record is not None:
        lists = keyword_lists(raw, sidecar)
        rejected = removed_tags(tag_paths, record, lists)
        user_removed = {
            k: [v for v in vs if v not in lists.get(k, [])] for k, vs in record.added.items()
        }
        user_removed = {k: vs for k, vs in user_removed.items() if vs}
        record = replace(record, added=values_less(record.added, user_removed))
        tag_paths = [p for p in tag_paths if p not in rejected]
    wanted = keyword_values(tag_paths, ancestors)
    stale = _stale_part(record, wanted) if record is not None else None
    removed: dict[str, list[str]] = {}
    notes: list[str] = []
    data: bytes | None = None
    if stale is not None:
        data, removal = remove_keywords(raw, stale, sidecar)
        if removal.deleted:
            removal.photo = photo
            return SidecarPlan(removal, None, before, True, rejected, user_removed)
        removed, notes = removal.removed, removal.notes
    added_data, change = add_keywords(data if data is not None else raw, wanted, sidecar)
    data = added_data if added_data is not None else data
    change.photo, change.created = photo, before is None
    change.removed, change.notes = removed, [*notes, *change.notes]
    return SidecarPlan(change, data, before, False, rejected, user_removed)


def _stale_part(record: SidecarChange, wanted: dict[str, list[str]]) -> SidecarChange | None:
    """The part of an earlier export's record that the wanted values no longer hold, as a record
    for remove_keywords; None when nothing is stale. A list we created counts as ours to remove
    whole (with its copies of the user's keywords) only when nothing is wanted in it any more, and
    the file only when nothing is wanted at all."""
    added = values_less(record.added, wanted)
    if not added:
        return None
    return replace(
        record,
        added=added,
        created=record.created and not any(wanted.values()),
        created_properties=[k for k in record.created_properties if not wanted.get(k)],
    )


def plan_keyword_move_out(
    sidecar: Path, record: SidecarChange, tag_paths: Sequence[tuple[str, ...]], to: Path
) -> SidecarPlan:
    """The photo's keywords now go to the sidecar `to` (the export's --sidecar-name changed): plan
    removing from this one what earlier exports added (`record`), as an undo does, deleting it if
    we created it and nothing else is left. A tag of `tag_paths` the user had removed from it is
    named in `rejected`, so that it is not written into `to` either."""
    raw, before = _read_sidecar(sidecar, missing_ok=False)
    rejected = removed_tags(tag_paths, record, keyword_lists(raw, sidecar))
    data, change = remove_keywords(raw, record, sidecar)
    change.notes.append(f"keywords moved to {to.name} (--sidecar-name)")
    return SidecarPlan(change, data, before, change.deleted, rejected, leaves=True)


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
