"""Imports flow ui -> indexer -> siglip_search, never back; transformers is never imported by the product."""

from __future__ import annotations

from pathlib import Path

import pytest
from layering import imported_roots

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "siglip_search": {"indexer", "ui", "gradio", "sqlalchemy", "faiss", "transformers"},
    "indexer": {"ui", "gradio", "transformers"},
    "ui": {"transformers"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        str(f.relative_to(REPO)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}
