"""Who may write a library now: the writer lock of an SQLite library (an flock on its lock file),
or, for a library on PostgreSQL, advisory locks on the server, per folder (store/locks.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from siglip_search.cli import PROG

from .errors import LibraryLockedError, LibraryReadOnlyError
from .store.locks import LIBRARY_LOCK, LockHeld, folder_key

if TYPE_CHECKING:
    from .library import Library


@contextmanager
def lock_library(
    library: Library,
    wait_s: float = 0.0,
    *,
    folders: Sequence[str | os.PathLike] | None = None,
    command: str = "index",
) -> Iterator[None]:
    """Hold the library's writer lock, waiting up to `wait_s` for it, else LibraryLockedError.

    An SQLite library has one lock, an flock on its lock file: released by the OS when the holder
    dies, so a crashed indexer never leaves a stale lock behind. A library on a server takes
    advisory locks there instead, so that machines can index different `folders` at once: each
    folder alone, with the folders around it and the library shared; without `folders` (tag,
    export, or indexing every root) the whole library alone. `command` names the holder in the
    message a second writer gets. Only writers lock: a library this process may not write raises
    LibraryReadOnlyError here, before any work starts."""
    if library.store.on_server:
        exclusive, shared = _server_lock_keys(folders)
        holder = f"{PROG} {command} on {socket.gethostname()} pid {os.getpid()}"
        try:
            with library.store.hold_locks(exclusive, shared, wait_s, holder):
                yield
        except LockHeld as held:
            raise LibraryLockedError(library.name, None, str(held)) from None
        return
    with _file_lock(library, wait_s):
        yield


@contextmanager
def _file_lock(library: Library, wait_s: float) -> Iterator[None]:
    lock_name = library.lock_path.name
    if library.store.read_only:
        raise LibraryReadOnlyError(
            str(library.path), f"cannot write {Path(library.store.name).name}"
        )
    try:
        fd = os.open(library.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise LibraryReadOnlyError(
            str(library.path), f"cannot open {lock_name}: {exc.strerror}"
        ) from None
    try:
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LibraryLockedError(str(library.path), _read_pid(fd)) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _server_lock_keys(folders: Sequence[str | os.PathLike] | None) -> tuple[set[int], set[int]]:
    """(exclusive, shared) advisory lock keys: a folder's job excludes any job on the folder, inside
    it or around it (its parents' keys are taken shared), and a library-wide job excludes all."""
    if folders is None:
        return {LIBRARY_LOCK}, set()
    paths = [Path(folder).expanduser().resolve() for folder in folders]
    exclusive = {folder_key(str(path)) for path in paths}
    around = {folder_key(str(parent)) for path in paths for parent in path.parents}
    return exclusive, ({LIBRARY_LOCK} | around) - exclusive


def indexer_running(library: Library) -> bool:
    """Whether a process holds the library's writer lock now (asks without taking it); on a
    server, whether any job holds a lock of the library."""
    if library.store.on_server:
        return library.store.job_running()
    try:
        fd = os.open(library.lock_path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody has ever indexed here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
