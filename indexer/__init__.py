"""Folder indexing: photo folders -> SQLite rows + FAISS vectors, incremental and resumable."""

from .errors import (
    DecodeError,
    FolderNotFoundError,
    IndexerError,
    LibraryLockedError,
    LibraryNotFoundError,
    ModelMismatchError,
    ModelNotRecordedError,
    SchemaError,
)
from .jobs import RunSummary, index_paths
from .library import (
    Library,
    SearchHit,
    default_library_dir,
    library_status,
    lock_library,
    open_library,
)
from .store import ImageRow
from .vectors import VectorIndex

__all__ = [
    "DecodeError", "FolderNotFoundError", "IndexerError", "LibraryLockedError", "LibraryNotFoundError",
    "ModelMismatchError", "ModelNotRecordedError", "SchemaError",
    "RunSummary", "index_paths",
    "Library", "SearchHit", "default_library_dir", "library_status", "lock_library", "open_library",
    "ImageRow", "VectorIndex",
]
