"""Folders the indexer can list but not enter (read without execute permission, paths past
PATH_MAX): their photos stay in the library, with their vectors, ids and tags."""

from __future__ import annotations

import json
import os
import re
import shutil

from indexer_fixtures import make_photo_folder, run_cli_where_permissions_apply

from indexer.jobs import index_paths
from indexer.library import open_library
from siglip_search.cli import main


def _rows(lib) -> dict[str, tuple[int, str, bytes | None]]:
    with open_library(lib) as library:
        return {
            r.rel_path: (
                r.id,
                r.status,
                library.store.embeddings_by_ids([r.id]).get(r.id, b"").tobytes(),
            )
            for status in ("ok", "failed")
            for r in library.store.iter_images(status)
        }


def test_a_folder_readable_but_not_searchable_keeps_its_photos_vectors_and_tags(
    tmp_path, tiny_checkpoint, capsys
):
    # What `chmod -R 644` or a FAT/exFAT/CIFS mount with a wrong dmask leaves: folders whose names
    # can be listed but whose entries cannot be looked up or opened.
    photos, lib = tmp_path / "photos", tmp_path / "library"
    make_photo_folder(photos)
    common = ["--library", str(lib), "--no-progress", "--batch-size", "4"]
    assert main(["index", str(photos), "--model", str(tiny_checkpoint), *common]) == 0
    assert "added 8, updated 0, moved 0, removed 0, failed 0" in capsys.readouterr().out
    with open_library(lib) as library:
        library.store.replace_machine_tags(
            {r.id: [("photo", 0.9)] for r in library.store.iter_images()}, "m", "v"
        )
    before = _rows(lib)
    index = ["index", str(photos), *common]
    try:
        results = run_cli_where_permissions_apply(
            tmp_path,
            [
                ["chmod", str(photos), "644"],
                index,
                ["chmod", str(photos), "755"],  # the whole root
                ["chmod", str(photos / "2021"), "644"],
                index,
                ["status", "--json", "--library", str(lib)],
            ],
            probe="read",
        )
    finally:
        os.chmod(photos, 0o755)
        os.chmod(photos / "2021", 0o755)
    whole_root, subfolder, status = results
    for run, folder in ((whole_root, photos), (subfolder, photos / "2021")):
        assert run["rc"] == 0, run["stderr"]
        assert "added 0, updated 0, moved 0, removed 0, failed 0" in run["stdout"]
        assert f"cannot list folder {folder}; its images are kept" in run["stderr"]
    report = json.loads(status["stdout"])
    assert (report["images"], report["failed_count"], report["tags"]) == (8, 0, 8)

    # Permissions fixed: nothing is embedded again, every photo keeps its id, vector and tags.
    assert main(["index", str(photos), *common]) == 0
    assert "added 0, updated 0, moved 0, removed 0, failed 0" in capsys.readouterr().out
    assert _rows(lib) == before
    with open_library(lib) as library:
        assert library.store.counts().tags == 8


def test_a_folder_past_path_max_is_reported_not_silently_dropped(
    tmp_path, library, embedder, capsys
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, n=1)
    fd = os.open(photos, os.O_RDONLY)
    try:  # folders 200 bytes a name, made relative to their parent: deeper than PATH_MAX (4096)
        for _ in range(4400 // 201):
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    try:
        summary = index_paths(
            library, [str(photos)], embedder, batch_size=4, workers=2, progress=False
        )
    finally:
        shutil.rmtree(photos / ("d" * 200))
    [deep] = summary.unreadable_dirs
    assert len(os.fsencode(deep)) >= 4096 > len(os.fsencode(os.path.dirname(deep)))
    assert re.fullmatch(re.escape(str(photos)) + r"(/d{200})+", deep)
    assert (summary.added, summary.removed, summary.failed) == (8, 0, 0)
