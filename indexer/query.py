"""Combined search queries in the spirit of rclip: `"beach" + 0.5 ./ref.jpg - "people"` -> weighted terms.

Grammar (terms joined by `+` or `-`; two terms side by side without an operator are added):

    query  := [sign] term (sign term | term)*
    sign   := "+" | "-"                       (a token of its own)
    term   := [weight] body
    weight := NUMBER ":"  (glued: `2:cat`, `0.5:./x.jpg`, `2:"big cat"`)
            | NUMBER      (then a quoted text, an image path or `#id`: `0.5 ./x.jpg`)
    body   := "quoted text" | #ID | image path | bare words

Bare words run together into one text until the next operator or quoted term (`beach sunset` is
one text). A bare number before bare words is part of the text (`2 dogs`), not a weight, and so is
a ratio or a time (`16:9 screen`, `10:30`: a digit after the colon). Only double quotes quote:
apostrophes are text (`rock 'n' roll`, `the '80s`). A word is an image path when it starts with
`/`, `./`, `../` or `~`, or ends with an image extension; it must name an existing file (a path
with spaces cannot be a query word: pass it with `--image`). `#123` is the indexed image with id 123.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .decode import IMAGE_EXTENSIONS
from .errors import QueryError

TermKind = Literal["text", "image", "image_id"]
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_GLUED_WEIGHT = re.compile(rf"^({_NUMBER}):(?!\d)(.*)$", re.DOTALL)  # not `16:9`, `10:30`
_BARE_NUMBER = re.compile(rf"^{_NUMBER}$")
_IMAGE_ID = re.compile(r"^#(\d+)$")
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_QUOTES = '"'  # apostrophes are text: `rock 'n' roll`, `the '80s`


@dataclass(frozen=True)
class QueryTerm:
    """One part of a query. `weight` is negative for subtracted terms."""

    kind: TermKind
    value: str | Path | int  # text, absolute image path, or image id
    weight: float = 1.0


@dataclass(frozen=True)
class _Token:
    kind: Literal["op", "quoted", "word", "weight"]
    text: str


def parse_query(query: str, base_dir: str | os.PathLike | None = None) -> list[QueryTerm]:
    """Terms of a combined query; image paths are resolved against `base_dir` (default: cwd)."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty; type some words, an image path or #ID")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    tokens = _tokenize(query)
    terms: list[QueryTerm] = []
    sign, pending_op, i = 1.0, False, 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "op":
            if pending_op:
                raise QueryError(f"two operators in a row near {token.text!r} in {query!r}")
            sign, pending_op, i = (1.0 if token.text == "+" else -1.0), True, i + 1
            continue
        term, i = _read_term(tokens, i, base, query)
        terms.append(QueryTerm(term.kind, term.value, sign * term.weight))
        sign, pending_op = 1.0, False
    if pending_op:
        raise QueryError(f"the query ends with an operator; add a term after it: {query!r}")
    if not any(t.weight > 0 for t in terms):
        raise QueryError(f"the query needs at least one term with a positive weight: {query!r}")
    return terms


def file_terms(query: str) -> list[str]:
    """The words of `query` that parse_query would open as image files (not `#ID`s, not quoted
    text), read with the parser's own tokenizer: what a server should refuse before parsing a query
    typed on a web page. QueryError for a query the tokenizer refuses (an unterminated quote), with
    the message parse_query would give."""
    return [t.text for t in _tokenize(query) if t.kind == "word" and _looks_like_path(t.text)]


def _read_term(tokens: list[_Token], i: int, base: Path, query: str) -> tuple[QueryTerm, int]:
    """One term starting at tokens[i]; returns it and the index after it."""
    weight, token = 1.0, tokens[i]
    if token.kind == "weight":
        weight, i = _weight(token.text, query), i + 1
        if i >= len(tokens) or tokens[i].kind == "op":
            raise QueryError(f"weight {token.text}: has no term after it in {query!r}")
    elif token.kind == "word" and _BARE_NUMBER.match(token.text) and i + 1 < len(tokens):
        following = tokens[i + 1]
        if following.kind == "quoted" or (
            following.kind == "word" and _is_non_text(following.text)
        ):
            weight, i = _weight(token.text, query), i + 1
    token = tokens[i]
    if token.kind == "weight":
        raise QueryError(f"two weights in a row near {token.text}: in {query!r}")
    if token.kind == "quoted":
        if not token.text.strip():
            raise QueryError(f"an empty quoted text in {query!r}")
        return QueryTerm("text", token.text.strip(), weight), i + 1
    if _is_non_text(token.text):
        return _image_term(token.text, base, weight), i + 1
    words = []
    while i < len(tokens) and tokens[i].kind == "word" and not _is_non_text(tokens[i].text):
        words.append(tokens[i].text)
        i += 1
    return QueryTerm("text", " ".join(words), weight), i


def _weight(text: str, query: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value == 0:
        raise QueryError(f"weight {text} must be a positive number in {query!r}")
    return value


def _is_non_text(word: str) -> bool:
    return bool(_IMAGE_ID.match(word)) or _looks_like_path(word)


def _looks_like_path(word: str) -> bool:
    return word.startswith(_PATH_PREFIXES) or os.path.splitext(word)[1].lower() in IMAGE_EXTENSIONS


def _image_term(word: str, base: Path, weight: float) -> QueryTerm:
    match = _IMAGE_ID.match(word)
    if match:
        return QueryTerm("image_id", int(match[1]), weight)
    path = Path(word).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise QueryError(f"image {word} {what} ({path}); quote it to search for it as text")
    return QueryTerm("image", path, weight)


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in _QUOTES:
            end = query.find(ch, i + 1)
            if end < 0:
                raise QueryError(f"unterminated quote {ch} in {query!r}")
            tokens.append(_Token("quoted", query[i + 1 : end]))
            i = end + 1
        elif ch in "+-" and (i + 1 == n or query[i + 1].isspace() or query[i + 1] in _QUOTES):
            tokens.append(_Token("op", ch))
            i += 1
        else:
            end = i
            while end < n and not query[end].isspace():
                end += 1
            word = query[i:end]
            glued = _GLUED_WEIGHT.match(word)
            if glued:  # `2:cat`, or `2:"big cat"` whose quoted text the next step reads
                tokens.append(_Token("weight", glued[1]))
                rest = glued[2]
                if rest[:1] in _QUOTES:
                    end = i + len(glued[1]) + 1
                elif rest:
                    tokens.append(_Token("word", rest))
            else:
                tokens.append(_Token("word", word))
            i = end
    return tokens
