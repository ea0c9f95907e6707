"""Atomic file replacement: a temp file beside the target, fsync, rename, then the folder fsynced.

Every file the project writes for keeps (checkpoints, trainer state, the FAISS file and its sidecar,
XMP sidecars, export manifests and tables, thumbnails) goes through here, so a crash or a full disk
leaves the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temp_name(target: Path) -> Path:
    """The temp file's name beside `target`: hidden, random, `.tmp` (names are cut to fit NAME_MAX)."""
    return target.with_name(f".{target.name[:200]}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(
    path: str | os.PathLike, before_replace: Callable[[], None] | None = None
) -> Iterator[Path]:
    """A temp path for a writer that wants a file name (FAISS, safetensors, torch.save, numpy).

    When the block succeeds the temp file is fsynced, given the replaced file's permission bits
    (and, where allowed, its owner and group), and renamed onto `path`; on any error it is removed
    and `path` is untouched. `before_replace` runs just before the rename and may raise to abandon
    the write. The rename replaces `path` itself: a symlink there is replaced, not followed.
    """
    target = Path(path)
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    temp = temp_name(target)
    os.close(
        os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    )
    try:
        yield temp
        _fsync_file(temp)
        if old is not None:
            _copy_owner_and_mode(old, temp)
        if before_replace is not None:
            before_replace()
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(target.parent)


@contextmanager
def open_atomic(
    path: str | os.PathLike, before_replace: Callable[[], None] | None = None
) -> Iterator[BinaryIO]:
    """A binary file replacing `path` only if the block succeeds (see `atomic_path`)."""
    with atomic_path(path, before_replace) as temp, open(temp, "wb") as f:
        yield f


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data`, atomically."""
    with open_atomic(path) as f:
        f.write(data)


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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_owner_and_mode(old: os.stat_result, temp: Path) -> None:
    if hasattr(os, "chown") and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):  # only root (or the owner, for the group) may
            os.chown(temp, old.st_uid, old.st_gid)
    os.chmod(temp, stat.S_IMODE(old.st_mode))
