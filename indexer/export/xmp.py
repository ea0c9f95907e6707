"""XMP keyword lists as bytes in, bytes out: parse untrusted XMP safely, splice keywords in and out.

Edits are byte splices into the original document, so everything else (ratings, develop settings,
unknown namespaces, prefixes, the xpacket wrapper, padding, formatting) stays byte-identical.
No file system access here; sidecars.py reads and writes the files.

Kept whole, above the ~400 lines we aim for: the parser that records byte offsets, the planning of
keyword edits and the splicer share private types (_Node, _Doc, _Edit) and one invariant (every
edit is a byte range the recorder measured in this document). Split, those types would become an
API between modules, and a reader checking that an edit keeps the user's bytes would follow it
across files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers.expat import XMLParserType

from defusedxml.ElementTree import DefusedXMLParser

from ..errors import SidecarError

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_META = "adobe:ns:meta/"
# What a fresh sidecar holds before keywords go in: the wrapper Adobe's XMP toolkit and exiv2 write.
NEW_SIDECAR = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about="">\n'
    "  </rdf:Description>\n"
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
).encode()


@dataclass(frozen=True)
class KeywordProperty:
    """A keyword list some photo manager reads (docs/export.md, "Which file each photo manager
    reads"); `key` names it in reports and manifests."""

    key: str  # preferred "prefix:localName"
    uris: tuple[str, ...]
    container: str  # "Bag" or "Seq": the kind we create when the sidecar lacks the property
    always: bool  # created when missing; the others are only extended where they already exist

    @property
    def local(self) -> str:
        return self.key.split(":")[1]


KEYWORD_PROPERTIES = (
    KeywordProperty("dc:subject", ("http://purl.org/dc/elements/1.1/",), "Bag", True),
    KeywordProperty("lr:hierarchicalSubject", ("http://ns.adobe.com/lightroom/1.0/",), "Bag", True),
    KeywordProperty("digiKam:TagsList", ("http://www.digikam.org/ns/1.0/",), "Seq", True),
    KeywordProperty(
        "MicrosoftPhoto:LastKeywordXMP",
        ("http://ns.microsoft.com/photo/1.0/", "http://ns.microsoft.com/photo/1.0"),
        "Bag",
        False,
    ),
    KeywordProperty(
        "mediapro:CatalogSets", ("http://ns.iview-multimedia.com/mediapro/1.0/",), "Bag", False
    ),
)
# Bounds checked before a sidecar's elements reach our tree: darktable histories reach a few hundred
# KiB and XMP nests a dozen levels (x:xmpmeta, rdf:RDF, rdf:Description, a property, rdf:Bag,
# rdf:li, a structure...); anything beyond is not a sidecar we should edit.
MAX_XMP_BYTES = 32 << 20
MAX_XMP_DEPTH = 64
ACDSEE_CATEGORIES = "{http://ns.acdsee.com/iptc/1.0/}categories"


@dataclass
class SidecarChange:
    """What an export added to (or an undo removed from) one sidecar, per keyword property key."""

    path: Path
    photo: Path | None = None
    # What identifies the photo's content (the library's fingerprint), so that a photo renamed together
    # with its sidecar can be found again; None where the caller gave none.
    photo_key: str | None = None
    created: bool = False  # the sidecar file did not exist before
    added: dict[str, list[str]] = field(default_factory=dict)
    # The user's own keywords copied into a list we created, so readers stopping there still see them.
    mirrored: dict[str, list[str]] = field(default_factory=dict)
    created_properties: list[str] = field(default_factory=list)
    declared_namespaces: dict[str, str] = field(default_factory=dict)  # prefix -> URI
    # SHA-256 of the bytes our last write left in the file: undo deletes a sidecar we created only
    # while it still holds exactly those bytes. None: nothing written yet (or an older manifest).
    written_sha256: str | None = None
    removed: dict[str, list[str]] = field(default_factory=dict)
    deleted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.mirrored or self.removed or self.deleted)

    @property
    def removed_keywords(self) -> dict[str, list[str]]:
        """For an undo: what was removed, less the user's keywords that a list we created only copied
        (`mirrored`), which went with that list."""
        return {
            k: [v for v in vs if v not in self.mirrored.get(k, [])]
            for k, vs in self.removed.items()
        }


# The lists that name a keyword by its whole path, and their separators: a tag gone from one of
# them was removed by the user (digiKam, darktable and Lightroom rewrite these), see removed_tags.
HIERARCHICAL_SEPARATORS = {
    "lr:hierarchicalSubject": "|",
    "digiKam:TagsList": "/",
    "MicrosoftPhoto:LastKeywordXMP": "/",
    "mediapro:CatalogSets": "|",
}
# Hierarchies other tools keep for themselves in the keyword lists (darktable's `darktable|format|JPG`,
# `darktable|changed`): never copied into a list we create.
FOREIGN_ROOTS = ("darktable",)


def keyword_values(
    tag_paths: Iterable[tuple[str, ...]], ancestors: bool = True
) -> dict[str, list[str]]:
    """The values each keyword property gets for these tag paths, in the form each manager reads.
    ancestors=False: dc:subject gets only each tag's own name and lr:hierarchicalSubject only its whole
    path, so a root like `AI` is not a keyword of every photo (Lightroom lists such ancestors as
    keywords of their own)."""
    values: dict[str, list[str]] = {prop.key: [] for prop in KEYWORD_PROPERTIES}
    for path in tag_paths:
        first = 1 if ancestors else len(path)
        _extend_unique(values["dc:subject"], path if ancestors else path[-1:])  # flat keywords
        _extend_unique(
            values["lr:hierarchicalSubject"],
            ["|".join(path[:i]) for i in range(first, len(path) + 1)],
        )
        # digiKam lists the assigned tags, not their ancestors (it creates those itself).
        _extend_unique(values["digiKam:TagsList"], ["/".join(path)])
        _extend_unique(values["MicrosoftPhoto:LastKeywordXMP"], ["/".join(path)])
        _extend_unique(values["mediapro:CatalogSets"], ["|".join(path)])
    return values


def keyword_lists(raw: bytes, path: Path) -> dict[str, list[str]]:
    """The keyword lists an XMP document holds, per property key; properties it lacks are left out.
    Raises SidecarError (naming `path`) for a document we refuse to read."""
    doc = _parse(raw, path)
    lists = {}
    for prop in KEYWORD_PROPERTIES:
        _, container = _find_property(doc, prop)
        if container is not None:
            lists[prop.key] = [_text(c) for c in container.children if _is_item(c)]
    return lists


def removed_tags(
    tag_paths: Iterable[tuple[str, ...]], record: SidecarChange, lists: dict[str, list[str]]
) -> list[tuple[str, ...]]:
    """The tag paths an earlier export wrote into this sidecar (`record`) that the user has removed
    since: the tag's whole path is gone from a list that still exists and that the export wrote it
    to, or from every list it was written to. dc:subject is not asked: it holds a tag's name alone,
    which other tags and the user's own keywords may share."""
    removed = []
    for path in tag_paths:
        written = [
            (key, separator.join(path))
            for key, separator in HIERARCHICAL_SEPARATORS.items()
            if separator.join(path) in record.added.get(key, [])
        ]
        if not written:
            continue
        left = [(key, form) for key, form in written if form in lists.get(key, [])]
        if not left or any(key in lists and form not in lists[key] for key, form in written):
            removed.append(path)
    return removed


def add_keywords(
    raw: bytes, values: dict[str, list[str]], path: Path
) -> tuple[bytes | None, SidecarChange]:
    """Add `keyword_values(...)` to an XMP document: (new bytes, or None if nothing to add; change).

    Raises SidecarError (naming `path`) for a document we refuse to touch.
    """
    doc = _with_description(_parse(raw, path), path)
    edits, change = _merge_edits(doc, values)
    change.path = Path(path)
    return (_apply(doc.raw, edits) if edits else None), change


def remove_keywords(
    raw: bytes, record: SidecarChange, path: Path
) -> tuple[bytes | None, SidecarChange]:
    """Remove exactly what `record` says an export added: (new bytes or None, change). The change says
    `deleted` when we created the file and nothing but the empty wrapper would remain."""
    doc = _parse(raw, path)
    change = SidecarChange(path=Path(path), photo=record.photo)
    edits: list[_Edit] = []
    gone: list[_Node] = []
    for prop in KEYWORD_PROPERTIES:
        node, container = _find_property(doc, prop)
        if node is None or container is None:  # no rdf:Bag or rdf:Seq of this property
            continue
        ours = _pick_items(container, record.added.get(prop.key, []))
        rest = [c for c in container.children if all(c is not o for o in ours)]
        mirrored = record.mirrored.get(prop.key, [])
        only_copies = all(_is_item(c) and _text(c) in mirrored for c in rest)
        if prop.key in record.created_properties and only_copies and node.children == [container]:
            # A list we created that holds nothing of the user's beyond copies: remove it whole.
            taken, removed = [node], [_text(c) for c in container.children if _is_item(c)]
            copies = [
                t for t in removed if t in mirrored and t not in record.added.get(prop.key, [])
            ]
            if copies:  # in `removed` too; reports leave them out (they were the user's keywords)
                change.mirrored[prop.key] = copies
        else:
            taken, removed = ours, [_text(c) for c in ours]
        edits += [_removal(n) for n in taken]
        gone += taken
        if removed:
            change.removed[prop.key] = removed
    edits += _undeclare_unused(doc, record.declared_namespaces, gone)
    data = _apply(raw, edits) if edits else None
    change.deleted = record.created and _holds_nothing(_parse(data or raw, path))
    return (None if change.deleted else data), change


# ---- parsing: a tree that remembers byte offsets, so edits splice the original bytes ----

_START_TAG = re.compile(rb"""<([^\s/>]+)(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
_ATTRIBUTE = re.compile(rb"""(\s+)([^\s=/>]+)\s*=\s*(?:"[^"]*"|'[^']*')""")
_DECLARED_ENCODING = re.compile(
    rb"""^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)"""
)
_Edit = tuple[int, int, bytes]  # replace raw[start:end] with bytes


@dataclass(eq=False)
class _Node:
    tag: str | None  # Clark name; None for a comment or processing instruction
    attrib: dict[str, str]
    scope: dict[str, str]  # prefix -> namespace URI in force here
    start: int  # byte offset of "<"
    start_end: int  # just past the start tag
    qname: str = ""  # the tag as written, e.g. "rdf:Description"
    self_closing: bool = False
    end_end: int = 0  # just past the end tag
    text: str = ""  # character data directly inside (all we read is rdf:li text)
    children: list[_Node] = field(default_factory=list)
    parent: _Node | None = None


@dataclass
class _Doc:
    raw: bytes
    root: _Node
    rdf: _Node
    newline: str
    unit: str  # one level of indentation, as the file does it


class _TooDeepError(ValueError):
    """Raised from inside the parser when an element lies deeper than MAX_XMP_DEPTH."""


class _Recorder:
    """Parser target that records where each element starts and ends in the bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.expat: XMLParserType  # set by _parse once the parser, which needs this target, exists
        self.stack: list[_Node] = []
        self.pending: list[tuple[str, str]] = []
        self.root: _Node | None = None

    def start_ns(self, prefix: str | None, uri: str | None) -> None:
        self.pending.append((prefix or "", uri or ""))

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if len(self.stack) >= MAX_XMP_DEPTH:  # stops the parse: the tree never holds it
            raise _TooDeepError(f"nested more than {MAX_XMP_DEPTH} elements deep")
        scope = dict(
            self.stack[-1].scope if self.stack else {"xml": "http://www.w3.org/XML/1998/namespace"}
        )
        scope.update(self.pending)
        self.pending = []
        match = _START_TAG.match(self.raw, self.expat.CurrentByteIndex)
        if match is None:
            raise ValueError("unreadable start tag")
        node = _Node(
            tag, dict(attrib), scope, match.start(), match.end(), match[1].decode(), bool(match[2])
        )
        self._attach(node)
        self.stack.append(node)

    def end(self, tag: str) -> None:
        node = self.stack.pop()
        at = self.expat.CurrentByteIndex
        node.end_end = node.start_end if node.self_closing else self.raw.index(b">", at) + 1

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text += text

    def comment(self, text: str) -> None:
        self._leaf(b"-->", 4)

    def pi(self, target: str, text: str | None = None) -> None:
        self._leaf(b"?>", 2)

    def _leaf(self, terminator: bytes, skip: int) -> None:
        at = self.expat.CurrentByteIndex
        end = self.raw.index(terminator, at + skip) + len(terminator)
        self._attach(_Node(None, {}, {}, at, end, end_end=end))

    def _attach(self, node: _Node) -> None:
        if self.stack:
            node.parent = self.stack[-1]
            self.stack[-1].children.append(node)
        elif node.tag is not None:
            # comments and PIs outside the root (the xpacket wrapper) stay as they are
            self.root = node

    def close(self) -> _Node | None:
        return self.root


def _parse(raw: bytes, path: Path) -> _Doc:
    """Parse untrusted XMP with defusedxml (no DTD, so no entity expansion); refuse what we cannot keep:
    more than MAX_XMP_BYTES, or elements nested deeper than MAX_XMP_DEPTH (the walks over the tree
    recurse, so a sidecar 5,000 levels deep must never become one)."""
    if len(raw) > MAX_XMP_BYTES:
        raise SidecarError(
            path, f"{len(raw)} bytes is too large for an XMP sidecar; left untouched"
        )
    declared = _DECLARED_ENCODING.match(raw)
    if declared and declared[1].lower() not in (b"utf-8", b"utf8"):
        raise SidecarError(path, f"encoded as {declared[1].decode()}, not UTF-8; left untouched")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SidecarError(path, "not UTF-8 text; left untouched") from None
    recorder = _Recorder(raw)
    parser = DefusedXMLParser(target=recorder, forbid_dtd=True)
    recorder.expat = parser.parser  # defusedxml's pure-Python parser exposes expat's byte offsets
    try:
        parser.feed(raw)
        root = parser.close()
    except _TooDeepError as exc:
        raise SidecarError(
            path, f"{exc}, which is not XMP a photo manager writes; left untouched"
        ) from None
    except (SyntaxError, ValueError) as exc:  # ParseError, DTDForbidden, EntitiesForbidden
        raise SidecarError(
            path, f"not well-formed XML or has a DTD, left untouched ({exc})"
        ) from None
    rdf = root if root.tag == f"{{{RDF}}}RDF" else _child(root, f"{{{RDF}}}RDF")
    if rdf is None:
        raise SidecarError(path, "not XMP (no rdf:RDF element); left untouched")
    newline = "\r\n" if b"\r\n" in raw else "\n"
    return _Doc(raw, root, rdf, newline, _indent_unit(raw, root))


def _walk(node: _Node, skip: Sequence[_Node] = ()) -> Iterator[_Node]:
    if any(node is s for s in skip):
        return
    yield node
    for child in node.children:
        yield from _walk(child, skip)


def _child(node: _Node, tag: str) -> _Node | None:
    return next((c for c in node.children if c.tag == tag), None)


def _line_indent(raw: bytes, pos: int) -> str | None:
    """Spaces before `pos` on its line, or None when something else precedes it there."""
    before = raw[raw.rfind(b"\n", 0, pos) + 1 : pos]
    return None if before.strip(b" \t") else before.decode()


def _indent_unit(raw: bytes, root: _Node) -> str:
    for node in _walk(root):
        outer = _line_indent(raw, node.start)
        for child in node.children:
            inner = _line_indent(raw, child.start)
            if outer is not None and inner and len(inner) > len(outer) and inner.startswith(outer):
                return inner[len(outer) :]
    return " "


# ---- planning edits ----


def _merge_edits(doc: _Doc, values: dict[str, list[str]]) -> tuple[list[_Edit], SidecarChange]:
    change = SidecarChange(path=Path())
    found = {prop.key: _find_property(doc, prop) for prop in KEYWORD_PROPERTIES}
    existing = {
        key: [_text(c) for c in box.children if _is_item(c)]
        for key, (_, box) in found.items()
        if box
    }
    edits: list[_Edit] = []
    created: list[Callable[[str | None], list[str]]] = []
    for prop in KEYWORD_PROPERTIES:
        node, container = found[prop.key]
        if node is not None and container is None:
            change.notes.append(f"{prop.key} is not an rdf:Bag or rdf:Seq; left unchanged")
            continue
        mirrored, unmirrored = _mirror_values(prop.key, existing) if container is None else ([], [])
        if unmirrored and prop.always and values[prop.key]:
            change.notes.append(
                f"new {prop.key} leaves out {', '.join(map(repr, unmirrored))} (a '/' or '|' inside a "
                "keyword would split it); readers that stop at this list will not show them"
            )
        new = [v for v in values[prop.key] if v not in existing.get(prop.key, mirrored)]
        if container is not None and new:
            edits += _append_children(doc, container, _items_markup(container.scope, new))
        elif container is None and prop.always and values[prop.key]:
            created.append(_new_property(doc, prop, mirrored + new, change, edits))
            change.mirrored.update({prop.key: mirrored} if mirrored else {})
        else:
            continue
        change.added.update({prop.key: new} if new else {})
    if created:  # one edit for all new lists, so a self-closing <rdf:Description/> opens once
        edits += _append_children(
            doc, _descriptions(doc)[0], lambda indent: [m for r in created for m in r(indent)]
        )
    if any(
        ACDSEE_CATEGORIES in d.attrib or _child(d, ACDSEE_CATEGORIES) for d in _descriptions(doc)
    ):
        change.notes.append("acdsee:categories left unchanged (ACDSee keeps its own XML inside it)")
    return edits, change


def _mirror_values(key: str, existing: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The user's keywords to copy into a list we create: darktable, digiKam and Immich read only the
    first list they find, so a new lr:hierarchicalSubject or digiKam:TagsList must not hide theirs.
    Returns (copies, keywords left out because the new list's separator is inside them)."""
    sources = {
        "lr:hierarchicalSubject": [("dc:subject", "")],
        "digiKam:TagsList": [
            ("MicrosoftPhoto:LastKeywordXMP", "/"),
            ("lr:hierarchicalSubject", "|"),
            ("mediapro:CatalogSets", "|"),
            ("dc:subject", ""),
        ],
    }.get(key, [])
    separator = "/" if key == "digiKam:TagsList" else "|"
    for source, source_separator in sources:
        if existing.get(source):
            own = [
                v
                for v in existing[source]
                if v.split(source_separator or "|")[0] not in FOREIGN_ROOTS
            ]
            fits = [separator not in v or source_separator == separator for v in own]
            kept = [v for v, ok in zip(own, fits, strict=True) if ok]
            left_out = [v for v, ok in zip(own, fits, strict=True) if not ok]
            copies = [
                v.replace(source_separator, separator) if source_separator else v for v in kept
            ]
            return _extend_unique([], copies), left_out
    return [], []


def _new_property(
    doc: _Doc, prop: KeywordProperty, values: list[str], change: SidecarChange, edits: list[_Edit]
) -> Callable[[str | None], list[str]]:
    """Markup for a keyword list the first Description lacks; declares its namespace there if needed."""
    desc = _descriptions(doc)[0]
    prefix = next((p for p, uri in desc.scope.items() if p and uri in prop.uris), None)
    if prefix is None:  # on the Description, where exiv2 and Adobe's toolkit declare theirs
        stem = prefix = prop.key.split(":")[0]
        n = 1
        while prefix in desc.scope or prefix in change.declared_namespaces:
            prefix, n = f"{stem}{n}", n + 1
        edits.append(_declaration(doc, desc, prefix, prop.uris[0]))
        change.declared_namespaces[prefix] = prop.uris[0]
    change.created_properties.append(prop.key)
    items = _items_markup(desc.scope, values)
    kind, name = _qname(desc.scope, RDF, prop.container), f"{prefix}:{prop.local}"

    def render(indent: str | None) -> list[str]:
        unit, joiner = ("", "") if indent is None else (doc.unit, doc.newline + indent)
        lines = [f"<{name}>", f"{unit}<{kind}>", *(unit + unit + item for item in items(indent))]
        return [joiner.join([*lines, f"{unit}</{kind}>", f"</{name}>"])]

    return render


def _with_description(doc: _Doc, path: Path) -> _Doc:
    """An rdf:RDF without rdf:Description gets an empty one first (re-parsed, to keep offsets simple)."""
    if _descriptions(doc):
        return doc
    desc, about = _qname(doc.rdf.scope, RDF, "Description"), _qname(doc.rdf.scope, RDF, "about")
    # rdf:about needs a prefix: attributes never take the default namespace.
    tag = f'<{desc} {about}="">' if ":" in about else f"<{desc}>"
    edits = _append_children(
        doc,
        doc.rdf,
        lambda indent: [f"{tag}{'' if indent is None else doc.newline + indent}</{desc}>"],
    )
    return _parse(_apply(doc.raw, edits), path)


def _append_children(
    doc: _Doc, parent: _Node, render: Callable[[str | None], list[str]]
) -> list[_Edit]:
    """Edits appending children after the last one, laid out like their siblings: render(indent) gets
    the children's indentation, or None where the siblings sit on one line."""
    if parent.children:
        last = parent.children[-1]
        gap = doc.raw[_previous_end(last) : last.start]
        indent = _line_indent(doc.raw, last.start) if b"\n" in gap else None
        sep = gap.decode() if not gap.strip() else doc.newline + (indent or "")
        return [(last.end_end, last.end_end, "".join(sep + m for m in render(indent)).encode())]
    outer = _line_indent(doc.raw, parent.start) or ""
    indent = outer + doc.unit
    body = "".join(doc.newline + indent + m for m in render(indent))
    if not parent.self_closing:
        return [(parent.start_end, parent.start_end, body.encode())]
    closing = f">{body}{doc.newline}{outer}</{parent.qname}>"  # <x/> becomes <x>...</x>
    return [(parent.start_end - 2, parent.start_end, closing.encode())]


def _items_markup(scope: dict[str, str], values: list[str]) -> Callable[[str | None], list[str]]:
    li = _qname(scope, RDF, "li")
    return lambda indent: [f"<{li}>{_escape(v)}</{li}>" for v in values]


def _declaration(doc: _Doc, node: _Node, prefix: str, uri: str) -> _Edit:
    """Insert xmlns:prefix after the element's last namespace declaration (else its last attribute),
    separated the same way, as exiv2 would have written it."""
    attributes = list(_ATTRIBUTE.finditer(doc.raw, node.start, node.start_end))
    declarations = [a for a in attributes if a[2].startswith(b"xmlns")]
    candidates = declarations or attributes
    after = candidates[-1] if candidates else None
    at = after.end() if after else node.start + 1 + len(node.qname.encode())
    sep = after[1].decode() if after else " "
    return (at, at, f'{sep}xmlns:{prefix}="{_escape(uri)}"'.encode())


def _undeclare_unused(doc: _Doc, declared: dict[str, str], gone: list[_Node]) -> list[_Edit]:
    """Drop the xmlns declarations we added once nothing left in the document uses them."""
    names = [name for n in _walk(doc.root, gone) if n.tag for name in (n.tag, *n.attrib)]
    used = {name[1:].split("}")[0] for name in names if name.startswith("{")}
    edits = []
    for prefix, uri in declared.items():
        value = rb"""\s*=\s*(["'])""" + re.escape(uri.encode()) + rb"\1"
        pattern = re.compile(rb"\s+xmlns:" + re.escape(prefix.encode()) + value)
        found = (pattern.search(doc.raw, d.start, d.start_end) for d in _descriptions(doc))
        match = next((m for m in found if m), None)
        if uri not in used and match:
            edits.append((match.start(), match.end(), b""))
    return edits


def _removal(node: _Node) -> _Edit:
    """Remove a node with the whitespace before it: the inverse of `_append_children`."""
    return (_previous_end(node), node.end_end, b"")


def _previous_end(node: _Node) -> int:
    parent = node.parent
    assert parent is not None  # only elements inside the root are removed or appended after
    i = next(i for i, s in enumerate(parent.children) if s is node)
    return parent.children[i - 1].end_end if i else parent.start_end


def _pick_items(container: _Node, values: list[str]) -> list[_Node]:
    """The rdf:li we added: for each recorded value, the last item equal to it (ours were appended)."""
    picked: list[_Node] = []
    for value in values:
        for item in reversed(container.children):
            if _is_item(item) and _text(item) == value and all(item is not p for p in picked):
                picked.append(item)
                break
    return picked


def _holds_nothing(doc: _Doc) -> bool:
    """Only the empty wrapper is left: x:xmpmeta, rdf:RDF and attribute-less rdf:Description."""
    skeleton = {f"{{{XMP_META}}}xmpmeta", f"{{{RDF}}}RDF", f"{{{RDF}}}Description"}
    allowed = {f"{{{RDF}}}about", f"{{{XMP_META}}}xmptk"}
    return all(
        n.tag in skeleton and set(n.attrib) <= allowed and not n.text.strip()
        for n in _walk(doc.root)
    )


def _apply(raw: bytes, edits: list[_Edit]) -> bytes:
    out, pos = [], 0
    # Stable sort: inserts at one place keep their order, and come before a replacement starting there.
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < pos:
            raise RuntimeError("overlapping XMP edits")  # a bug here, never bad input
        out += [raw[pos:start], text]
        pos = end
    return b"".join([*out, raw[pos:]])


def _descriptions(doc: _Doc) -> list[_Node]:
    return [c for c in doc.rdf.children if c.tag == f"{{{RDF}}}Description"]


def _find_property(doc: _Doc, prop: KeywordProperty) -> tuple[_Node | None, _Node | None]:
    """(property element, or the Description holding it as an attribute; its rdf:Bag/Seq or None)."""
    names = {f"{{{uri}}}{prop.local}" for uri in prop.uris}
    for desc in _descriptions(doc):
        if names & set(desc.attrib):
            return desc, None
        node = next((c for c in desc.children if c.tag in names), None)
        if node is not None:
            kinds = (f"{{{RDF}}}Bag", f"{{{RDF}}}Seq")
            return node, next((c for c in node.children if c.tag in kinds), None)
    return None, None


def _is_item(node: _Node) -> bool:
    return node.tag == f"{{{RDF}}}li" and not any(c.tag for c in node.children)


def _text(node: _Node) -> str:
    return node.text.strip()


def _qname(scope: dict[str, str], uri: str, local: str) -> str:
    prefix = next((p for p, bound in scope.items() if bound == uri and p), None)
    if prefix is None:
        prefix = next(p for p, bound in scope.items() if bound == uri)  # default namespace
    return f"{prefix}:{local}" if prefix else local


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _extend_unique(into: list[str], values: Iterable[str]) -> list[str]:
    into.extend(v for v in dict.fromkeys(values) if v not in into)
    return into
