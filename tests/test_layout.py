"""Imports flow ui -> indexer -> siglip_search, never back; transformers is never imported by the product."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "siglip_search": {"indexer", "ui", "gradio", "sqlalchemy", "faiss", "transformers"},
    "indexer": {"ui", "gradio", "transformers"},
    "ui": {"transformers"},
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        str(f.relative_to(REPO)): sorted(_imported_roots(f) & FORBIDDEN[package]) for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}
