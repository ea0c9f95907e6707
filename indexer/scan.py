"""Walk photo folders: which files are images, their identity (size, mtime) and content fingerprint."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .decode import IMAGE_EXTENSIONS, MISSING_DECODERS, open_regular_file
from .errors import ExcludePatternError, PathNameError

# Files and folders that photo tools, NASes and operating systems leave next to photos.
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "@eaDir", "#recycle", "desktop.ini"})
# rclip uses 1 MB + 1 KB; a 64 KiB tail also covers JPEG trailers written by editors.
FINGERPRINT_HEAD_BYTES = 1 << 20
FINGERPRINT_TAIL_BYTES = 64 << 10
NOT_UTF8 = "file name is not valid UTF-8"


@dataclass(frozen=True)
class ScannedFile:
    """One candidate image under a root. `error` is set when it cannot even be stat()ed/read."""

    rel_path: str  # POSIX, relative to the root
    path: str  # absolute path on this machine
    size_bytes: int
    mtime_ns: int
    error: str | None = None


@dataclass
class ScanResult:
    """Everything found under one root (or one folder inside it)."""

    files: list[ScannedFile] = field(default_factory=list)
    # Folders that could not be listed: rows under them are neither removed nor re-added.
    unreadable_dirs: list[str] = field(default_factory=list)  # rel paths, POSIX
    skipped: int = 0  # junk files and folders
    # Folder links leading outside the root, not followed (a link to / or ~ would crawl the disk).
    outside_links: list[str] = field(default_factory=list)  # rel paths, POSIX
    # suffix -> photos of MISSING_DECODERS
    undecodable: Counter[str] = field(default_factory=Counter)
    # suffix ("" for none) -> files that are not photos this indexer reads (.mov, .xmp, .txt, ...)
    other: Counter[str] = field(default_factory=Counter)
    excluded: int = 0  # files and folders matched by an exclude pattern (a folder counts once)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_junk(name: str, is_dir: bool) -> bool:
    """macOS resource forks, NAS thumbnail folders, recycle bins, hidden folders."""
    if name in JUNK_NAMES or name.startswith("._"):
        return True
    return is_dir and name.startswith(".")


def to_rel_path(root: str, path: str) -> str:
    return PurePosixPath(*Path(os.path.relpath(path, root)).parts).as_posix()


def check_utf8_path(path: str | os.PathLike, what: str = "folder") -> None:
    """PathNameError unless `path` (resolved, as it would be stored) is valid UTF-8 text. Photos
    with such names are recorded as failures; a root or library with one cannot be stored at all."""
    resolved = os.fspath(Path(path).expanduser().resolve())
    try:
        resolved.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(resolved).decode("utf-8", "backslashreplace")
        raise PathNameError(
            f"{what} {shown} has a name that is not valid UTF-8, which a library cannot store; "
            "rename it to UTF-8 (convmv can) and try again"
        ) from None


def normalized_pattern(text: str) -> str:
    """An `index --exclude` pattern as it is stored and matched. Patterns match a path from the
    root, written with a leading `/` (`/2024/@eaDir/x.jpg`; a folder also as `/2024/@eaDir/`), with
    fnmatch's `*`, `?` and `[...]`, `*` crossing `/`, case-sensitive. A pattern that starts with
    neither `/` nor `*` matches at any depth: `@eaDir/*` is stored as `*/@eaDir/*`."""
    pattern = text.strip()
    if not pattern:
        raise ExcludePatternError("an exclude pattern cannot be empty")
    if os.sep != "/":
        pattern = pattern.replace(os.sep, "/")
    pattern = pattern if pattern.startswith(("/", "*")) else "*/" + pattern
    if pattern.rstrip("*/") == "":
        raise ExcludePatternError(
            f"exclude pattern {text!r} would leave out the whole folder; "
            "to stop indexing a folder, `forget` it"
        )
    return pattern


class Excluder:
    """Compiled exclude patterns (see normalized_pattern)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        combined = "|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns)
        self._regex = re.compile(combined) if combined else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def matches(self, rel_path: str, is_dir: bool) -> bool:
        if self._regex is None:
            return False
        path = "/" + rel_path
        return bool(self._regex.match(path) or (is_dir and self._regex.match(path + "/")))


def scan_folder(root: str, start: str | None = None, exclude: Iterable[str] = ()) -> ScanResult:
    """All image files under `start` (default: `root`), paths relative to `root`, less those that
    `exclude` patterns match (normalized_pattern); what is left out is counted by kind.

    Iterative (no recursion limit on deep trees); folder symlinks are followed once per
    (st_dev, st_ino) so a link back to an ancestor cannot loop, and only when they lead to a folder
    inside the root (others are listed in `outside_links`); file symlinks are followed.
    """
    result = ScanResult()
    excluder = Excluder(exclude)
    real_root = os.path.realpath(root)
    top = start or root
    seen: set[tuple[int, int]] = set()
    top_stat = os.stat(top)
    seen.add((top_stat.st_dev, top_stat.st_ino))
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except OSError:
            result.unreadable_dirs.append(to_rel_path(root, folder))
            continue
        if not _searchable(children):
            # Listed but not searchable (read without execute permission: `chmod -R 644`, a FAT or
            # CIFS mount with a wrong dmask): nothing in it can be stat()ed or opened. Its rows are
            # kept, as for a folder that cannot be listed at all, never taken as removed or failed.
            result.unreadable_dirs.append(to_rel_path(root, folder))
            continue
        subdirs = []
        for entry in children:
            is_dir = _is_dir(entry)
            if excluder and excluder.matches(to_rel_path(root, entry.path), is_dir):
                result.excluded += 1
                continue
            if is_dir:
                if is_junk(entry.name, True):
                    result.skipped += 1
                    continue
                if entry.is_symlink() and not _inside(os.path.realpath(entry.path), real_root):
                    result.outside_links.append(to_rel_path(root, entry.path))
                    continue
                key = _dir_key(entry)
                if key is None:  # cannot be entered (its path is past PATH_MAX, a permission): kept
                    result.unreadable_dirs.append(to_rel_path(root, entry.path))
                elif key not in seen:
                    seen.add(key)
                    subdirs.append(entry.path)
            elif is_junk(entry.name, False):
                result.skipped += 1
            elif is_image_name(entry.name):
                scanned = _scan_file(root, entry)
                if scanned is not None:
                    result.files.append(scanned)
            elif (suffix := os.path.splitext(entry.name)[1].lower()) in MISSING_DECODERS:
                result.undecodable[suffix] += 1
            else:
                result.other[suffix] += 1
        stack.extend(reversed(subdirs))  # visit in name order
    result.files = _one_per_path(result.files)
    return result


def _one_per_path(files: list[ScannedFile]) -> list[ScannedFile]:
    """Sorted by rel_path, one file per rel_path. A name that is not valid UTF-8 is shown escapes
    and all (b"caf\\xe9" as "caf\\xe9"), which a real file may be named: the real one keeps the path,
    or both would share one row and flip between failed and indexed at every run."""
    by_path: dict[str, ScannedFile] = {}
    for f in files:
        kept = by_path.get(f.rel_path)
        if kept is None or (kept.error == NOT_UTF8 and f.error != NOT_UTF8):
            by_path[f.rel_path] = f
    return [by_path[rel_path] for rel_path in sorted(by_path)]


def _searchable(children: list[os.DirEntry]) -> bool:
    """Whether the entries of a listed folder can be looked up (lstat), i.e. the folder has execute
    permission. Asks entries until one answers: one deleted since the listing says nothing."""
    for entry in children:
        try:
            entry.stat(follow_symlinks=False)  # cached: the scan below reuses it
        except PermissionError:
            return False
        except OSError:
            continue  # deleted meanwhile, or this one name is too long
        return True
    return True


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _dir_key(entry: os.DirEntry) -> tuple[int, int] | None:
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _scan_file(root: str, entry: os.DirEntry) -> ScannedFile | None:
    rel_path = to_rel_path(root, entry.path)
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable bytes in a name cannot be stored as text or shown; record, never crash.
        shown = os.fsencode(rel_path).decode("utf-8", "backslashreplace")
        return _failed(shown, entry, NOT_UTF8)
    try:
        st = entry.stat(follow_symlinks=True)
    except FileNotFoundError:
        return _failed(rel_path, entry, "broken symlink")
    except PermissionError:
        return _failed(rel_path, entry, "permission denied")
    except OSError as exc:
        reason = "symlink loop" if exc.errno == errno.ELOOP else f"cannot stat: {exc.strerror}"
        return _failed(rel_path, entry, reason)
    if not stat.S_ISREG(st.st_mode):
        return None  # fifo, socket, device: not a photo
    return ScannedFile(rel_path, os.path.abspath(entry.path), st.st_size, st.st_mtime_ns)


def _failed(rel_path: str, entry: os.DirEntry, reason: str) -> ScannedFile:
    try:
        st = entry.stat(follow_symlinks=False)
        size_bytes, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size_bytes, mtime_ns = 0, 0
    return ScannedFile(rel_path, os.path.abspath(entry.path), size_bytes, mtime_ns, reason)


def fingerprint_file(path: str | os.PathLike) -> str:
    """sha256 of (size, first 1 MiB, last 64 KiB): cheap, and survives moves and renames."""
    with open_regular_file(path) as f:  # a FIFO would block open() for good
        size_bytes = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256(str(size_bytes).encode() + b"\0")
        digest.update(f.read(FINGERPRINT_HEAD_BYTES))
        if size_bytes > FINGERPRINT_HEAD_BYTES:
            f.seek(max(FINGERPRINT_HEAD_BYTES, size_bytes - FINGERPRINT_TAIL_BYTES))
            digest.update(f.read(FINGERPRINT_TAIL_BYTES))
    return digest.hexdigest()


def is_empty_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a folder with no entries at all: what an unmounted mount point looks like."""
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def is_root_online(root_path: str, stored_images: int) -> bool:
    """A root is offline when missing, or empty while images are stored for it: the look of an
    unmounted disk, whose photos must not be deleted."""
    try:
        return os.path.isdir(root_path) and (stored_images == 0 or not is_empty_folder(root_path))
    except OSError:
        return False
