"""The data that ships with siglip-search: the demo model, its sample photos, the evaluation set and
the tag vocabulary, named once for every command and the web app.

They live in the repository's top-level `data/` folder. An installed wheel carries the same files
inside this package, as `siglip_search/_data` (pyproject.toml maps that package onto `data/`); a
checkout (an editable install, or the source tree on PYTHONPATH) has no such folder and uses its own
`data/`, so code and data always come from the same tree.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# a wheel installs plain files: a real folder
_INSTALLED = Path(str(files("siglip_search") / "_data"))
DATA_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).resolve().parents[1] / "data"

DEMO_MODEL = DATA_DIR / "models" / "siglip-demo"  # a tiny SigLIP trained on synthetic shapes
SAMPLES = DATA_DIR / "samples"  # the demo's photos, with their captions.jsonl
EVAL_SET = DATA_DIR / "eval"  # held-out photos and captions for `siglip-search eval`
VOCABULARY = DATA_DIR / "tags" / "vocabulary.txt"  # the default tags of `siglip-search tag`
