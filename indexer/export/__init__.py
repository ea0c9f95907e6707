"""Tag export: a library's machine tags into XMP sidecars (with an undo manifest) or into CSV,
JSON Lines and exiftool tables.

Rooms: xmp.py (XMP bytes in, bytes out), sidecars.py (one photo's sidecar: its name, the plan and
the commit of one edit), manifest.py (what our exports added, for undo), xmp_export.py (an export
or undo over many photos), tables.py (CSV, JSON Lines, exiftool CSV), library.py (the entry points
the CLI and the web app call).
"""

from ..errors import ManifestError, OutputPathError, SidecarError, TagNameError
from .library import EXPORT_MANIFEST_NAME, export_library_xmp, library_tag_rows, undo_library_xmp
from .manifest import load_manifest
from .sidecars import (
    ROOT_TAG,
    SIDECAR_NAMINGS,
    SidecarPlan,
    commit_sidecar_plan,
    machine_tag_path,
    merge_keywords_into_sidecar,
    plan_keyword_merge,
    plan_keyword_removal,
    plan_keyword_sync,
    sidecar_path_for,
)
from .tables import TagRow, exiftool_tag_paths, write_csv, write_exiftool_csv, write_jsonl
from .xmp import SidecarChange
from .xmp_export import ExportReport, export_xmp, undo_xmp

__all__ = [
    "EXPORT_MANIFEST_NAME",
    "export_library_xmp",
    "library_tag_rows",
    "undo_library_xmp",
    "ROOT_TAG",
    "SIDECAR_NAMINGS",
    "ExportReport",
    "SidecarChange",
    "SidecarPlan",
    "TagRow",
    "ManifestError",
    "OutputPathError",
    "SidecarError",
    "TagNameError",
    "commit_sidecar_plan",
    "export_xmp",
    "load_manifest",
    "machine_tag_path",
    "merge_keywords_into_sidecar",
    "plan_keyword_merge",
    "plan_keyword_removal",
    "plan_keyword_sync",
    "sidecar_path_for",
    "undo_xmp",
    "exiftool_tag_paths",
    "write_csv",
    "write_exiftool_csv",
    "write_jsonl",
]
