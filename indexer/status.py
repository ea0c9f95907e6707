"""What `siglip-search status` and the web app's Library tab show: LibraryStatus, read from the
database and the disk (library_status), and its JSON form for `status --json`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .decode import MISSING_DECODERS
from .errors import IndexFileError
from .ivf import LISTS_FILE
from .library import Library
from .locks import indexer_running
from .reindex import recorded_index
from .scan import is_root_online
from .store import PassedOver


@dataclass(frozen=True)
class RootStatus:
    path: str
    online: bool  # False: missing, or empty while photos are stored for it (an unmounted disk)
    images: int
    exclude: tuple[str, ...] = ()  # `index --exclude` patterns
    passed_over: PassedOver | None = None  # what its last whole scan left out; None: not scanned


@dataclass(frozen=True)
class RunStatus:
    started_at: str | None  # ISO 8601, UTC
    finished_at: str | None
    status: str  # ok, running, or interrupted (a run stopped by Ctrl-C or kill -9)
    roots: list[str]
    added: int
    updated: int
    moved: int
    removed: int
    failed: int


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str | None


@dataclass(frozen=True)
class IndexStatus:
    """The on-disk index `reindex` built, when the library records one."""

    kind: str  # ivfpq
    factory: str | None
    photos: int | None  # in it when it was built; photos indexed later are searched from memory
    built_at: str | None
    problem: str | None  # why it cannot be used (search goes on with the default index), or None


@dataclass(frozen=True)
class LibraryStatus:
    """What `siglip-search status` and the web app's Library tab show."""

    library: str  # the library folder (on a server: this machine's own files of the library)
    images: int  # indexed, with an embedding
    failed_count: int
    tags: int
    rejected_tags: int  # (photo, tag) pairs the user rejected: never tagged or exported again
    model: str | None  # None until a first folder is indexed
    mode: str | None
    model_identity: dict[str, Any] | None
    roots: tuple[RootStatus, ...]
    last_run: RunStatus | None
    failed: tuple[FailedFile, ...]
    database: str | None = None  # a library on a server: its URL, without the password
    index: IndexStatus | None = None  # None: the default index

    def to_json(self) -> dict[str, Any]:
        """The JSON object `siglip-search status --json` prints, keys in this order."""
        out = asdict(self)
        out["roots"], out["failed"] = list(out["roots"]), list(out["failed"])
        for root in out["roots"]:
            root["exclude"] = list(root["exclude"])
        return out


def library_status(library: Library) -> LibraryStatus:
    """What `siglip-search status` shows; reads only the database and the disk."""
    store = library.store
    counts, per_root, identity = store.counts(), store.images_per_root(), library.model_identity()
    roots = tuple(
        RootStatus(
            r.path,
            is_root_online(r.path, per_root.get(r.id, 0)),
            per_root.get(r.id, 0),
            r.exclude,
            r.passed_over,
        )
        for r in store.roots()
    )
    run = store.last_run()
    last_run = None
    if run is not None:
        # A run still marked running whose indexer holds no lock was stopped (Ctrl-C, kill -9).
        status = (
            "interrupted"
            if run.status == "running" and not indexer_running(library)
            else run.status
        )
        last_run = RunStatus(
            started_at=_utc_iso(run.started_at),
            finished_at=_utc_iso(run.finished_at),
            status=status,
            roots=run.roots,
            added=run.added,
            updated=run.updated,
            moved=run.moved,
            removed=run.removed,
            failed=run.failed,
        )
    return LibraryStatus(
        library=str(library.path),
        database=library.store.name if library.store.on_server else None,
        images=counts.images,
        failed_count=counts.failed,
        tags=counts.tags,
        rejected_tags=counts.rejected_tags,
        model=identity.get("model_id") if identity else None,
        mode=library.model_mode(),
        model_identity=identity,
        roots=roots,
        last_run=last_run,
        failed=tuple(FailedFile(r.path, r.error) for r in store.failures()),
        index=_index_status(library),
    )


def _index_status(library: Library) -> IndexStatus | None:
    """The recorded index and whether its files are there as built (without mapping them)."""
    try:
        record = recorded_index(library)
    except IndexFileError as exc:
        return IndexStatus("ivfpq", None, None, None, str(exc))
    if record is None:
        return None
    lists = library.path / record.folder / LISTS_FILE
    problem = None
    if not lists.is_file():
        problem = f"{lists} is missing; run `siglip-search reindex` to build it again"
    elif lists.stat().st_size != record.lists_bytes:
        problem = (
            f"{lists} changed since it was built; run `siglip-search reindex` to build it again"
        )
    return IndexStatus("ivfpq", record.factory, record.count, record.built_at, problem)


def _utc_iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=timezone.utc).isoformat(timespec="seconds") if moment else None


def passed_over_text(
    suffixes: Mapping[str, int], hidden: int = 0, excluded: int = 0, most: int = 8
) -> str:
    """`skipped 12 .xyz, 3 .mov, 2 .heic (no decoder); 4 hidden or system; 2 excluded`, the most
    frequent kinds first; "" when nothing was left out."""
    kinds = sorted(suffixes.items(), key=lambda item: (-item[1], item[0]))
    shown = [
        f"{n} {suffix or '(no extension)'}"
        + (" (no decoder)" if suffix in MISSING_DECODERS else "")
        for suffix, n in kinds[:most]
    ]
    if len(kinds) > most:
        shown.append(f"{sum(n for _, n in kinds[most:])} of {len(kinds) - most} other kinds")
    parts = [f"skipped {', '.join(shown)}"] if shown else []
    parts += [f"{hidden} hidden or system"] if hidden else []
    parts += [f"{excluded} excluded"] if excluded else []
    return "; ".join(parts)
