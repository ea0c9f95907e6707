"""Folder indexing: photo folders -> SQLite rows + FAISS vectors, incremental and resumable."""

from .errors import (
    DecodeError,
    ExportOptionError,
    FolderNotFoundError,
    IndexerError,
    LibraryLockedError,
    LibraryNotFoundError,
    ModelMismatchError,
    ModelNotRecordedError,
    QueryError,
    SchemaError,
    SearchOptionError,
    VocabularyError,
)
from .jobs import RunSummary, index_paths
from .library import (
    Library,
    default_library_dir,
    lock_library,
    open_library,
)
from .search import Hit, Searcher, SearchPage
from .status import LibraryStatus, library_status
from .store import ImageRow, TagRecord
from .vectors import AnnIndex, VectorIndex

__all__ = [
    "DecodeError",
    "FolderNotFoundError",
    "IndexerError",
    "LibraryLockedError",
    "LibraryNotFoundError",
    "ModelMismatchError",
    "ModelNotRecordedError",
    "SchemaError",
    "QueryError",
    "SearchOptionError",
    "VocabularyError",
    "ExportOptionError",
    "RunSummary",
    "index_paths",
    "Library",
    "LibraryStatus",
    "default_library_dir",
    "library_status",
    "lock_library",
    "open_library",
    "Searcher",
    "SearchPage",
    "Hit",
    "ImageRow",
    "TagRecord",
    "VectorIndex",
    "AnnIndex",
]
