"""Tag tables for other tools: CSV, JSON Lines and exiftool's CSV, to stdout, a pipe or a file
(written atomically, never half)."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from siglip_search.atomic import open_atomic

from ..errors import OutputPathError, TagNameError
from .sidecars import ROOT_TAG, machine_tag_path
from .xmp import keyword_values

CSV_HEADER = ("path", "tag", "score", "model")
EXIFTOOL_SEPARATOR = ", "  # run exiftool with -sep ", " so list cells split into keywords


@dataclass(frozen=True)
class TagRow:
    """One machine tag of one photo and its score, the SigLIP probability that chose it (scores
    never go into keywords)."""

    path: str
    tag: str
    score: float
    model: str


def write_csv(rows: Iterable[TagRow], out: Path | str | None = None) -> None:
    """`path,tag,score,model`, one row per tag; `out` None or "-" writes to stdout."""
    with _text_output(out) as f:
        writer = _CsvWriter(f)
        writer.writerow(CSV_HEADER)
        writer.writerows((row.path, row.tag, repr(float(row.score)), row.model) for row in rows)


def write_jsonl(rows: Iterable[TagRow], out: Path | str | None = None) -> None:
    """One JSON object a line: {"path", "tag", "score", "model"}; `out` None or "-" means stdout."""
    with _text_output(out) as f:
        for row in rows:
            f.write(json.dumps(asdict(row), ensure_ascii=False, allow_nan=False) + "\n")


def exiftool_tag_paths(
    rows: Iterable[TagRow], root_tag: str | None = ROOT_TAG
) -> dict[str, list[tuple[str, ...]]]:
    """Photo path -> its tag paths under `root_tag`; TagNameError for a tag or root tag that
    exiftool-csv cannot hold (a ',' would split a keyword in two). Nothing is written."""
    comma = EXIFTOOL_SEPARATOR.strip()
    if root_tag and comma in root_tag:
        raise TagNameError(
            f"root tag {root_tag!r} contains ',', which exiftool would split into two keywords; "
            "choose another --root-tag"
        )
    tag_paths: dict[str, list[tuple[str, ...]]] = {}
    for row in rows:
        path = machine_tag_path(row.tag, root_tag)
        if comma in row.tag:  # vocabularies refuse commas now; a library tagged before may hold one
            raise TagNameError(
                f"tag {row.tag!r} contains ',', which exiftool would split into two keywords; "
                "remove the comma from the vocabulary and run `tag` again"
            )
        tag_paths.setdefault(row.path, []).append(path)
    return tag_paths


def write_exiftool_csv(
    rows: Iterable[TagRow],
    out: Path | str | None = None,
    root_tag: str | None = ROOT_TAG,
    ancestors: bool = True,
) -> None:
    """One line per photo for exiftool: `SourceFile,Keywords,Subject,HierarchicalSubject`.

    `row.tag` is relative to `root_tag`, as for `export_xmp`; Keywords/Subject hold every path
    component and HierarchicalSubject every ancestor, like the sidecars. Embed with
    `exiftool -sep ", " -charset iptc=UTF8 -CodedCharacterSet=UTF8 -csv+=tags.csv FILES`
    (`-csv+=` adds to existing lists, again on every run; `-csv=` replaces them).
    """
    tag_paths = exiftool_tag_paths(rows, root_tag)
    with _text_output(out) as f:
        writer = _CsvWriter(f)
        writer.writerow(("SourceFile", "Keywords", "Subject", "HierarchicalSubject"))
        for source, paths in tag_paths.items():
            values = keyword_values(paths, ancestors)
            flat = EXIFTOOL_SEPARATOR.join(values["dc:subject"])
            writer.writerow(
                (source, flat, flat, EXIFTOOL_SEPARATOR.join(values["lr:hierarchicalSubject"]))
            )


class _CsvWriter:
    """RFC 4180 fields, "\n" between rows. Python before 3.12 quotes only a field holding a
    character of the line terminator, so a lone "\r" in a file name would split the row for every
    reader: such a row is written with every field quoted."""

    def __init__(self, f: TextIO) -> None:
        self._plain = csv.writer(f, lineterminator="\n")
        self._quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[str]) -> None:
        (self._quoted if any("\r" in field for field in row) else self._plain).writerow(row)

    def writerows(self, rows: Iterable[Sequence[str]]) -> None:
        for row in rows:
            self.writerow(row)


@contextmanager
def _text_output(out: Path | str | None) -> Iterator[TextIO]:
    """stdout for None or "-"; a device, pipe or socket is written in place (replacing it with a
    regular file would break it: `--out /dev/null`, `--out >(gzip > tags.gz)`); a regular file is
    written atomically (no temp file stays behind on failure). A write that fails is an
    OutputPathError naming the --out path and the reason."""
    if out is None or str(out) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(out)
    try:
        with _open_output(path) as text:
            yield text
    except BrokenPipeError:  # the reader of a pipe left: as for stdout, not the file's fault
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename and os.fsdecode(exc.filename) != str(path):  # the temp file beside it
            reason += f" (creating a file in {Path(os.fsdecode(exc.filename)).parent})"
        raise OutputPathError(f"cannot write --out {path}: {reason}") from None


@contextmanager
def _open_output(path: Path) -> Iterator[TextIO]:
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        blocking = next((p for p in reversed(path.parents) if p.is_file()), path.parent)
        raise OutputPathError(f"--out {path}: {blocking} is a file, not a folder") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"--out {path} is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "w", encoding="utf-8", newline="") as text:
            yield text
        return
    if st is None and not Path(os.path.realpath(path)).parent.is_dir():
        raise OutputPathError(f"--out {path}: folder {path.parent} does not exist")
    with open_atomic(os.path.realpath(path)) as raw:  # a symlink: its target is replaced
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        yield text
        text.flush()
        text.detach()  # `raw` is closed and fsynced by open_atomic
