"""Atomic file replacement: a temp file beside the target, fsync, rename, then the folder fsynced;
and, in folders other people may write to (a shared photo folder), no read, write, rename or
delete through a symbolic link.

Every file the project writes for keeps (checkpoints, trainer state, the FAISS file and its sidecar,
XMP sidecars, export manifests and tables, thumbnails) goes through here, so a crash or a full disk
leaves the old file or the new one, never half of either. Temp files are named
`.NAME.siglip-search-XXXXXXXX.tmp` and locked (flock) while they are written: one that a killed
process left behind is recognisably ours and unlocked, and remove_stale_temps deletes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = "siglip-search"
_TEMP_NAME = re.compile(rf"\..+\.{TEMP_MARK}-[0-9a-f]{{8}}\.tmp", re.DOTALL)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


class LinkRefusedError(OSError):
    """A symbolic link where a file is to be read, written, renamed onto or deleted, or on the way
    to it: left as it is, since a link planted in a shared folder must not redirect our writes."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(
            errno.ELOOP, "a symbolic link; not followed, left as it is", os.fspath(path)
        )


def temp_name(target: Path) -> Path:
    """The temp file's name beside `target`: hidden, ours, random (names are cut to fit NAME_MAX)."""
    return target.with_name(f".{target.name[:200]}.{TEMP_MARK}-{secrets.token_hex(4)}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether `name` is the name of one of our temp files (see temp_name)."""
    return _TEMP_NAME.fullmatch(name) is not None


@contextmanager
def atomic_path(
    path: str | os.PathLike, before_replace: Callable[[], None] | None = None
) -> Iterator[Path]:
    """A temp path for a writer that wants a file name (FAISS, safetensors, torch.save, numpy).

    When the block succeeds the temp file is fsynced, given the replaced file's permission bits
    (and, where allowed, its owner and group), and renamed onto `path`; on any error it is removed
    and `path` is untouched. `before_replace` runs just before the rename and may raise to abandon
    the write. The rename replaces `path` itself: a symlink there is replaced, not followed. An
    OSError that names no file (a write() on a full disk) is raised again naming `path`.
    """
    target = Path(path)
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    temp = temp_name(target)
    fd = _new_temp(temp)
    try:
        yield temp
        _fsync_file(temp)
        if old is not None:
            _copy_owner_and_mode(old, temp)
        if before_replace is not None:
            before_replace()
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        _raise_naming(exc, target, temp)
        raise
    finally:
        os.close(fd)  # releases the lock, after the rename or the removal
    fsync_directory(target.parent)


@contextmanager
def open_atomic(
    path: str | os.PathLike,
    before_replace: Callable[[], None] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> Iterator[BinaryIO]:
    """A binary file replacing `path` only if the block succeeds (see `atomic_path`).

    With `root` (a folder other people may write to, holding `path`): the folders from `root` down
    are entered without following a link, the temp file is made there with O_NOFOLLOW, and a link or
    anything but a regular file at `path` (before the write or just before the rename) is refused
    with LinkRefusedError or OSError, never written through.
    """
    if root is None:
        with atomic_path(path, before_replace) as temp, open(temp, "wb") as f:
            yield f
        return
    target = Path(path)
    with open_folder(target.parent, root) as folder:
        old = _regular_or_none(target, folder)
        name = temp_name(target).name
        fd = _new_temp(name, folder)
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if old is not None:
                _copy_owner_and_mode(old, fd)
            if before_replace is not None:
                before_replace()
            _regular_or_none(target, folder)  # a link planted meanwhile is not renamed onto
            os.rename(name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=folder)
            _raise_naming(exc, target, folder)
            raise
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.fsync(folder)


def write_atomic(
    path: str | os.PathLike, data: bytes, *, root: str | os.PathLike | None = None
) -> None:
    """Replace `path` with `data`, atomically (see open_atomic for `root`)."""
    with open_atomic(path, root=root) as f:
        f.write(data)


@contextmanager
def open_folder(folder: str | os.PathLike, root: str | os.PathLike) -> Iterator[int]:
    """A descriptor of `folder` (inside `root`, or `root` itself), reached from `root` one name at
    a time without following a link: LinkRefusedError names the first link on the way. `root`
    itself is the user's choice and may be reached through links."""
    folder, root = Path(folder), Path(root)
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        raise ValueError(f"{folder} is not inside {root}") from None
    fd = os.open(root, _FOLDER)
    try:
        where = root
        for part in parts:
            where = where / part
            try:
                inner = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise LinkRefusedError(where) from None
                raise
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def lstat_in(name: str, folder: int) -> os.stat_result | None:
    """lstat of `name` in the folder of descriptor `folder`; None when there is no such entry."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_stale_temps(
    folder: str | os.PathLike,
    names: Iterable[str] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> list[Path]:
    """Delete our temp files in `folder` that no process is writing (their lock can be taken): what
    a killed writer left behind. Only regular files with temp_name's pattern are touched; returns
    those removed. `names`: the folder's listing, if at hand; `root`: as for open_atomic."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        with open_folder(folder, root if root is not None else folder) as fd:
            for name in filter(is_temp_name, os.listdir(fd) if names is None else names):
                with contextlib.suppress(OSError):
                    if _remove_if_unlocked(name, fd):
                        removed.append(folder / name)
    except (OSError, ValueError):
        pass  # a folder we cannot enter holds nothing we could remove
    return removed


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make a rename durable (POSIX); file systems that refuse only cost durability."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_temp(temp: Path | str, folder: int | None = None) -> int:
    """Create the temp file (never through a link) and hold its lock until the descriptor closes."""
    fd = os.open(temp, _NEW_FILE | getattr(os, "O_BINARY", 0), 0o666, dir_fd=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # in use: remove_stale_temps leaves it alone
    except OSError:
        pass  # a file system without flock: the file is still written and renamed
    return fd


def _remove_if_unlocked(name: str, folder: int) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
    fd = os.open(name, flags, dir_fd=folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a writer holds it
        now = lstat_in(name, folder)
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False  # renamed or replaced meanwhile
        os.unlink(name, dir_fd=folder)
        return True
    finally:
        os.close(fd)


def _regular_or_none(target: Path, folder: int) -> os.stat_result | None:
    """The stat of `target` in `folder` if it is a regular file, None if absent; else refused."""
    st = lstat_in(target.name, folder)
    if st is None or stat.S_ISREG(st.st_mode):
        return st
    if stat.S_ISLNK(st.st_mode):
        raise LinkRefusedError(target)
    raise OSError(errno.EINVAL, "not a regular file; left as it is", str(target))


def _is_link(name: str, folder: int) -> bool:
    st = lstat_in(name, folder)
    return st is not None and stat.S_ISLNK(st.st_mode)


def _raise_naming(exc: BaseException, target: Path, temp: Path | int) -> None:
    """An OSError that names no file (write() on a full disk), or our temp file, is raised again
    naming `target`: the file the user knows."""
    if not isinstance(exc, OSError) or exc.errno is None or isinstance(exc, LinkRefusedError):
        return
    if exc.filename is None or (isinstance(temp, Path) and exc.filename == str(temp)):
        raise OSError(exc.errno, exc.strerror, str(target)) from exc


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_owner_and_mode(old: os.stat_result, temp: Path | int) -> None:
    if hasattr(os, "chown") and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):  # only root (or the owner, for the group) may
            os.chown(temp, old.st_uid, old.st_gid)
    os.chmod(temp, stat.S_IMODE(old.st_mode))
