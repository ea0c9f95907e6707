"""A photographer's mixed folder through the whole tool, checked with exiftool as a photo manager
would read it: RAW only, RAW+JPEG pairs, HEIC, and JPEGs with sidecars written by digiKam,
darktable and Lightroom -> index, tag, export, the user deletes a wrong keyword in their photo
manager, tag and export again, undo; the photos' bytes never change.

The RAW files are DNGs written by dng_files.py (the only RAW format a test can write); some carry a
camera maker's extension (.CR2, .NEF) because sidecar naming goes by the extension, while LibRaw
reads a file by its content."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from dng_files import write_dng
from indexer_fixtures import draw_photo, save_jpeg_with_exif

from indexer.library import open_library
from siglip_search.cli import main

pytest.importorskip("rawpy")
pytest.importorskip("pillow_heif")
pytestmark = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason="exiftool is not installed (setup.sh --dev installs it)",
)
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# digiKam: its tag tree in digiKam:TagsList, a rating and a colour label.
DIGIKAM = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="{RDF}">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
   xmp:Rating="4"
   xmp:Label="Red">
   <digiKam:TagsList>
    <rdf:Seq>
     <rdf:li>Family/Anna</rdf:li>
    </rdf:Seq>
   </digiKam:TagsList>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>Anna</rdf:li>
    </rdf:Bag>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""
# darktable: its own darktable|... hierarchy beside the user's tag, and an edit history.
DARKTABLE = f"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="{RDF}">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="2"
   darktable:xmp_version="5"
   darktable:history_end="1">
   <dc:subject>
    <rdf:Seq>
     <rdf:li>sunset</rdf:li>
    </rdf:Seq>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Seq>
     <rdf:li>darktable|format|jpg</rdf:li>
     <rdf:li>darktable|changed</rdf:li>
     <rdf:li>sunset</rdf:li>
    </rdf:Seq>
   </lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li
      darktable:operation="exposure"
      darktable:enabled="1"
      darktable:params="0000000000000000"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
# Lightroom Classic: the sidecar of a RAW file, develop settings and keywords with their parents.
LIGHTROOM = f"""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000">
 <rdf:RDF xmlns:rdf="{RDF}">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:Rating="3"
   crs:Version="15.0"
   crs:Exposure2012="+0.35">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>Alps</rdf:li>
     <rdf:li>Places</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>Places</rdf:li>
     <rdf:li>Places|Alps</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
VOCABULARY = "animal|dog\nscene|beach\nobject|car\n"
# photo -> the sidecar each manager reads (auto naming): IMG.xmp beside a lone RAW and for the RAW
# of a pair (Lightroom, Capture One), IMG.ext.xmp for everything else, an existing one kept.
SIDECARS = {
    "raw_only/IMG_0100.CR2": "raw_only/IMG_0100.xmp",
    "raw_only/IMG_0101.dng": "raw_only/IMG_0101.dng.xmp",
    "pairs/IMG_0200.NEF": "pairs/IMG_0200.xmp",
    "pairs/IMG_0200.JPG": "pairs/IMG_0200.JPG.xmp",
    "phone/IMG_0300.HEIC": "phone/IMG_0300.HEIC.xmp",
    "digikam/anna.jpg": "digikam/anna.jpg.xmp",
    "darktable/sunset.jpg": "darktable/sunset.jpg.xmp",
    "lightroom/IMG_0400.CR2": "lightroom/IMG_0400.xmp",
}
USERS_SIDECARS = {
    "digikam/anna.jpg.xmp": DIGIKAM,
    "darktable/sunset.jpg.xmp": DARKTABLE,
    "lightroom/IMG_0400.xmp": LIGHTROOM,
}


def _make_folder(photos: Path) -> None:
    for i, rel in enumerate(SIDECARS):
        path = photos / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = draw_photo(i, (256, 192))
        if path.suffix in (".CR2", ".NEF", ".dng"):
            write_dng(
                path, picture, preview_px=256 if i % 2 else None, make="Canon", model="EOS R5"
            )
        elif path.suffix == ".HEIC":
            picture.save(path, quality=90)
        else:
            save_jpeg_with_exif(path, picture, make="Canon", model="EOS R5", gps=(46.5, 8.0))
    for rel, text in USERS_SIDECARS.items():
        (photos / rel).write_text(text, encoding="utf-8")


def _fingerprints(photos: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every photo (sidecars aside)."""
    return {
        rel: (
            hashlib.sha256((photos / rel).read_bytes()).hexdigest(),
            (photos / rel).stat().st_mtime_ns,
        )
        for rel in SIDECARS
    }


def _exiftool(paths: list[Path]) -> dict[Path, dict]:
    """What a photo manager reads, through exiftool: keyword lists always as lists."""
    tags = ["-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-XMP-digiKam:TagsList"]
    extra = ["-XMP-xmp:Rating", "-XMP-xmp:Label", "-XMP-crs:Exposure2012", "-XMP-darktable:all"]
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-n", *tags, *extra, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for record in json.loads(out):
        for key in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"):
            value = record.get(key, [])
            record[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
        found[Path(record["SourceFile"])] = record
    return found


def _machine_tags(library_dir: Path) -> dict[str, set[str]]:
    """Photo (relative path) -> its machine tags, as the library holds them."""
    with open_library(library_dir, create=False) as library:
        found: dict[str, set[str]] = {}
        for record in library.store.iter_tags():
            rel = Path(record.path).relative_to(library_dir.parent / "photos").as_posix()
            found.setdefault(rel, set()).add(record.tag)
        return found


def test_a_photographers_library_through_index_tag_export_rejection_and_undo(
    tmp_path, tiny_checkpoint, capsys
):
    photos, library = tmp_path / "photos", tmp_path / "library"
    _make_folder(photos)
    before = _fingerprints(photos)
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text(VOCABULARY, encoding="utf-8")
    lib = ["--library", str(library)]
    tag = ["tag", *lib, "--vocabulary", str(vocabulary), "--threshold", "1e-9", "--cap", "2"]

    # Index: every photo, RAW and HEIC included; the users' sidecars are counted, not indexed.
    assert main(["index", str(photos), *lib, "--model", str(tiny_checkpoint), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert f"added {len(SIDECARS)}, updated 0, moved 0, removed 0, failed 0" in out
    assert "skipped 3 .xmp" in err

    # Tag: two tags a photo (the tiny model's best two of the vocabulary).
    assert main([*tag, "--no-progress"]) == 0
    tags = _machine_tags(library)
    assert set(tags) == set(SIDECARS) and all(len(t) == 2 for t in tags.values())

    # Export: each photo's tags in the sidecar its photo manager reads, nothing else touched.
    assert main(["export", *lib, "--format", "xmp"]) == 0
    capsys.readouterr()
    read = _exiftool([photos / rel for rel in SIDECARS.values()])
    assert sorted(p.name for p in photos.rglob("*.xmp")) == sorted(
        Path(rel).name for rel in SIDECARS.values()
    )
    for rel, sidecar in SIDECARS.items():
        found = read[photos / sidecar]
        for name in tags[rel]:  # every one of this photo's tags, in the three lists
            assert f"AI/{name.replace('|', '/')}" in found["XMP-digiKam:TagsList"], (rel, found)
            assert f"AI|{name}" in found["XMP-lr:HierarchicalSubject"], (rel, found)
            assert name.split("|")[-1] in found["XMP-dc:Subject"], (rel, found)
        others = {t for r, ts in tags.items() if r != rel for t in ts} - tags[rel]
        assert not any(f"AI|{name}" in found["XMP-lr:HierarchicalSubject"] for name in others)
    anna = read[photos / "digikam/anna.jpg.xmp"]
    assert "Family/Anna" in anna["XMP-digiKam:TagsList"] and anna["XMP-xmp:Rating"] == 4
    sunset = read[photos / "darktable/sunset.jpg.xmp"]
    assert sunset["XMP-digiKam:TagsList"][0] == "sunset"  # the user's tag, copied for digiKam
    assert not any(v.startswith("darktable") for v in sunset["XMP-digiKam:TagsList"])
    assert "darktable|format|jpg" in sunset["XMP-lr:HierarchicalSubject"]
    assert sunset["XMP-darktable:HistoryOperation"] == "exposure"
    alps = read[photos / "lightroom/IMG_0400.xmp"]
    assert "Places|Alps" in alps["XMP-lr:HierarchicalSubject"]
    assert float(alps["XMP-crs:Exposure2012"]) == 0.35  # Lightroom's develop settings kept

    # The user deletes a wrong keyword of anna.jpg in digiKam (exiftool rewrites the sidecar as a
    # photo manager does: every list loses it).
    wrong = sorted(tags["digikam/anna.jpg"])[0]
    kept = (tags["digikam/anna.jpg"] - {wrong}).pop()
    anna_xmp = photos / "digikam/anna.jpg.xmp"
    subprocess.run(
        [
            "exiftool",
            "-overwrite_original",
            f"-XMP-digiKam:TagsList-=AI/{wrong.replace('|', '/')}",
            f"-XMP-lr:HierarchicalSubject-=AI|{wrong}",
            f"-XMP-dc:Subject-={wrong.split('|')[-1]}",
            str(anna_xmp),
        ],
        capture_output=True,
        check=True,
    )

    # Export again: recorded as rejected, not written back, the photo's other tag kept.
    assert main(["export", *lib, "--format", "xmp"]) == 0
    assert (
        f"you removed 'AI|{wrong}' from its sidecar; recorded as rejected"
        in capsys.readouterr().err
    )
    anna = _exiftool([anna_xmp])[anna_xmp]
    assert f"AI|{wrong}" not in anna["XMP-lr:HierarchicalSubject"]
    assert (
        f"AI|{kept}" in anna["XMP-lr:HierarchicalSubject"]
        and "Family/Anna" in anna["XMP-digiKam:TagsList"]
    )
    # Tagging everything again does not bring it back, nor does the next export.
    assert main([*tag, "--all", "--no-progress"]) == 0
    assert "1 you rejected left out" in capsys.readouterr().out
    assert main(["export", *lib, "--format", "xmp"]) == 0
    assert f"AI|{wrong}" not in _exiftool([anna_xmp])[anna_xmp]["XMP-lr:HierarchicalSubject"]
    assert main(["tag", *lib, "--rejections"]) == 0
    assert capsys.readouterr().out.startswith(f"{photos / 'digikam/anna.jpg'}\t{wrong}\t")
    assert main(["search", "photo", *lib, "--rejected", "--json"]) == 0
    assert [h["path"] for h in json.loads(capsys.readouterr().out)] == [
        str(photos / "digikam/anna.jpg")
    ]

    # Undo: our sidecars are gone, the users' hold exactly their own again (darktable's and
    # Lightroom's byte for byte; digiKam's as the user's edit left it, less our keywords).
    assert main(["export", *lib, "--undo"]) == 0
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.xmp")) == sorted(
        USERS_SIDECARS
    )
    for rel in ("darktable/sunset.jpg.xmp", "lightroom/IMG_0400.xmp"):
        assert (photos / rel).read_text(encoding="utf-8") == USERS_SIDECARS[rel]
    anna = _exiftool([anna_xmp])[anna_xmp]
    assert anna["XMP-digiKam:TagsList"] == ["Family/Anna"] and anna["XMP-dc:Subject"] == ["Anna"]
    assert anna["XMP-xmp:Rating"] == 4 and anna["XMP-xmp:Label"] == "Red"
    assert _fingerprints(photos) == before  # no photo was ever written
