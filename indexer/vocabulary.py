"""Tag vocabularies: parse the line format of data/tags/vocabulary.txt (or a plain list); version it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from siglip_search.resources import VOCABULARY

from .errors import VocabularyError

DEFAULT_VOCABULARY_PATH = VOCABULARY
_THRESHOLD = re.compile(r"@\s*([^\s@\"]+)\s*$")  # `dog @ 0.3` or `dog@0.3`, at the end of the line
# Invisible characters an editor may leave on a line that looks blank (zero-width space, BOM...).
_BLANK = re.compile(r"^[\s\u200b-\u200d\u2060\ufeff]*$")


@dataclass(frozen=True)
class VocabularyTag:
    """One tag: `name` is its path (`animal|dog`); `terms` go into prompt templates (the last path
    component first), `prompts` are used as written; `threshold` overrides the default one."""

    name: str
    terms: tuple[str, ...]
    prompts: tuple[str, ...] = ()
    threshold: float | None = None

    @property
    def leaf(self) -> str:
        return self.name.rsplit("|", 1)[-1]


@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[VocabularyTag, ...]
    source: str = "<text>"

    @cached_property
    def version(self) -> str:
        """Hash of the normalised content: comments, spacing and order do not change it."""
        canonical = sorted(
            [t.name, list(t.terms), sorted(t.prompts), t.threshold] for t in self.tags
        )
        return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.tags)

    def names(self) -> list[str]:
        return [t.name for t in self.tags]


def load_vocabulary(path: str | os.PathLike | None = None) -> Vocabulary:
    """The vocabulary in `path` (default: the bundled data/tags/vocabulary.txt)."""
    path = Path(path).expanduser() if path is not None else DEFAULT_VOCABULARY_PATH
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows Notepad starts UTF-8 with a BOM
    except FileNotFoundError:
        raise VocabularyError(f"vocabulary file {path} does not exist") from None
    except UnicodeDecodeError:
        raise VocabularyError(f"vocabulary file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise VocabularyError(f"cannot read vocabulary file {path}: {exc.strerror}") from None
    return parse_vocabulary(text, str(path))


def parse_vocabulary(text: str, source: str = "<text>") -> Vocabulary:
    """Lines `category|tag [= synonym; "prompt"; ...] [@ threshold]`; `#` comments; blank lines."""
    tags: list[VocabularyTag] = []
    # casefolded name -> (name, line): `Dog` and `dog` are one keyword to photo managers
    seen: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = line.strip()
        if _BLANK.match(line) or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        tag = _parse_line(line, where)
        key = tag.name.casefold()
        if key in seen:
            name, first = seen[key]
            same = "" if name == tag.name else f" as {name!r}"
            raise VocabularyError(
                f"{where}: tag {tag.name!r} is already defined{same} on line {first}"
            )
        seen[key] = (tag.name, number)
        tags.append(tag)
    if not tags:
        raise VocabularyError(f"{source} has no tags; write one tag a line")
    return Vocabulary(tuple(tags), source)


def _parse_line(line: str, where: str) -> VocabularyTag:
    threshold = None
    match = _THRESHOLD.search(line)
    if match:
        threshold = _threshold(match[1], where)
        line = line[: match.start()].strip()
        if _THRESHOLD.search(line):
            raise VocabularyError(f"{where}: more than one '@ threshold'; give the tag one")
    name, _, rest = line.partition("=")
    if not name.strip():
        raise VocabularyError(
            f"{where}: the tag name is missing; write it first, like animal|dog = puppy"
        )
    name = _tag_name(name, where)
    terms, prompts = [name.rsplit("|", 1)[-1]], []
    for item in (part.strip() for part in rest.split(";")) if rest.strip() else ():
        if not item:
            raise VocabularyError(f"{where}: an empty synonym (two ';' in a row?)")
        if item.startswith('"'):
            if len(item) < 3 or not item.endswith('"'):
                raise VocabularyError(f'{where}: a prompt must be one "quoted text", got {item}')
            prompts.append(item[1:-1].strip())
        elif '"' in item:
            raise VocabularyError(f"{where}: put the whole prompt in quotes: {item}")
        elif "@" in item:
            raise VocabularyError(
                f"{where}: '@' starts the threshold, which goes at the end of the line: {item}"
            )
        elif item not in terms:
            terms.append(item)
    return VocabularyTag(name, tuple(terms), tuple(prompts), threshold)


def _tag_name(text: str, where: str) -> str:
    parts = [p.strip() for p in text.split("|")]
    if not all(parts):
        raise VocabularyError(
            f"{where}: tag {text.strip()!r} has an empty level; write it like animal|dog"
        )
    for part in parts:
        if "/" in part or '"' in part or any(ord(c) < 32 for c in part):
            raise VocabularyError(
                f"{where}: tag level {part!r} may not contain '/', quotes or control characters"
            )
        if "," in part:  # exiftool (-sep ", ") and photo managers' keyword fields split at commas
            raise VocabularyError(
                f"{where}: tag {text.strip()!r} may not contain ','; keywords are split at commas"
            )
        if "@" in part:
            raise VocabularyError(
                f"{where}: tag {text.strip()!r} may not contain '@', which starts a threshold"
            )
    return "|".join(parts)


def _threshold(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise VocabularyError(f"{where}: threshold {text} must be a probability between 0 and 1")
    return value
