"""Typed exceptions of the indexer; only the CLI and UI turn them into messages and exit codes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from siglip_search.errors import SiglipSearchError


class IndexerError(SiglipSearchError):
    """Base class for library and indexing errors a user can act on."""


class LibraryNotFoundError(IndexerError):
    """A command that only reads a library was pointed at a directory that holds none."""


class LibraryLockedError(IndexerError):
    """Another process holds the library's lock (it is being indexed)."""

    def __init__(self, library: str, pid: int | None, holder: str | None = None) -> None:
        who = holder or (f"pid {pid}" if pid else "another process")
        super().__init__(
            f"library {library} is being indexed by {who}; "
            "wait for it to finish or pass --wait SECONDS to wait for it"
        )
        self.pid = pid


class ModelMismatchError(IndexerError):
    """The library was built with another model; mixing vectors of two models is refused."""


class ModelNotRecordedError(IndexerError):
    """A new library needs --model because no model has been recorded for it yet."""


class SchemaError(IndexerError):
    """The database was written by a newer version of siglip-search, or is not a library."""


class LibraryUnreadableError(IndexerError):
    """The library database is corrupt, truncated or not SQLite at all; it is never touched."""

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(
            f"{database} is not a readable siglip-search library ({reason}); it was left as it is: "
            "restore it from a backup, or move it away and index the folders again"
        )
        self.database = database


class LibraryReadOnlyError(IndexerError):
    """A command that writes (index, tag, XMP export) was given a library it may not write to."""

    def __init__(
        self, library: str, reason: str, hint: str = "this command writes to the library"
    ) -> None:
        super().__init__(
            f"library {library} is read-only ({reason}); {hint}: "
            "make the folder and its files writable, or use another --library"
        )
        self.library = library


class DatabaseUnreachableError(IndexerError):
    """The library's database server cannot be reached, or refused us (no such host, port,
    database or role, a wrong password), or the connection broke during a job."""


class DatabaseUnsupportedError(IndexerError):
    """A --database URL for a database siglip-search does not keep libraries in, or whose driver
    is not installed."""


class LibraryFolderError(IndexerError):
    """A library folder that cannot hold this machine's files of a library on a server."""


class FolderNotFoundError(IndexerError):
    """A folder given to `index` does not exist and is not a registered root."""


class ExcludePatternError(IndexerError, ValueError):
    """An `index --exclude` pattern that is empty or would leave out the whole root, or a
    `--no-exclude` naming a pattern the root does not have."""


class PathNameError(IndexerError):
    """A folder or library path whose name is not valid UTF-8: it cannot be stored as text or shown."""


class DecodeError(Exception):
    """One image file that cannot be indexed; `reason` is stored with the file's row.

    Not an IndexerError: a bad file is data (a failed row), never a reason to stop a job.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotRegularFileError(OSError):
    """A path that was a photo at scan time is now a FIFO, device, socket or folder; `reason` says which."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, os.fspath(path))
        self.reason = reason


class DecodeWorkerError(IndexerError):
    """A decode worker process died (killed, or a decoder crashed) while preparing a photo."""

    def __init__(self, item: str) -> None:
        super().__init__(
            f"a decode worker process died while preparing {item} or a photo queued after it "
            "(killed, or an image decoder crashed); the batches committed before it are kept: run "
            "the same command again to resume"
        )


class QueryError(IndexerError, ValueError):
    """A search query that is empty, malformed, or names an image file that does not exist."""


class SearchOptionError(IndexerError, ValueError):
    """A search option a user can fix: a folder outside every root, a bad date, a bad sort or k."""


class VocabularyError(IndexerError, ValueError):
    """A tag vocabulary file that is missing or has a line we cannot read (named with its number)."""


class ExportOptionError(IndexerError, ValueError):
    """Export options that do not go together (e.g. --out with XMP sidecars)."""


class IndexFileError(Exception):
    """The index file on disk is missing, corrupt or does not match its sidecar: rebuild it.

    Not an IndexerError: the database is the source of truth, so the library rebuilds the file
    and the user never sees this.
    """


# --- export ---------------------------------------------------------------------------------------


class TagNameError(IndexerError, ValueError):
    """A tag name that cannot be written as a hierarchical keyword."""


class ManifestError(IndexerError, ValueError):
    """The export manifest is missing (for undo), unreadable, or from an unknown format version."""


class OutputPathError(IndexerError, ValueError):
    """An --out path that cannot take a file (a folder, a missing or read-only folder, a full disk)."""


class SidecarError(Exception):
    """A sidecar we refuse to touch; `reason` is recorded for the user, like a failed file row.

    Not an IndexerError: one bad sidecar is reported with the others, never a reason to stop.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# --- Ray jobs and the on-disk index (docs/scale.md) -------------------------------------------------


class ExecutorError(IndexerError):
    """A job that cannot run where it was sent: Ray not installed, a cluster out of reach or too
    small for what was asked, or a Ray job that failed (its cause in one line)."""


class ReindexError(IndexerError, ValueError):
    """A vector index that cannot be built as asked: an unknown kind, a FAISS factory that is not
    an inverted-file index, too few photos to train it."""
