"""XMP export and undo in a shared photo folder, as someone hostile (or careless) leaves it: links
planted where sidecars go, a sidecar nested 5,000 levels deep, the temp files of a killed export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from indexer.export import export_xmp, undo_xmp
from indexer.export.xmp import NEW_SIDECAR
from siglip_search.cli import main

OUTSIDE_XMP = NEW_SIDECAR.replace(b"<rdf:Description", b"<!-- someone else's --><rdf:Description")


def photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (200, 40, 40)).save(path, "JPEG")
    return path


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`: file bytes, or where a link points."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                found[rel] = path.read_bytes()
    return found


def index_and_tag(photos: Path, library: Path, checkpoint: Path) -> None:
    vocabulary = library.parent / "tags.txt"
    vocabulary.write_text("animal|dog\nscene|beach\n")
    common = ["--library", str(library), "--no-progress"]
    assert main(["index", str(photos), "--model", str(checkpoint), *common]) == 0
    # Every tag passes a threshold this low: every photo gets both.
    assert main(["tag", "--vocabulary", str(vocabulary), "--threshold", "1e-9", *common]) == 0


def test_planted_sidecar_links_are_skipped_named_and_never_written_through(
    tmp_path, tiny_checkpoint, capsys
):
    photos, outside, library = tmp_path / "photos", tmp_path / "outside", tmp_path / "library"
    for name in ("a.jpg", "b.jpg", "album/c.jpg", "d.jpg"):
        photo(photos / name)
    index_and_tag(photos, library, tiny_checkpoint)
    outside.mkdir()
    (outside / "victim.xmp").write_bytes(OUTSIDE_XMP)
    os.symlink(outside / "victim.xmp", photos / "a.jpg.xmp")  # a link to someone's XMP file
    os.symlink(outside / "created.xmp", photos / "b.jpg.xmp")  # dangling: names a new file
    os.rename(photos / "album", outside / "album")  # a folder link between the root and a sidecar
    os.symlink(outside / "album", photos / "album")
    before = tree(outside)
    capsys.readouterr()

    assert main(["export", "--format", "xmp", "--library", str(library)]) == 1

    out, err = capsys.readouterr()
    assert tree(outside) == before  # nothing created, written or renamed outside the photo folder
    assert (
        out.splitlines()[0].startswith(f"{photos / 'd.jpg.xmp'}\t") and len(out.splitlines()) == 1
    )
    for refused in ("a.jpg.xmp", "b.jpg.xmp", "album"):
        assert f"skipped {photos / refused}: a symbolic link; not followed" in err
    assert os.readlink(photos / "a.jpg.xmp") == str(outside / "victim.xmp")

    assert main(["export", "--undo", "--library", str(library)]) == 0
    assert not (photos / "d.jpg.xmp").exists()  # created by the export, deleted by undo
    assert tree(outside) == before
    assert os.path.islink(photos / "a.jpg.xmp") and os.path.islink(photos / "b.jpg.xmp")


def test_undo_deletes_only_the_file_export_created_never_a_link_put_in_its_place(tmp_path):
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.xmp").write_bytes(OUTSIDE_XMP)
    a, b = photo(photos / "a.jpg"), photo(photos / "b.jpg")
    manifest = tmp_path / "manifest.json"
    report = export_xmp([(a, ["dog"]), (b, ["cat"])], manifest)
    assert {change.path for change in report.written} == {
        photos / "a.jpg.xmp",
        photos / "b.jpg.xmp",
    }
    # Meanwhile: a.jpg.xmp is swapped for a link; b.jpg.xmp is rewritten by another program that
    # keeps only our keywords (a reformat): not the bytes our export left, so not ours to delete.
    os.unlink(photos / "a.jpg.xmp")
    os.symlink(outside / "victim.xmp", photos / "a.jpg.xmp")
    rewritten = (photos / "b.jpg.xmp").read_bytes().replace(b"\n", b"\r\n")
    (photos / "b.jpg.xmp").write_bytes(rewritten)

    undone = undo_xmp(manifest)

    assert (outside / "victim.xmp").read_bytes() == OUTSIDE_XMP
    assert os.readlink(photos / "a.jpg.xmp") == str(outside / "victim.xmp")
    assert "symbolic link" in dict(undone.skipped)[photos / "a.jpg.xmp"]
    kept = (photos / "b.jpg.xmp").read_bytes()
    assert b"cat" not in kept and b"x:xmpmeta" in kept  # our keywords gone, the file kept
    assert [change.deleted for change in undone.written] == [False]


def test_a_sidecar_nested_5000_levels_deep_is_skipped_and_the_others_are_written(tmp_path):
    photos = tmp_path / "photos"
    a, b = photo(photos / "a.jpg"), photo(photos / "b.jpg")
    deep = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="'
        b'http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="">'
        + b"<a>" * 5000
        + b"</a>" * 5000
        + b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    (photos / "a.jpg.xmp").write_bytes(deep)

    report = export_xmp([(a, ["dog"]), (b, ["cat"])], tmp_path / "manifest.json")

    assert [change.path for change in report.written] == [photos / "b.jpg.xmp"]
    [(path, reason)] = report.skipped
    assert path == photos / "a.jpg.xmp" and "nested more than" in reason
    assert (photos / "a.jpg.xmp").read_bytes() == deep


# A child that exports and is killed (SIGKILL, as `kill -9` does) at its Nth rename: after the
# manifest's rename, in the middle of writing the sidecars.
KILLED_EXPORT = """
import os, signal, sys
from pathlib import Path
renames = []
def dying(real):
    def rename(*args, **kwargs):
        renames.append(args)
        if len(renames) == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return rename
os.rename, os.replace = dying(os.rename), dying(os.replace)
from indexer.export import export_xmp, undo_xmp
photos = Path(sys.argv[1])
if sys.argv[4] == "export":
    export_xmp([(p, ["dog"]) for p in sorted(photos.glob("*.jpg"))], Path(sys.argv[2]))
else:
    undo_xmp(Path(sys.argv[2]))
"""


def run_killed(photos: Path, manifest: Path, at_rename: int, what: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, str(photos), str(manifest), str(at_rename), what],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=photos.parent,  # the code under test comes from PYTHONPATH or the installed package
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.suffix == ".tmp")


def test_temp_files_of_a_killed_export_or_undo_are_removed_by_the_next_run(tmp_path):
    photos = tmp_path / "photos"
    for i in range(4):
        photo(photos / f"img_{i}.jpg")
    manifest = tmp_path / "manifest.json"
    (photos / "img_0.jpg.xmp").write_bytes(NEW_SIDECAR)  # the user's (empty) sidecar

    run_killed(photos, manifest, at_rename=3, what="export")  # manifest, a sidecar, then killed
    assert len(temps(photos)) == 1  # what a kill leaves behind
    export_xmp([(p, ["dog"]) for p in sorted(photos.glob("*.jpg"))], manifest)
    assert temps(photos) == [] and temps(tmp_path) == []
    assert len(list(photos.glob("*.xmp"))) == 4

    run_killed(photos, manifest, at_rename=1, what="undo")  # rewriting the user's
    assert len(temps(photos)) == 1
    undo_xmp(manifest)
    assert temps(photos) == [] and temps(tmp_path) == []
    assert [p.name for p in photos.glob("*.xmp")] == ["img_0.jpg.xmp"]
    assert (photos / "img_0.jpg.xmp").read_bytes() == NEW_SIDECAR
