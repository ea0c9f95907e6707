"""The README is a short front door and the docs/ pages hold the rest: their code runs, their links
lead somewhere, and the tests they name as proof exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README_LIMIT = 10_500  # "at most about 10,000 characters"

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(markdown: str) -> str:
    """The markdown without code blocks and code spans, where a `](` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.M | re.S)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_readme_is_a_front_door_of_at_most_about_10000_characters():
    assert len(text(README)) <= README_LIMIT, "move detail into a docs/ page and link it"


def test_the_readme_keeps_the_two_commands_and_ci_runs_the_test_command():
    readme = text(README)
    assert "bash scripts/setup.sh && siglip-search demo\n" in readme
    assert "bash scripts/setup.sh --dev && python -m pytest -q\n" in readme
    assert "bash scripts/setup.sh --dev && python -m pytest -q\n" in text(REPO / ".ci" / "run")


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in LINK.findall(prose(text(page))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(text(linked)):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme_and_says_who_it_is_for():
    assert PAGES, "docs/ has no pages"
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(prose(text(README)))}
    for page in PAGES:
        assert page in linked, f"README.md does not link {page.name}"
        title, blank, audience = text(page).split("\n")[:3]
        assert title.startswith("# ") and not blank, page.name
        assert audience.startswith("For "), (
            f"{page.name}: the line under the title says who it is for"
        )


def test_the_tests_named_as_proof_exist():
    named = set()
    for page in [README, *PAGES]:
        named |= set(re.findall(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)`", text(page)))
    assert len(named) > 50, "docs/safety.md names the tests behind each guarantee"
    missing = [
        f"{file}::{test}"
        for file, test in sorted(named)
        if not (REPO / "tests" / file).is_file()
        or f"def {test}(" not in text(REPO / "tests" / file)
    ]
    assert not missing, missing


def test_the_model_pages_python_example_runs_and_prints_what_it_documents(monkeypatch):
    """The example as a reader copies it, with the demo model for the hub id and a sample for cat.jpg."""
    block = next(b for b in code_blocks(text(DOCS / "model.md"), "python") if "pipeline(" in b)
    code, _, documented = block.partition("# -> ")
    code = code.replace('"google/siglip-base-patch16-224"', '"data/models/siglip-demo"')
    code = code.replace('"cat.jpg"', '"data/samples/0005_blue-square.jpg"')
    monkeypatch.chdir(REPO)
    *statements, last = ast.parse(code).body
    namespace: dict = {}
    exec(compile(ast.Module(statements, type_ignores=[]), "docs/model.md", "exec"), namespace)
    result = eval(compile(ast.Expression(last.value), "docs/model.md", "eval"), namespace)

    probs = namespace["probs"]
    assert probs.shape == (1, 2) and torch.all((probs > 0) & (probs < 1))
    # The documented line is what the code prints, scores to 2 significant digits: a changed model
    # or pipeline shows up here with the line to paste.
    printed = repr([{"score": float(f"{r['score']:.2g}"), "label": r["label"]} for r in result])
    assert documented.strip() == printed
