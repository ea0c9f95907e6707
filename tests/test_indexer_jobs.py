"""Indexing real photo folders with a tiny real SigLIP: what a user sees after adding, editing,
moving, deleting, breaking and unplugging photos."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import indexer_fixtures
import numpy as np
import pytest
from indexer_fixtures import (
    db_rows,
    draw_photo,
    make_bad_corpus,
    make_photo_folder,
    permissions_are_enforced,
)

from indexer.decode import MISSING_DECODERS
from indexer.errors import FolderNotFoundError, ModelMismatchError
from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.search import Searcher
from indexer.status import library_status
from indexer.vectors import sidecar_path
from siglip_search.cli import main

embedder, other_embedder, library = (
    indexer_fixtures.embedder,
    indexer_fixtures.other_embedder,
    indexer_fixtures.library,
)


class CountingEmbedder:
    """The real embedder, counting the images its image processor preprocesses (= decoded and
    embedded): the indexer's decode workers preprocess with embedder.image_processor."""

    def __init__(self, real) -> None:
        self._real = real
        self.preprocessed: list[int] = []
        self.image_processor = _CountingProcessor(real.image_processor, self.preprocessed)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _CountingProcessor:
    def __init__(self, real, counts: list[int]) -> None:
        self._real, self._counts = real, counts

    def __getattr__(self, name):
        return getattr(self._real, name)

    def preprocess_one(self, image):
        self._counts.append(1)
        return self._real.preprocess_one(image)


def index(library, folders, embedder, **kw):
    kw = {"batch_size": 4, "workers": 2, "progress": False} | kw
    return index_paths(library, [str(f) for f in folders], embedder, **kw)


def by_path(library) -> dict[str, object]:
    return {row.rel_path: row for row in library.store.iter_images()}


def embedding(library, image_id: int) -> bytes:
    return library.store.embeddings_by_ids([image_id])[image_id].tobytes()


def nearest_ids(searcher, queries, k: int) -> list[list[int]]:
    """The ids search shows for each query vector (n, dim), best first."""
    return [[hit.id for hit in searcher.search_vector(query, k=k).hits] for query in queries]


def test_add_modify_delete_move_round_trip(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    files = make_photo_folder(photos, n=10)
    counting = CountingEmbedder(embedder)

    summary = index(library, [photos], counting)
    assert (summary.added, summary.failed, summary.removed) == (10, 0, 0)
    assert len(counting.preprocessed) == 10
    assert re.fullmatch(
        r"added 10, updated 0, moved 0, removed 0, failed 0 \(\d+\.\d s, \d+\.\d img/s; cpu, fp32\)",
        summary.line(),
    )
    rows = by_path(library)
    assert set(rows) == set(files)
    beach = rows["2021/summer/beach.jpg"]
    assert (beach.width, beach.height) == (120, 160)  # stored 160x120, EXIF orientation 6
    assert (beach.taken_at, beach.camera) == ("2021-07-14T18:03:09", "Canon EOS R5")
    assert rows["Ünïcødé 写真 🌅.jpg"].path == str(photos / "Ünïcødé 写真 🌅.jpg")
    # Every photo is its own best match.
    searcher = Searcher(library, embedder)
    for row in rows.values():
        hits = searcher.search_vector(library.store.embeddings_by_ids([row.id])[row.id], k=1).hits
        assert hits[0].id == row.id and hits[0].cosine == pytest.approx(1.0, abs=1e-5)

    # Edit a photo in place: new vector, same row.
    city = rows["city.webp"]
    city_bytes = embedding(library, city.id)
    draw_photo(99).save(files["city.webp"], "WEBP", quality=90)
    summary = index(library, [photos], counting)
    assert (summary.added, summary.updated, summary.moved, summary.removed) == (0, 1, 0, 0)
    assert by_path(library)["city.webp"].id == city.id
    assert embedding(library, city.id) != city_bytes

    # Delete a photo: its row goes, and no search can return it.
    dog = rows["dog.bmp"]
    dog_vector = library.store.embeddings_by_ids([dog.id])[dog.id]
    files["dog.bmp"].unlink()
    summary = index(library, [photos], counting)
    assert (summary.removed, summary.added, summary.updated) == (1, 0, 0)
    assert "dog.bmp" not in by_path(library)
    hits = searcher.search_vector(dog_vector, k=100).hits
    assert len(hits) == 9 and dog.id not in {h.id for h in hits}

    # Move and rename: same row, identical vector bytes, nothing decoded or embedded.
    forest = rows["2021/forest.png"]
    forest_bytes = embedding(library, forest.id)
    (photos / "archive").mkdir()
    files["2021/forest.png"].rename(photos / "archive" / "old forest.png")
    counting.preprocessed.clear()
    summary = index(library, [photos], counting)
    assert (summary.moved, summary.added, summary.removed) == (1, 0, 0)
    assert counting.preprocessed == []
    moved = by_path(library)["archive/old forest.png"]
    assert moved.id == forest.id and embedding(library, moved.id) == forest_bytes

    # Touch a file (mtime changes, content does not): stat updated, not re-embedded.
    os.utime(files["mountain.tif"], ns=(1_000_000_000, 1_000_000_000))
    summary = index(library, [photos], counting)
    assert (summary.updated, summary.added) == (0, 0) and counting.preprocessed == []
    assert by_path(library)["mountain.tif"].mtime_ns == 1_000_000_000

    # A run with nothing to do changes nothing.
    generation = library.store.vectors_generation()
    summary = index(library, [photos], counting)
    assert summary.unchanged == 9 and summary.embedded == 0 and counting.preprocessed == []
    assert library.store.vectors_generation() == generation
    assert json.loads(sidecar_path(library.index_path).read_text())["generation"] == generation


def test_broken_and_odd_files_are_indexed_or_reported_and_the_job_exits_0(
    tmp_path, tiny_checkpoint, capsys, database_url
):
    photos, lib = tmp_path / "photos", tmp_path / "library"
    expect = make_bad_corpus(photos, tmp_path / "outside")
    common = ["--library", str(lib), "--no-progress", "--batch-size", "4"]
    assert main(["index", str(photos), "--model", str(tiny_checkpoint), *common]) == 0
    out = capsys.readouterr().out
    failing = {rel: reason for rel, reason in expect.items() if reason}
    assert re.search(
        rf"added {len(expect) - len(failing)}, updated 0, moved 0, removed 0, failed {len(failing)} \(",
        out,
    )

    assert main(["status", "--library", str(lib), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == len(expect) - len(failing)
    reasons = {f["path"]: f["reason"] for f in report["failed"]}
    assert set(reasons) == {f"{photos}/{rel}" for rel in failing}
    for rel, reason in failing.items():
        assert reason in reasons[f"{photos}/{rel}"], (rel, reasons[f"{photos}/{rel}"])
    # Nothing is passed over silently: ._truncated.jpg, .DS_Store and @eaDir/, #recycle/,
    # .thumbnails/ are counted as hidden or system files and folders.
    passed_over = {"suffixes": {}, "hidden": 5, "excluded": 0}
    assert report["roots"] == [
        {
            "path": str(photos),
            "online": True,
            "images": report["images"],
            "exclude": [],
            "passed_over": passed_over,
        }
    ]
    assert report["last_run"]["status"] == "ok" and report["last_run"]["failed"] == len(failing)
    indexed = {rel for rel, status, _ in db_rows(lib, database_url) if status == "ok"}
    assert indexed == {rel for rel, reason in expect.items() if reason is None}
    assert not any(
        junk in rel
        for rel, _, _ in db_rows(lib, database_url)
        for junk in ("._", "@eaDir", "#recycle", ".thumb", "back/")
    )

    # The text status names each broken file with its reason.
    assert main(["status", "--library", str(lib)]) == 0
    text = capsys.readouterr().out
    assert f"{photos}/truncated.jpg: truncated or corrupt image data" in text
    assert "OFFLINE" not in text and "5 hidden or system" in text

    # Failures are not retried while the file is unchanged, except a permission denied (secret.jpg,
    # made only where permissions apply: not for root), which chmod may have fixed since; once
    # fixed, the file is indexed.
    retried = sum(reason == "permission denied" for reason in failing.values())
    assert main(["index", str(photos), *common]) == 0
    assert f"added 0, updated 0, moved 0, removed 0, failed {retried} (" in capsys.readouterr().out
    assert main(["status", "--library", str(lib), "--json"]) == 0
    assert {
        f["path"]: f["reason"] for f in json.loads(capsys.readouterr().out)["failed"]
    } == reasons
    draw_photo(30).save(photos / "truncated.jpg", "JPEG")
    assert main(["index", str(photos), *common]) == 0
    assert "updated 1" in capsys.readouterr().out
    assert ("truncated.jpg", "ok") in {
        (rel, status) for rel, status, _ in db_rows(lib, database_url)
    }


def test_pixel_cap_option_records_big_images_as_bombs(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_photo(1, (300, 300)).save(photos / "big.png")
    draw_photo(2, (100, 100)).save(photos / "small.png")
    summary = index(library, [photos], embedder, max_pixels=50_000)
    assert (summary.added, summary.failed) == (1, 1)
    [failure] = library.store.failures()
    assert failure.rel_path == "big.png" and "decompression bomb" in failure.error

    # With a higher cap the same, unchanged file is tried again, and indexed.
    again = index(library, [photos], embedder, max_pixels=100_000)
    assert (again.updated, again.failed, again.unchanged) == (1, 0, 1)
    assert library.store.failures() == [] and {r.status for r in by_path(library).values()} == {
        "ok"
    }


def test_another_model_is_refused_and_the_recorded_one_is_reused(
    tmp_path, library, embedder, other_embedder, other_tiny_checkpoint, capsys
):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    index(library, [photos], embedder)
    before = db_rows(library)
    with pytest.raises(
        ModelMismatchError, match=r"was built with model .*they differ in .*weights_sha256"
    ):
        index(library, [photos], other_embedder)
    with pytest.raises(ModelMismatchError, match="Vectors of two models cannot be mixed"):
        library.load_embedder(other_tiny_checkpoint)
    assert db_rows(library) == before

    lib = ["--library", str(library.path), "--no-progress"]
    assert main(["index", str(photos), "--model", str(other_tiny_checkpoint), *lib]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("siglip-search: error: library ")
        and err.count("\n") == 1
        and "Traceback" not in err
    )
    assert main(["index", str(photos), *lib]) == 0  # no --model: the recorded one
    assert "added 0, updated 0" in capsys.readouterr().out
    assert db_rows(library) == before


def test_a_new_library_needs_a_model_and_a_missing_folder_is_an_error(
    tmp_path, library, embedder, capsys
):
    assert main(["index", str(tmp_path), "--library", str(tmp_path / "new")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(FolderNotFoundError, match="does not exist"):
        index(library, [tmp_path / "nope"], embedder)
    if not library.store.on_server:  # on a server, any folder takes this machine's own files
        assert main(["status", "--library", str(tmp_path / "nowhere")]) == 2
        assert "no library at" in capsys.readouterr().err


def test_the_faiss_file_is_rebuilt_when_deleted_corrupt_or_stale(tmp_path, embedder, database_url):
    photos = tmp_path / "photos"
    files = make_photo_folder(photos)
    library = open_library(tmp_path / "library", database=database_url)
    index(library, [photos], embedder)
    queries = np.stack(
        list(library.store.embeddings_by_ids(r.id for r in by_path(library).values()).values())
    )
    expected = nearest_ids(Searcher(library, embedder), queries, k=3)
    saved = library.index_path.read_bytes(), sidecar_path(library.index_path).read_bytes()

    def fresh_search():
        reader = open_library(library.path, create=False, database=database_url)
        try:
            return nearest_ids(Searcher(reader, embedder), queries, k=3)
        finally:
            reader.close()

    library.index_path.unlink()
    assert fresh_search() == expected and library.index_path.is_file()
    library.index_path.write_bytes(b"\0garbage" * 100)
    assert fresh_search() == expected
    assert library.index_path.read_bytes() == saved[0]  # rebuilt identically and saved

    # A stale pair (an old backup put back after a deletion) must not resurrect the photo.
    gone = by_path(library)["cat.gif"].id
    files["cat.gif"].unlink()
    index(library, [photos], embedder)
    library.index_path.write_bytes(saved[0])
    sidecar_path(library.index_path).write_bytes(saved[1])
    assert all(gone not in ids for ids in fresh_search())
    library.close()


def test_a_searcher_that_stays_open_never_returns_a_photo_deleted_meanwhile(
    tmp_path, embedder, database_url
):
    photos = tmp_path / "photos"
    files = make_photo_folder(photos)
    writer = open_library(tmp_path / "library", database=database_url)
    index(writer, [photos], embedder)
    # Another machine, on a server: its own folder, its own FAISS file.
    reader = open_library(
        tmp_path / ("other" if database_url else "library"), create=False, database=database_url
    )
    searcher = Searcher(reader, embedder)
    gone = by_path(reader)["dog.bmp"]
    query = reader.store.embeddings_by_ids([gone.id])[gone.id]
    assert searcher.search_vector(query, k=1).hits[0].id == gone.id
    files["dog.bmp"].unlink()
    index(writer, [photos], embedder)
    assert gone.id not in {h.id for h in searcher.search_vector(query, k=50).hits}
    writer.close()
    reader.close()


def test_a_second_indexer_waits_then_says_who_holds_the_library(
    tmp_path, tiny_checkpoint, capsys, database_url
):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    library = open_library(tmp_path / "library", database=database_url)
    args = [
        "index",
        str(photos),
        "--library",
        str(library.path),
        "--model",
        str(tiny_checkpoint),
        "--no-progress",
    ]
    with lock_library(library):
        started = time.monotonic()
        assert main([*args, "--wait", "0.5"]) == 2
        assert time.monotonic() - started >= 0.5
        err = capsys.readouterr().err
        assert f"siglip-search: error: library {library.name} is being indexed by " in err
        assert f"pid {os.getpid()}" in err
        # readers are not locked out
        assert main(["status", "--library", str(library.path), "--json"]) == 0
        capsys.readouterr()
    assert main(args) == 0
    library.close()


def test_an_unplugged_root_is_offline_and_keeps_its_photos(tmp_path, library, embedder, capsys):
    photos, away = tmp_path / "photos", tmp_path / "elsewhere"
    make_photo_folder(photos)
    index(library, [photos], embedder)
    before = db_rows(library)

    photos.rename(away)  # the disk is unmounted
    summary = index(library, [], embedder)  # all registered roots
    assert summary.offline_roots == [str(photos)] and summary.removed == 0
    assert db_rows(library) == before
    assert main(["index", str(photos), "--library", str(library.path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"root {photos} is offline" in captured.err and "removed 0" in captured.out
    report = library_status(library)
    assert [(r.path, r.online, r.images) for r in report.roots] == [(str(photos), False, 8)]
    assert report.images == 8

    photos.mkdir()  # an empty mount point looks the same: nothing is deleted
    assert index(library, [photos], embedder).offline_roots == [str(photos)]
    assert db_rows(library) == before

    photos.rmdir()
    away.rename(photos)  # plugged back in: online, nothing re-embedded
    summary = index(library, [photos], embedder)
    assert (summary.added, summary.updated, summary.removed, summary.offline_roots) == (0, 0, 0, [])
    assert library_status(library).roots[0].online is True


def test_a_parent_folder_absorbs_a_registered_subfolder_without_re_embedding(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    files = make_photo_folder(photos)
    first = index(library, [photos / "2021"], embedder)
    assert first.added == 2 and [r.path for r in library.store.roots()] == [str(photos / "2021")]
    ids = {rel: row.id for rel, row in by_path(library).items()}

    summary = index(library, [photos], embedder)
    assert (summary.added, summary.moved, summary.removed) == (len(files) - 2, 0, 0)
    assert [r.path for r in library.store.roots()] == [str(photos)]
    rows = by_path(library)
    assert rows["2021/forest.png"].id == ids["forest.png"]
    assert rows["2021/summer/beach.jpg"].id == ids["summer/beach.jpg"]

    # Indexing a folder inside a root only looks inside that folder.
    files["cat.gif"].unlink()
    summary = index(library, [photos / "2021", photos / "2021" / "summer"], embedder)
    assert (summary.removed, summary.unchanged) == (0, 2)
    assert index(library, [photos], embedder).removed == 1


def test_a_parent_folder_never_takes_an_offline_or_hidden_subfolder_root_as_removed(
    tmp_path, library, embedder
):
    mnt = tmp_path / "mnt"
    usb, archive = mnt / "usb" / "photos", mnt / ".archive"
    make_photo_folder(usb)
    draw_photo(7).save(mnt / "top.png")
    archive.mkdir()
    draw_photo(8).save(archive / "old.png")
    on_usb = index(library, [usb], embedder).added
    assert index(library, [archive], embedder).added == 1
    usb.rename(tmp_path / "unplugged")  # the disk is unplugged: its root goes offline

    summary = index(library, [mnt], embedder)

    # top.png; nothing of the disk or the archive lost
    assert (summary.added, summary.removed) == (
        1,
        0,
    )
    assert sorted(r.path for r in library.store.roots()) == sorted(map(str, (mnt, usb, archive)))
    assert len(by_path(library)) == on_usb + 2
    (tmp_path / "unplugged").rename(usb)  # plugged back in: found in its own root, not twice
    again = index(library, [], embedder)
    assert (again.added, again.removed, again.offline_roots) == (0, 0, [])
    assert len(by_path(library)) == on_usb + 2
    assert index(library, [usb], embedder).unchanged == on_usb


def test_a_renamed_photo_folder_keeps_its_vectors_and_is_not_listed_twice(
    tmp_path, library, embedder
):
    pictures = tmp_path / "Pictures"
    files = make_photo_folder(pictures)
    index(library, [pictures], embedder)
    ids = {row.id for row in by_path(library).values()}
    photos = pictures.rename(tmp_path / "Photos")

    summary = index(library, [photos], embedder)

    assert (summary.added, summary.moved, summary.removed, summary.embedded) == (
        0,
        len(files),
        0,
        0,
    )
    rows = list(library.store.iter_images())
    # same rows: vectors and tags
    assert {row.id for row in rows} == ids and len(rows) == len(files)
    assert {row.root_path for row in rows} == {str(photos)}
    # the old, empty, gone root is dropped
    assert [r.path for r in library.store.roots()] == [str(photos)]


def test_ctrl_c_keeps_the_committed_batches_and_marks_the_run_interrupted(
    tmp_path, library, embedder
):
    photos = tmp_path / "photos"
    make_photo_folder(photos)

    def stop_after_first_batch(done, total):
        if done:  # called with 0 before the first batch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index(library, [photos], embedder, batch_size=2, on_progress=stop_after_first_batch)

    run = library_status(library).last_run
    assert run.status == "interrupted" and run.finished_at is not None
    assert run.added == len(by_path(library)) == 2  # the committed batch stays
    assert index(library, [photos], embedder).unchanged == 2


def test_a_photo_in_two_places_is_stored_twice_and_a_move_takes_one(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_photo(1).save(photos / "a.png")
    shutil.copy2(photos / "a.png", photos / "copy.png")
    assert index(library, [photos], embedder).added == 2
    (photos / "a.png").rename(photos / "b.png")
    summary = index(library, [photos], embedder)
    assert (summary.moved, summary.added, summary.removed) == (1, 0, 0)
    assert sorted(by_path(library)) == ["b.png", "copy.png"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_log(
    tmp_path, library, embedder, monkeypatch
):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    (photos / "bad.jpg").write_text("not a photo")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    index(library, [photos], embedder, progress=True)
    bar = terminal.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    # The bar says where the model runs: --device auto is the CPU on a machine without a GPU.
    assert re.search(r"indexing on cpu, fp32: 100%.* 9/9 .*img/s.*failed=1", bar), bar

    piped = io.StringIO()  # not a terminal (a cron log): lines, no carriage returns
    monkeypatch.setattr("sys.stderr", piped)
    draw_photo(50).save(photos / "new.png")
    assert index(library, [photos], embedder, progress=True).added == 1
    assert "\r" not in piped.getvalue()
    assert re.search(r"1/1 imgs \(100 %\), [\d.]+ imgs/s", piped.getvalue()), piped.getvalue()


def test_indexing_with_no_folder_needs_registered_roots(library, embedder):
    with pytest.raises(FolderNotFoundError, match="no folders are registered"):
        index(library, [], embedder)


def test_the_same_model_copied_elsewhere_is_accepted_and_remembered(
    tmp_path, library, embedder, tiny_checkpoint
):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    index(library, [photos], embedder)
    moved_model = shutil.copytree(tiny_checkpoint, tmp_path / "models" / "tiny")
    copy = library.load_embedder(moved_model)  # same weights and preprocessing: not a mismatch
    assert index(library, [photos], copy).unchanged == 8
    assert library.model_identity()["model_id"] == str(moved_model)
    assert library.load_embedder().model_id == str(moved_model)


def test_an_unreadable_folder_keeps_its_photos(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    index(library, [photos], embedder)
    if not permissions_are_enforced(tmp_path):
        pytest.skip("root can list every folder")
    os.chmod(photos / "2021", 0)
    try:
        summary = index(library, [photos], embedder)
    finally:
        os.chmod(photos / "2021", 0o755)
    assert summary.removed == 0 and summary.unreadable_dirs == [str(photos / "2021")]
    assert len(by_path(library)) == 8


def test_forgetting_a_disk_that_is_gone_for_good_removes_its_photos_from_search_only(
    tmp_path, library, embedder, capsys, database_url
):
    disk, home = tmp_path / "usb", tmp_path / "home"
    make_photo_folder(disk)
    draw_photo(9).save(home.mkdir() or home / "kept.png")
    index(library, [disk, home], embedder)
    files = sorted(p.relative_to(disk) for p in disk.rglob("*") if p.is_file())
    gone = disk.rename(tmp_path / "recycled")  # the disk is gone: its root stays offline
    assert index(library, [], embedder).offline_roots == [str(disk)]
    lib = ["--library", str(library.path)]
    library.close()

    assert main(["forget", str(tmp_path / "nowhere"), *lib]) == 2
    assert "is not a root of this library" in capsys.readouterr().err
    assert main(["forget", str(disk), *lib]) == 0

    assert f"forgot {disk}: " in capsys.readouterr().out
    with open_library(library.path, create=False, database=database_url) as reopened:
        assert [r.path for r in reopened.store.roots()] == [str(home)]
        assert [row.rel_path for row in reopened.store.iter_images()] == ["kept.png"]
        assert len(reopened.vector_index()) == 1
    # photos untouched
    assert sorted(p.relative_to(gone) for p in gone.rglob("*") if p.is_file()) == files


# A Python without pillow-heif and rawpy (installed with --no-deps, or a distribution's packages):
# the child hides both before anything imports them.
_WITHOUT_DECODERS = """
import sys
sys.modules["pillow_heif"] = sys.modules["rawpy"] = None
from siglip_search.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_photos_nothing_here_can_decode_are_counted_and_the_remedy_named(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    for name in ("IMG_1.HEIC", "IMG_2.heic"):
        # an iPhone photo, to this Python unreadable
        (photos / name).write_bytes(b"\0\0\0\x18ftypheic")
    (photos / "IMG_3.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00")

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_DECODERS,
            "index",
            str(photos),
            "--library",
            str(tmp_path / "lib"),
            "--model",
            str(tiny_checkpoint),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert child.returncode == 0, child.stderr
    assert (
        "2 .heic photos skipped: this Python cannot decode them (pip install pillow-heif)"
        in child.stderr
    )
    assert (
        "1 .cr2 photos skipped: this Python cannot decode them (pip install rawpy)" in child.stderr
    )
    assert MISSING_DECODERS == {}  # this Python, with the dependencies installed, decodes them all


def test_search_in_a_library_without_a_model_says_to_index_first(tmp_path, capsys, database_url):
    lib = tmp_path / "lib"
    open_library(lib, database=database_url).close()
    assert main(["search", "a dog", "--library", str(lib)]) == 2
    err = capsys.readouterr().err
    assert "no model yet; index photos into it first: siglip-search index FOLDER" in err


def test_system_folders_are_refused_as_photo_folders(library, embedder):
    with pytest.raises(FolderNotFoundError, match="system folder"):
        index(library, ["/proc/self"], embedder)
    assert library.store.roots() == []


def test_a_photo_moved_out_of_a_folder_indexed_alone_keeps_its_vector_and_tags(
    tmp_path, library, embedder
):
    """Indexing only `2021/` after filing a photo from it into another folder of the same root: the
    photo is not removed (its vector and tags would go) but followed, and the whole root's next run
    finds nothing to embed."""
    photos = tmp_path / "photos"
    make_photo_folder(photos)
    index(library, [photos], embedder)
    before = by_path(library)["2021/forest.png"]
    library.store.replace_machine_tags({before.id: [("scene|forest", 0.9)]}, "model", "v1")
    (photos / "archive").mkdir()
    (photos / "2021" / "forest.png").rename(photos / "archive" / "forest.png")

    summary = index(library, [photos / "2021"], embedder)

    assert (summary.moved, summary.removed, summary.added) == (1, 0, 0)
    after = by_path(library)["archive/forest.png"]
    assert after.id == before.id and embedding(library, after.id) == embedding(library, before.id)
    assert "2021/forest.png" not in by_path(library)
    assert [(t.path, t.tag) for t in library.store.iter_tags()] == [
        (str(photos / "archive" / "forest.png"), "scene|forest")
    ]
    again = index(library, [photos], embedder)
    assert (again.added, again.moved, again.removed) == (0, 0, 0)
