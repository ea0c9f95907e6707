"""Libraries to search, tag and de-duplicate: the trained demo model over the sample photos, and
tiny-model libraries of generated photos with known folders and dates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from indexer_fixtures import draw_photo, save_jpeg_with_exif

from indexer.jobs import index_paths
from indexer.library import lock_library, open_library

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "data" / "models" / "siglip-demo"
SAMPLES = REPO / "data" / "samples"
DEMO_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
# Meaning tests need the trained demo model; until it lands they are skipped, afterwards they run.
needs_demo = pytest.mark.skipif(
    not (DEMO_MODEL / "model.safetensors").is_file() or not (SAMPLES / "captions.jsonl").is_file(),
    reason="the demo model (data/models/siglip-demo) and samples (data/samples) are not built yet",
)


def index_folder(library, folder: Path, embedder) -> None:
    with lock_library(library):
        index_paths(library, [str(folder)], embedder, batch_size=16, workers=2, progress=False)


def sample_colours() -> dict[str, set[str]]:
    """Sample file name -> the colours of the objects in it (from captions.jsonl)."""
    records = [
        json.loads(line)
        for line in (SAMPLES / "captions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {r["file"]: {o["colour"] for o in r["objects"]} for r in records}


@pytest.fixture(scope="session")
def demo_embedder():
    from siglip_search.embedder import Embedder

    return Embedder.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory, demo_embedder, session_database_url):
    """The sample photos indexed with the demo model (the photos are only read), once per session
    in an SQLite library and once on the test server."""
    library = open_library(tmp_path_factory.mktemp("demo-library"), database=session_database_url)
    index_folder(library, SAMPLES, demo_embedder)
    yield library
    library.close()


def make_dated_folders(root: Path) -> dict[str, Path]:
    """JPEGs with EXIF DateTimeOriginal in year folders, plus undated PNGs. {rel_path: path}."""
    files: dict[str, Path] = {}
    dates = {
        "2019/new-year.jpg": "2019:01:01 00:10:00",
        "2019/summer.jpg": "2019:07:20 12:00:00",
        "2021/spring.jpg": "2021:04:02 09:30:00",
        "2021/summer/beach.jpg": "2021:07:14 18:03:09",
        "2021/summer/late.jpg": "2021:07:14 23:59:59",
        "2021/autumn.jpg": "2021:10:31 17:00:00",
        "2023/winter.jpg": "2023:12:24 20:00:00",
    }
    for seed, (rel, taken) in enumerate(dates.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        files[rel] = save_jpeg_with_exif(path, draw_photo(seed), taken=taken)
    for seed in range(3):
        rel = f"undated/scan_{seed}.png"
        (root / "undated").mkdir(parents=True, exist_ok=True)
        draw_photo(50 + seed).save(root / rel)
        files[rel] = root / rel
    return files


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


class CountingEmbedder:
    """The real embedder, counting text-tower calls (`text_calls`) and the texts they embedded (`texts`)."""

    def __init__(self, real) -> None:
        self._real, self.text_calls, self.texts = real, 0, 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def embed_texts(self, texts):
        self.text_calls += 1
        self.texts += len(texts)
        return self._real.embed_texts(texts)
