"""A library's machine tags out: as table rows (CSV, JSON Lines, exiftool) and into the photos' XMP
sidecars, with the manifest kept in the library folder; what `siglip-search export` and the web
app's export tab call."""

from __future__ import annotations

from pathlib import Path

from ..library import Library
from ..store import MACHINE_TAG_SOURCE
from .sidecars import ROOT_TAG, machine_tag_path
from .tables import TagRow
from .xmp_export import ExportReport, export_xmp, undo_xmp

EXPORT_MANIFEST_NAME = "xmp-export-manifest.json"  # in the library folder: what XMP exports added


def library_tag_rows(library: Library, min_score: float | None = None) -> list[TagRow]:
    """The library's machine tags (path, tag, probability, model), by path then best first: the
    rows of the CSV and JSON Lines exports."""
    return [
        TagRow(r.path, r.tag, float(r.score or 0.0), r.model or "")
        for r in library.store.iter_tags(MACHINE_TAG_SOURCE, min_score=min_score)
    ]


def export_library_xmp(
    library: Library,
    root_tag: str | None = ROOT_TAG,
    min_score: float | None = None,
    dry_run: bool = False,
    *,
    naming: str = "auto",
    ancestors: bool = True,
) -> ExportReport:
    """Make each photo's XMP sidecar hold its machine tags under `root_tag` (photos are never opened
    for writing): keywords earlier exports added that are no longer tags (re-tagged, another
    threshold or root tag, photo left untagged) are removed, the user's own never. A tag an earlier
    export wrote that the user has removed from the sidecar since (in digiKam, darktable, Lightroom)
    is recorded as rejected for that photo in the library (source "sidecar") and not written again;
    the photo's other tags are written as usual. What was added is recorded in the library's
    manifest for undo_library_xmp. `naming`: which sidecar each photo gets (sidecar_path_for);
    `ancestors`: see keyword_values. The caller holds lock_library(): one export at a time."""
    items: dict[str, list[str]] = {}
    for record in library.store.iter_tags(MACHINE_TAG_SOURCE, min_score=min_score):
        items.setdefault(record.path, []).append(record.tag)
    photos = {Path(row.path): row for row in library.store.iter_images()}

    def record_rejections(pairs: list[tuple[Path, tuple[str, ...]]]) -> None:
        rejections = []
        for photo, tag_path in pairs:
            names = {machine_tag_path(t, root_tag): t for t in items.get(str(photo), [])}
            if photo in photos and tag_path in names:
                rejections.append((photos[photo].id, names[tag_path]))
        library.store.reject_tags(rejections, source="sidecar")

    return export_xmp(
        [(Path(p), t) for p, t in items.items()],
        library.path / EXPORT_MANIFEST_NAME,
        root_tag,
        dry_run,
        every_photo=True,
        photo_keys={path: row.fingerprint for path, row in photos.items()},
        roots=_roots(library),
        naming=naming,
        ancestors=ancestors,
        on_rejected=record_rejections,
    )


def undo_library_xmp(library: Library, dry_run: bool = False) -> ExportReport:
    """Remove exactly the keywords earlier exports of this library added (the user's stay), also
    from sidecars moved along with their photos since."""
    return undo_xmp(
        library.path / EXPORT_MANIFEST_NAME,
        dry_run=dry_run,
        photos=_photo_keys(library),
        roots=_roots(library),
    )


def _roots(library: Library) -> list[Path]:
    """The library's photo folders: no sidecar is touched through a link below one of them."""
    return [Path(root.path) for root in library.store.roots()]


def _photo_keys(library: Library) -> dict[Path, str | None]:
    """Each indexed photo's path and fingerprint, which a move or rename keeps: what lets export
    records follow photos renamed together with their sidecars."""
    return {Path(row.path): row.fingerprint for row in library.store.iter_images()}
