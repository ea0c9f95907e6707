"""One photo's XMP sidecar: machine tag names as keyword paths, which sidecar file a photo has,
and the plan-then-commit of one edit (plan new bytes from what is on disk; write them only if
nobody changed the file meanwhile). The bytes themselves are xmp.py's."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from siglip_search.atomic import LinkRefusedError, lstat_in, open_atomic, open_folder

from ..errors import SidecarError, TagNameError
from ..raw import RAW_EXTENSIONS
from .manifest import values_less
from .xmp import (
    MAX_XMP_BYTES,
    NEW_SIDECAR,
    SidecarChange,
    add_keywords,
    keyword_lists,
    keyword_values,
    remove_keywords,
    removed_tags,
)

ROOT_TAG = "AI"
# --sidecar-name: see sidecar_path_for.
SIDECAR_NAMINGS = ("auto", "photo.ext.xmp", "photo.xmp")


@dataclass
class SidecarPlan:
    """One sidecar's new bytes (or deletion), and the file identity they were computed from.

    `root`: the photo folder the sidecar lies in (a library root, else the photo's own folder).
    Anyone who can write there could plant links, so nothing is read, written, renamed onto or
    deleted through a symbolic link at the sidecar or at any folder between `root` and it."""

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
    root: Path | None = None  # None: the sidecar's own folder


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


def sidecar_root(path: Path, roots: Sequence[Path] = ()) -> Path:
    """Where the link checks for a sidecar at `path` start: the innermost of `roots` holding it,
    else its own folder."""
    return folder_root(Path(path).parent, roots)


def folder_root(folder: Path, roots: Sequence[Path] = ()) -> Path:
    """The innermost of `roots` that is `folder` or holds it, else `folder` itself."""
    folder = Path(folder)
    inside = [Path(r) for r in roots if Path(r) == folder or Path(r) in folder.parents]
    return max(inside, key=lambda r: len(r.parts)) if inside else folder


def plan_keyword_sync(
    photo: Path,
    tag_paths: Sequence[tuple[str, ...]],
    previous: Callable[[Path], SidecarChange | None],
    folder_names: Collection[str] | None = None,
    root: Path | None = None,
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
    root = root or sidecar.parent
    raw, before = _read_sidecar(sidecar, root, missing_ok=True)
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
        data, removal = _remove(raw, stale, sidecar)
        if removal.deleted:
            removal.photo = photo
            return SidecarPlan(removal, None, before, True, rejected, user_removed, root=root)
        removed, notes = removal.removed, removal.notes
    added_data, change = add_keywords(data if data is not None else raw, wanted, sidecar)
    data = added_data if added_data is not None else data
    change.photo, change.created = photo, before is None
    change.removed, change.notes = removed, [*notes, *change.notes]
    if data is not None:
        change.written_sha256 = hashlib.sha256(data).hexdigest()
    return SidecarPlan(change, data, before, False, rejected, user_removed, root=root)


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
    sidecar: Path,
    record: SidecarChange,
    tag_paths: Sequence[tuple[str, ...]],
    to: Path,
    root: Path | None = None,
) -> SidecarPlan:
    """The photo's keywords now go to the sidecar `to` (the export's --sidecar-name changed): plan
    removing from this one what earlier exports added (`record`), as an undo does, deleting it if
    we created it and it holds exactly the bytes our last write left (see _remove). A tag of
    `tag_paths` the user had removed from it is named in `rejected`, so that it is not written
    into `to` either. `root`: as for plan_keyword_removal."""
    root = root or sidecar.parent
    raw, before = _read_sidecar(sidecar, root, missing_ok=False)
    rejected = removed_tags(tag_paths, record, keyword_lists(raw, sidecar))
    data, change = _remove(raw, record, sidecar)
    change.notes.append(f"keywords moved to {to.name} (--sidecar-name)")
    return SidecarPlan(change, data, before, change.deleted, rejected, leaves=True, root=root)


def plan_keyword_removal(
    sidecar: Path, record: SidecarChange, root: Path | None = None
) -> SidecarPlan:
    """Plan removing what `record` says we added; deleting the file if we created it and it holds
    exactly the bytes our last write left (see _remove)."""
    root = root or sidecar.parent
    raw, before = _read_sidecar(sidecar, root, missing_ok=False)
    data, change = _remove(raw, record, sidecar)
    return SidecarPlan(change, data, before, delete=change.deleted, root=root)


def _remove(raw: bytes, record: SidecarChange, sidecar: Path) -> tuple[bytes | None, SidecarChange]:
    """remove_keywords, deleting a sidecar we created only while its bytes are the ones we wrote
    (records of older manifests, without a hash: while nothing but the empty wrapper remains). A
    sidecar another program rewrote since keeps its file, without our keywords."""
    data, change = remove_keywords(raw, record, sidecar)
    if change.deleted and record.written_sha256 not in (None, hashlib.sha256(raw).hexdigest()):
        data, change = remove_keywords(raw, replace(record, created=False), sidecar)
        change.notes.append(
            "written by another program since our export: kept, without our keywords"
        )
    return data, change


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of the entry itself (a link is not followed): notices another program
    writing, or a link planted, between our read and our write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_sidecar(
    path: Path, root: Path, missing_ok: bool
) -> tuple[bytes, tuple[int, int, int] | None]:
    """The sidecar's bytes and identity, read without following a link at it or on the way from
    `root` (LinkRefusedError); NEW_SIDECAR and None for a missing one when `missing_ok`."""
    with open_folder(path.parent, root) as folder:
        found = lstat_in(path.name, folder)
        if found is None:
            if missing_ok:
                return NEW_SIDECAR, None
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        if stat.S_ISLNK(found.st_mode):
            raise LinkRefusedError(path)
        if not stat.S_ISREG(found.st_mode):
            raise SidecarError(path, "not a regular file; left untouched")
        if found.st_size > MAX_XMP_BYTES:
            raise SidecarError(
                path, f"{found.st_size} bytes is too large for an XMP sidecar; left untouched"
            )
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read(MAX_XMP_BYTES + 1)
    # The mode bits too: os.access says yes to root (photo tools in containers often run as root).
    if not os.access(path, os.W_OK) or not st.st_mode & 0o222:
        raise SidecarError(path, "read-only; left untouched")
    return raw, (st.st_ino, st.st_size, st.st_mtime_ns)


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
    """Write (atomically) or delete the sidecar, unless another program changed it since we read
    it; never through a symbolic link (LinkRefusedError), at the sidecar or on the way from its root."""
    path = plan.change.path
    root = plan.root or path.parent

    def unchanged_since_read() -> None:
        if file_identity(path) != plan.before:
            raise SidecarError(path, "changed by another program while we were working; run again")

    if plan.delete:
        with open_folder(path.parent, root) as folder:
            found = lstat_in(path.name, folder)
            if found is not None and stat.S_ISLNK(found.st_mode):
                raise LinkRefusedError(path)
            unchanged_since_read()
            os.unlink(path.name, dir_fd=folder)  # an entry, never what a link names
            with contextlib.suppress(OSError):
                os.fsync(folder)
    elif plan.data is not None:
        with open_atomic(path, before_replace=unchanged_since_read, root=root) as f:
            f.write(plan.data)
