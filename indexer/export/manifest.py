"""The undo manifest: per sidecar, what our exports added there (and whether we created the file),
kept as JSON in the library folder so that `export --undo` removes exactly that; and the record
arithmetic (merge two exports' records, take away what was removed)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from siglip_search.atomic import open_atomic

from ..errors import ManifestError
from .xmp import SidecarChange

MANIFEST_FORMAT = "siglip-search xmp export"
MANIFEST_VERSION = 1


def load_manifest(path: Path) -> dict[Path, SidecarChange]:
    """Sidecar path -> what our exports added there; empty when there is no manifest yet."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not an export manifest ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not a siglip-search export manifest")
    if document.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"{path} has manifest version {document.get('version')}; this build reads 1"
        )
    try:
        return {Path(p): _change_from_record(Path(p), r) for p, r in document["sidecars"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{path} has a malformed entry ({exc!r})") from None


def save_manifest(path: Path, records: dict[Path, SidecarChange]) -> None:
    """Write the records (sorted by sidecar path) atomically; the transient fields stay out."""
    sidecars = {}
    for sidecar, change in sorted(records.items()):
        record = asdict(change)
        for transient in ("path", "removed", "deleted", "notes"):
            del record[transient]
        record["photo"] = str(change.photo) if change.photo else None
        sidecars[str(sidecar)] = record
    document = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "sidecars": sidecars}
    try:
        with open_atomic(
            os.path.realpath(path)
        ) as f:  # a symlinked manifest: its target is replaced
            f.write(json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n")
    except OSError as exc:  # a full disk: the manifest on disk is the last one written, whole
        raise ManifestError(
            f"cannot write the export manifest {exc.filename or path} ({exc.strerror or exc}); "
            "it still matches the sidecars written before: free some space and run again"
        ) from None


def _change_from_record(path: Path, record: dict) -> SidecarChange:
    return SidecarChange(
        path=path,
        photo=Path(record["photo"]) if record.get("photo") else None,
        photo_key=record.get("photo_key"),
        created=bool(record.get("created", False)),
        added={k: list(v) for k, v in record.get("added", {}).items()},
        mirrored={k: list(v) for k, v in record.get("mirrored", {}).items()},
        created_properties=list(record.get("created_properties", [])),
        declared_namespaces=dict(record.get("declared_namespaces", {})),
        written_sha256=record.get("written_sha256"),
    )


def merged_record(old: SidecarChange | None, new: SidecarChange) -> SidecarChange:
    """Union of two exports' records for one sidecar; `created` sticks once we created the file."""
    old = old or SidecarChange(path=new.path)

    def union(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
        return {
            k: list(dict.fromkeys([*a.get(k, []), *b.get(k, [])])) for k in dict.fromkeys([*a, *b])
        }

    return SidecarChange(
        path=new.path,
        photo=new.photo or old.photo,
        photo_key=new.photo_key or old.photo_key,
        created=old.created or new.created,
        added=union(old.added, new.added),
        mirrored=union(old.mirrored, new.mirrored),
        created_properties=list(dict.fromkeys([*old.created_properties, *new.created_properties])),
        declared_namespaces={**old.declared_namespaces, **new.declared_namespaces},
        written_sha256=new.written_sha256 or old.written_sha256,
    )


def record_without(
    record: SidecarChange | None, removed: dict[str, list[str]]
) -> SidecarChange | None:
    """An earlier record less the values just removed from the sidecar."""
    if record is None or not removed:
        return record
    return replace(
        record,
        added=values_less(record.added, removed),
        mirrored=values_less(record.mirrored, removed),
    )


def values_less(values: dict[str, list[str]], taken: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per keyword property, the values not in `taken`; properties left empty are dropped."""
    kept = {k: [v for v in vs if v not in taken.get(k, [])] for k, vs in values.items()}
    return {k: vs for k, vs in kept.items() if vs}
