"""Pure presentation for the web UI: search hits, tags, status and reports -> captions, markdown, labels.

Nothing here touches Gradio, the library or the model, so every function is testable on plain data.
Bad form input raises FormError, which the page shows as a message (never a traceback).

A little over ~400 lines, kept whole: short functions, one per thing the page shows, that share the
escaping helpers at the bottom, which must be the same wherever a file name reaches markdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from indexer.names import shown
from siglip_search.errors import SiglipSearchError

if TYPE_CHECKING:  # for type hints only: the page's views need none of their code
    from indexer.export import ExportReport
    from indexer.jobs import RunSummary
    from indexer.search import Hit
    from indexer.status import LibraryStatus

# a tagging request with more labels is a mistake (or an attack), not a photo question
MAX_LABELS = 64
MAX_LABEL_CHARS = 100


class FormError(SiglipSearchError, ValueError):
    """A form field the user has to correct; shown as the message of a gr.Error."""


@dataclass(frozen=True)
class HitRecord:
    """What the page keeps of one hit between events (session state), JSON-able via `as_dict`."""

    id: int
    path: str
    rel_path: str
    root: str
    score: float  # SigLIP probability sigmoid(t * cosine + b)
    cosine: float
    taken_at: str | None = None
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    missing: bool = False  # the file was gone when the results were shown
    lens: str | None = None
    latitude: float | None = None  # GPS position, decimal degrees
    longitude: float | None = None

    @classmethod
    def from_hit(cls, hit: Hit, missing: bool = False) -> HitRecord:
        return cls(
            id=int(hit.id),
            path=str(hit.path),
            rel_path=str(hit.rel_path),
            root=str(hit.root),
            score=float(hit.score),
            cosine=float(hit.cosine),
            taken_at=hit.taken_at,
            width=hit.width,
            height=hit.height,
            camera=hit.camera,
            missing=missing,
            lens=hit.lens,
            latitude=hit.latitude,
            longitude=hit.longitude,
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def as_json(self) -> dict[str, Any]:
        """For the page's JSON output. The absolute path is under "file", not "path": gradio_client
        takes any {"path": ...} in a result for a file to download from the server."""
        record = self.as_dict()
        record["file"] = record.pop("path")
        return record

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel_path).name


# --- search results -----------------------------------------------------------------------------


def format_probability(prob: float) -> str:
    """0.873 -> '87%', 0.0312 -> '3.1%', 0.0004 -> '0.04%': SigLIP probabilities are often small."""
    if not math.isfinite(prob):
        return "?"
    if prob >= 0.995:
        return ">99%"
    if prob >= 0.1:
        return f"{prob:.0%}"
    if prob >= 0.001:
        return f"{prob:.1%}"
    if prob >= 0.0001:
        return f"{prob:.2%}"
    return "<0.01%"


def hit_caption(hit: HitRecord) -> str:
    """The gallery caption: probability first (what the user sorts by), then the file name."""
    return f"{format_probability(hit.score)} · {shown(hit.name)}" + (
        " (file missing)" if hit.missing else ""
    )


def gallery_items(hits: Sequence[HitRecord], pictures: Sequence[str]) -> list[tuple[str, str]]:
    """(image file, caption) pairs for gr.Gallery; `pictures` are the hits' thumbnail files."""
    if len(hits) != len(pictures):
        raise ValueError(f"{len(hits)} hits but {len(pictures)} pictures")
    return [(picture, hit_caption(hit)) for hit, picture in zip(hits, pictures, strict=True)]


def results_summary(
    hits: Sequence[HitRecord],
    *,
    query: str,
    min_score: float,
    sort: str,
    offset: int = 0,
    has_more: bool = False,
    count_at_max: bool = False,
) -> str:
    """One line above the gallery: how many, for what, above which probability, in which order.
    `count_at_max`: the number of results cannot be raised further, so the hint says what can."""
    what = f" for “{_escape(query)}”" if query else ""
    if not hits:
        hint = " Lower the minimum probability." if min_score > 0 else ""
        return f"No photos{what} with probability ≥ {format_probability(min_score)}.{hint}"
    span = f"{offset + 1}–{offset + len(hits)}" if offset else f"{len(hits)}"
    noun = "photo" if len(hits) == 1 and not offset else "photos"
    order = "newest first" if sort == "date" else "best first"
    above = f", probability ≥ {format_probability(min_score)}" if min_score > 0 else ""
    how = (
        "raise the minimum probability, or narrow by folder or date"
        if count_at_max
        else "raise the number of results"
    )
    more = f" More match: {how}." if has_more else ""
    return f"**{span} {noun}**{what} ({order}{above}). Click a photo for details.{more}"


def hit_details_markdown(hit: HitRecord, tags: Sequence[tuple[str, float]] = ()) -> str:
    """The panel beside the large picture: path, date, size, camera, probability, tags."""
    lines = [f"### {_escape(hit.name)}", f"`{_escape_code(hit.path)}`", ""]
    if hit.missing:
        lines += [
            "**The file is no longer there** (moved or deleted since indexing); index the folder again "
            "to update the library.",
            "",
        ]
    facts = []
    if hit.taken_at:
        facts.append(f"taken {format_taken_at(hit.taken_at)}")
    if hit.width and hit.height:
        facts.append(f"{hit.width}×{hit.height}")
    if hit.camera:
        facts.append(_escape(hit.camera))
    if hit.lens:
        facts.append(_escape(hit.lens))
    if hit.latitude is not None and hit.longitude is not None:
        facts.append(f"GPS {hit.latitude:.5f}, {hit.longitude:.5f}")
    if facts:
        lines += [" · ".join(facts), ""]
    lines.append(f"probability **{format_probability(hit.score)}** (cosine {hit.cosine:.3f})")
    lines.append("")
    if tags:
        lines.append("tags: " + ", ".join(_tag_text(tag, p) for tag, p in tags))
    else:
        lines.append("tags: none")
    return "\n".join(lines)


def _tag_text(tag: str, prob: float) -> str:
    """A machine tag with its probability; the user's own tags have none."""
    return _escape(tag) + (f" ({format_probability(prob)})" if math.isfinite(prob) else "")


def format_taken_at(taken_at: str) -> str:
    """'2021-07-14T18:03:09' -> '2021-07-14 18:03'."""
    day, _, time = taken_at.partition("T")
    return f"{day} {time[:5]}".strip()


# --- form fields --------------------------------------------------------------------------------


def parse_query(text: str | None) -> str:
    query = (text or "").strip()
    if not query:
        raise FormError("Type something to search for, e.g. “a red circle” or “beach - people”.")
    return query


def parse_labels(text: str | None) -> list[str]:
    """'dog, cat,, Dog ' -> ['dog', 'cat']: separated by commas or new lines, trimmed, first spelling of
    a duplicate kept."""
    labels: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"[,\n]", text or ""):
        label = " ".join(part.split())
        if label and label.casefold() not in seen:
            if len(label) > MAX_LABEL_CHARS:
                raise FormError(
                    f"The label “{label[:30]}…” is longer than {MAX_LABEL_CHARS} characters."
                )
            seen.add(label.casefold())
            labels.append(label)
    if len(labels) > MAX_LABELS:
        raise FormError(
            f"{len(labels)} labels is too many; give at most {MAX_LABELS}, or use the vocabulary."
        )
    return labels


def parse_count(value: float | int | None, *, low: int = 1, high: int = 200) -> int:
    """Slider and number fields arrive as floats (and from API clients as anything)."""
    try:
        count = int(value) if value is not None else low
    except (TypeError, ValueError):
        raise FormError(f"“{value}” is not a number.") from None
    return min(max(count, low), high)


def parse_image_id(value: float | int | str | None) -> int:
    """An indexed photo's id from a number field (or an API client)."""
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        raise FormError(f"“{value}” is not a photo id.") from None
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise FormError(f"“{value}” is not a photo id.")
    return int(number)


def parse_probability(value: float | int | None) -> float:
    try:
        prob = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        raise FormError(f"“{value}” is not a probability.") from None
    if not math.isfinite(prob) or not 0.0 <= prob <= 1.0:
        raise FormError("The minimum probability must be between 0 and 1.")
    return prob


# --- tagging ------------------------------------------------------------------------------------


def label_probabilities(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """(label, sigmoid probability) pairs -> the gr.Label value, highest first. They are
    independent yes/no answers, so they are shown as they are, never normalized to sum to 1."""
    ranked = sorted(((str(label), float(prob)) for label, prob in pairs), key=lambda x: -x[1])
    return dict(ranked)


def tagging_summary(probabilities: Mapping[str, float], threshold: float, limit: int = 20) -> str:
    """Which labels reach the threshold, then the exact probabilities (the chart rounds to whole
    percents, and SigLIP's are often well below 1%)."""
    if not probabilities:
        return ""
    above = [label for label, prob in probabilities.items() if prob >= threshold]
    if above:
        head = (
            f"**{len(above)} of {len(probabilities)}** labels reach {format_probability(threshold)}: "
            + ", ".join(f"“{_escape(label)}”" for label in above)
        )
    else:
        best = _escape(next(iter(probabilities)))
        head = f"No label reaches {format_probability(threshold)}; the most likely is “{best}”."
    rows = [
        f"| {_escape_text_cell(label)} | {format_probability(prob)} |"
        for label, prob in list(probabilities.items())[:limit]
    ]
    more = [f"| … {len(probabilities) - limit} more | |"] if len(probabilities) > limit else []
    return "\n".join([head, "", "| label | probability |", "|---|---|", *rows, *more])


# --- library ------------------------------------------------------------------------------------


def status_markdown(report: LibraryStatus | None, max_failures: int = 20) -> str:
    """indexer.library_status() -> the Library tab's summary: photos, model, roots, failures."""
    if report is None:
        return "**No library yet.** Index a folder below to create one."
    identity = report.model_identity or {}
    model = report.model or "(none yet: index a folder)"
    dim = f" · dim {identity['dim']}" if identity.get("dim") else ""
    mode = f" · {report.mode}" if report.mode else ""
    lines = [
        f"**{report.images} photos** indexed · {report.failed_count} failed · {report.tags} tags"
        + (f" · {report.rejected_tags} tags you rejected" if report.rejected_tags else ""),
        "",
        f"model: `{_escape_code(model)}`{dim}{mode}",
        "",
        f"library: `{_escape_code(report.library)}`",
        "",
    ]
    if report.roots:
        from indexer.status import passed_over_text  # loaded with the report it describes

        lines += ["| folder | state | photos | not indexed |", "|---|---|---|---|"]
        for root in report.roots:
            state = "online" if root.online else "**offline** (missing or empty; photos kept)"
            passed = root.passed_over
            left_out = (
                passed_over_text(passed.suffixes, passed.hidden, passed.excluded) if passed else ""
            )
            exclude = "; exclude " + ", ".join(root.exclude) if root.exclude else ""
            lines.append(
                f"| `{_escape_cell(root.path)}` | {state} | {root.images} | "
                f"{_escape_text_cell(left_out + exclude)} |"
            )
        lines.append("")
    else:
        lines += ["No folders yet.", ""]
    run = report.last_run
    if run:
        lines += [
            f"last run {run.started_at} ({run.status}): added {run.added}, "
            f"updated {run.updated}, moved {run.moved}, removed {run.removed}, "
            f"failed {run.failed}",
            "",
        ]
    failed = report.failed
    if failed:
        lines += ["| failed file | reason |", "|---|---|"]
        lines += [
            f"| `{_escape_cell(f.path)}` | {_escape_text_cell(f.reason or '')} |"
            for f in failed[:max_failures]
        ]
        if len(failed) > max_failures:
            lines.append(
                f"| … and {len(failed) - max_failures} more | `siglip-search status --json` lists all |"
            )
    return "\n".join(lines)


def index_summary_markdown(summary: RunSummary) -> str:
    """indexer.RunSummary -> one line after an indexing job, plus its warnings."""
    lines = [
        f"Done: added {summary.added}, updated {summary.updated}, moved {summary.moved}, "
        f"removed {summary.removed}, failed {summary.failed}, unchanged {summary.unchanged} "
        f"({summary.seconds:.1f} s, {summary.images_per_s:.1f} photos/s)."
    ]
    lines += [
        f"- folder {_escape(root)} is offline (missing or empty); its photos are kept"
        for root in summary.offline_roots
    ]
    lines += [
        f"- cannot list {_escape(folder)}; its photos are kept"
        for folder in summary.unreadable_dirs
    ]
    lines += [
        f"- folder link {_escape(link)} leads outside the folder; not followed (index its target itself)"
        for link in summary.outside_links
    ]
    lines += [
        f"- {count} {_escape(suffix)} photos skipped: the server cannot decode them"
        for suffix, count in sorted(summary.undecodable.items())
    ]
    from indexer.status import passed_over_text  # loaded with the summary it describes

    left_out = passed_over_text(summary.passed_over, summary.hidden, summary.excluded)
    lines += [f"- not indexed: {_escape(left_out)}"] if left_out else []
    return "\n".join(lines)


def export_report_markdown(
    report: ExportReport, *, dry_run: bool, undo: bool = False, limit: int = 50
) -> str:
    """indexer.export.ExportReport -> what was (or would be) written, unchanged and skipped."""
    changes = report.planned if dry_run else report.written
    verb = (
        ("would change" if dry_run else "changed")
        if not undo
        else ("would be undone" if dry_run else "undone")
    )
    lines = [
        f"**{len(changes)} sidecars {verb}**, {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped." + (" Nothing was written (dry run)." if dry_run else "")
    ]
    for change in changes[:limit]:
        # An undo lists what it removed of ours (SidecarChange.removed_keywords), not the user's copies.
        keywords = _keywords(change.removed_keywords if undo else change.added)
        stale = [] if undo else _keywords(change.removed)
        lines.append(
            f"- `{_escape_code(str(change.path))}`"
            + (f": {_escape(', '.join(keywords))}" if keywords else "")
            + (f"; removed {_escape(', '.join(stale))}" if stale else "")
        )
    if len(changes) > limit:
        lines.append(f"- … and {len(changes) - limit} more")
    for path in report.missing[:limit]:
        lines.append(f"- `{_escape_code(str(path))}` no longer exists; forgotten")
    for path, reason in report.skipped[:limit]:
        lines.append(f"- skipped `{_escape_code(str(path))}`: {_escape(reason)}")
    return "\n".join(lines)


def _keywords(values: Mapping[str, list[str]]) -> list[str]:
    """The hierarchical keywords of a sidecar change (the most telling form), else any."""
    chosen = values.get("lr:hierarchicalSubject") or next(iter(values.values()), [])
    return [str(v) for v in chosen]


def progress_line(done: int, total: int) -> str:
    return f"indexing {done}/{total} photos" if total else "scanning folders"


# --- escaping -----------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Markdown-neutral text: file names like `*draft*_[1].jpg`, `a&lt;b.jpg` or `$$x$$.jpg` (the page
    renders $$...$$ as LaTeX) must show as they are."""
    return re.sub(r"([\\`*_\[\]{}()<>#+!|~&$])", r"\\\1", shown(str(text)))


def _escape_code(text: str) -> str:
    return shown(str(text)).replace("`", "ˋ")


def _escape_cell(text: str) -> str:
    """For a table cell inside a code span."""
    return _escape_code(str(text)).replace("|", "\\|")


def _escape_text_cell(text: str) -> str:
    """For a table cell of plain text: markdown-neutral, on one line."""
    return _escape(str(text).replace("\n", " "))
