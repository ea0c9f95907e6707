"""Exporting a library's machine tags from the command line: XMP sidecars that photo managers read,
undo that leaves the user's own metadata alone, CSV and JSON Lines for pipelines."""

from __future__ import annotations

import csv
import io
import json
import os
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from indexer_fixtures import draw_photo, save_jpeg_with_exif

from indexer.library import DATABASE_ENV, open_library
from siglip_search.cli import main

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC_SUBJECT = "{http://purl.org/dc/elements/1.1/}subject"
LR_HIERARCHICAL = "{http://ns.adobe.com/lightroom/1.0/}hierarchicalSubject"
DIGIKAM_TAGS = "{http://www.digikam.org/ns/1.0/}TagsList"
RATING = 'xmp:Rating="4"'
USER_KEYWORDS = "     <rdf:li>dog</rdf:li>\n     <rdf:li>Grandma's garden</rdf:li>\n"
UNKNOWN = '   <acme:Workflow acme:stage="retouch">keep &amp; me</acme:Workflow>\n'
HAND_WRITTEN = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""\n'
    '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
    '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
    '    xmlns:acme="http://example.com/acme/1.0/"\n'
    f"   {RATING}>\n"
    "   <dc:subject>\n    <rdf:Bag>\n"
    + USER_KEYWORDS
    + "    </rdf:Bag>\n   </dc:subject>\n"
    + UNKNOWN
    + "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
).encode()
VOCABULARY = "animal|dog\nscene|beach\ncolour|red\n"
MACHINE_KEYWORDS = {
    DC_SUBJECT: {"AI", "animal", "dog", "scene", "beach", "colour", "red"},
    LR_HIERARCHICAL: {
        "AI",
        "AI|animal",
        "AI|animal|dog",
        "AI|scene",
        "AI|scene|beach",
        "AI|colour",
        "AI|colour|red",
    },
    DIGIKAM_TAGS: {"AI/animal/dog", "AI/scene/beach", "AI/colour/red"},
}


@pytest.fixture
def tagged(tmp_path, tiny_checkpoint, capsys, database_url):
    """Three photos indexed and tagged through the CLI (into an SQLite library, or one on the test
    server); one has the user's own sidecar, one a sidecar that is not XML. Returns (library dir,
    photos dir)."""
    photos, lib = tmp_path / "photos", tmp_path / "library"
    photos.mkdir()
    save_jpeg_with_exif(photos / "a.jpg", draw_photo(1), taken="2020:05:01 10:00:00")
    draw_photo(2).save(photos / "b.png")
    draw_photo(3).save(photos / "c.jpg", quality=90)
    (photos / "a.jpg.xmp").write_bytes(HAND_WRITTEN)
    (photos / "c.jpg.xmp").write_bytes(b"<x:xmpmeta><rdf:RDF>half a sidecar")
    vocabulary = tmp_path / "tags.txt"
    vocabulary.write_text(VOCABULARY)
    assert (
        main(
            [
                "index",
                str(photos),
                "--library",
                str(lib),
                "--model",
                str(tiny_checkpoint),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "tag",
                "--library",
                str(lib),
                "--vocabulary",
                str(vocabulary),
                "--threshold",
                "0.000001",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    return lib, photos


def photo_state(photos: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in photos.iterdir()
        if p.suffix != ".xmp"
    }


def keywords(sidecar: Path) -> dict[str, set[str]]:
    root = ET.fromstring(sidecar.read_bytes())  # strict: raises on anything not well-formed
    found = {}
    for tag in (DC_SUBJECT, LR_HIERARCHICAL, DIGIKAM_TAGS):
        found[tag] = {li.text for prop in root.iter(tag) for li in prop.iter(f"{{{RDF}}}li")}
    return found


def test_xmp_export_and_undo_keep_the_users_sidecar_and_never_touch_the_photos(tagged, capsys):
    lib, photos = tagged
    before = photo_state(photos)
    broken = (photos / "c.jpg.xmp").read_bytes()

    # c.jpg.xmp is refused
    assert main(["export", "--library", str(lib), "--format", "xmp", "--dry-run"]) == 1
    assert (photos / "a.jpg.xmp").read_bytes() == HAND_WRITTEN and not (
        photos / "b.png.xmp"
    ).exists()
    capsys.readouterr()

    assert main(["export", "--library", str(lib), "--format", "xmp"]) == 1
    out, err = capsys.readouterr()
    assert f"skipped {photos / 'c.jpg.xmp'}" in err and "not well-formed" in err
    assert (photos / "c.jpg.xmp").read_bytes() == broken
    assert str(photos / "a.jpg.xmp") in out and str(photos / "b.png.xmp") in out
    merged = (photos / "a.jpg.xmp").read_bytes()
    xml.dom.minidom.parseString(merged)  # a second strict parser
    text = merged.decode()
    assert RATING in text and USER_KEYWORDS in text and UNKNOWN in text  # byte-for-byte
    assert text.startswith('<?xpacket begin="\ufeff"') and text.endswith('<?xpacket end="w"?>\n')
    found = keywords(photos / "a.jpg.xmp")
    assert found[DC_SUBJECT] == MACHINE_KEYWORDS[DC_SUBJECT] | {"Grandma's garden"}
    for tag in (LR_HIERARCHICAL, DIGIKAM_TAGS):
        assert MACHINE_KEYWORDS[tag] <= found[tag]
    assert keywords(photos / "b.png.xmp") == MACHINE_KEYWORDS
    assert (lib / "xmp-export-manifest.json").is_file()

    # again: nothing new to add
    assert main(["export", "--library", str(lib), "--format", "xmp"]) == 1
    assert (photos / "a.jpg.xmp").read_bytes() == merged
    capsys.readouterr()

    assert main(["export", "--library", str(lib), "--undo"]) == 0
    assert (photos / "a.jpg.xmp").read_bytes() == HAND_WRITTEN  # "dog" is the user's: it stays
    assert not (photos / "b.png.xmp").exists()  # we created it, nothing of the user's in it
    assert (photos / "c.jpg.xmp").read_bytes() == broken
    assert photo_state(photos) == before


def test_xmp_export_with_another_root_and_a_threshold(tagged, capsys):
    lib, photos = tagged
    library = open_library(lib, database=os.environ.get(DATABASE_ENV))
    best = {}
    for record in library.store.iter_tags():
        best.setdefault(record.path, record)  # best score first
    library.close()
    cut = max(r.score for r in best.values() if r.path.endswith("b.png"))
    assert (
        main(
            [
                "export",
                "--library",
                str(lib),
                "--format",
                "xmp",
                "--root-tag",
                "siglip|auto",
                "--threshold",
                str(cut),
            ]
        )
        == 1
    )
    found = keywords(photos / "b.png.xmp")
    leaf = best[str(photos / "b.png")].tag
    assert found[DIGIKAM_TAGS] == {f"siglip/auto/{leaf.replace('|', '/')}"}
    assert f"siglip|auto|{leaf}" in found[LR_HIERARCHICAL] and "AI" not in found[DC_SUBJECT]


def test_csv_jsonl_and_exiftool_exports_list_every_stored_tag(tagged, tmp_path, capsys):
    lib, photos = tagged
    library = open_library(lib, database=os.environ.get(DATABASE_ENV))
    stored = {(r.path, r.tag): r for r in library.store.iter_tags()}
    library.close()
    assert len(stored) == 9

    out = tmp_path / "tags.csv"
    assert main(["export", "--library", str(lib), "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert list(rows[0]) == ["path", "tag", "score", "model"]
    assert {(r["path"], r["tag"]) for r in rows} == set(stored)
    for r in rows:
        record = stored[(r["path"], r["tag"])]
        assert (
            float(r["score"]) == record.score
            and r["model"] == record.model
            and os.path.isabs(r["path"])
        )

    assert main(["export", "--library", str(lib), "--format", "jsonl", "--threshold", "0.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(d["path"], d["tag"]) for d in lines} == {
        k for k, r in stored.items() if r.score >= 0.5
    }
    assert all(set(d) == {"path", "tag", "score", "model"} for d in lines)

    assert main(["export", "--library", str(lib), "--format", "exiftool-csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["SourceFile"] for r in table} == {
        str(photos / n) for n in ("a.jpg", "b.png", "c.jpg")
    }
    assert all("AI|animal|dog" in r["HierarchicalSubject"] for r in table)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export"], "choose --format"),
        (["export", "--format", "xmp", "--out", "x.txt"], "--out is for csv"),
        (["export", "--undo"], "nothing to undo"),
        (
            ["export", "--format", "exiftool-csv", "--root-tag", "A,B"],
            "root tag 'A,B' contains ','",
        ),
        (
            ["export", "--format", "exiftool-csv", "--root-tag", "A,B", "--dry-run"],
            "root tag 'A,B' contains ','",
        ),
    ],
)
def test_export_mistakes_are_one_line_and_exit_2(tagged, capsys, argv, message):
    lib, _ = tagged
    assert main([*argv, "--library", str(lib)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_out_file_that_cannot_be_written_is_one_line_naming_it(tagged, tmp_path, capsys):
    """A parent that is a file, a full disk (/dev/full), a folder no file can be created in (/proc):
    one line naming the --out path and why, exit 2, and nothing left behind."""
    lib, _ = tagged
    (tmp_path / "t.csv").write_text("an earlier export\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = {str(tmp_path / "t.csv" / "x.csv"): f"{tmp_path / 't.csv'} is a file, not a folder"}
    if os.path.exists("/dev/full"):
        cases["/dev/full"] = "No space left on device"
    if os.path.isdir("/proc/self"):
        cases["/proc/self/tags.csv"] = "cannot write --out /proc/self/tags.csv"
    for fmt in ("csv", "jsonl", "exiftool-csv"):
        for out, message in cases.items():
            assert main(["export", "--library", str(lib), "--format", fmt, "--out", out]) == 2, (
                fmt,
                out,
            )
            err = capsys.readouterr().err
            assert message in err and out in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "t.csv").read_text() == "an earlier export\n"


def test_exporting_again_at_a_higher_threshold_takes_back_the_weaker_tags(tagged, capsys):
    lib, photos = tagged
    library = open_library(lib, database=os.environ.get(DATABASE_ENV))
    scores = {}
    for record in library.store.iter_tags():
        scores.setdefault(record.path, {})[record.tag] = record.score
    library.close()
    assert main(["export", "--library", str(lib), "--format", "xmp"]) == 1  # c.jpg.xmp is refused
    capsys.readouterr()
    cut = max(scores[str(photos / "b.png")].values())  # b.png keeps its best tag alone

    assert main(["export", "--library", str(lib), "--format", "xmp", "--threshold", str(cut)]) == 1

    out = capsys.readouterr().out
    assert f"{photos / 'b.png.xmp'}\tadded 0, removed " in out
    for photo in ("a.jpg", "b.png"):
        kept = {
            f"AI/{t.replace('|', '/')}" for t, s in scores[str(photos / photo)].items() if s >= cut
        }
        assert keywords(photos / f"{photo}.xmp")[DIGIKAM_TAGS] - {"dog", "Grandma's garden"} == kept
    assert len(kept) >= 1
    if not any(s >= cut for s in scores[str(photos / "a.jpg")].values()):
        assert (photos / "a.jpg.xmp").read_bytes() == HAND_WRITTEN
    assert main(["export", "--library", str(lib), "--undo"]) == 0
    assert (photos / "a.jpg.xmp").read_bytes() == HAND_WRITTEN and not (
        photos / "b.png.xmp"
    ).exists()


def test_an_undo_that_leaves_keywords_behind_exits_1_and_says_where(tagged, capsys):
    lib, photos = tagged
    main(["export", "--library", str(lib), "--format", "xmp"])
    (photos / "b.png.xmp").write_bytes((photos / "b.png.xmp").read_bytes() + b"<broken")
    capsys.readouterr()

    assert main(["export", "--library", str(lib), "--undo"]) == 1

    err = capsys.readouterr().err
    assert f"skipped {photos / 'b.png.xmp'}" in err
    assert (photos / "a.jpg.xmp").read_bytes() == HAND_WRITTEN  # the rest was undone


def test_keyword_lists_export_cannot_extend_are_named_on_stderr(tagged, capsys):
    lib, photos = tagged
    # A dc:subject written as an rdf:Alt (not a Bag): left as it is, and the user is told.
    alt = HAND_WRITTEN.replace(b"<rdf:Bag>", b"<rdf:Alt>").replace(b"</rdf:Bag>", b"</rdf:Alt>")
    (photos / "a.jpg.xmp").write_bytes(alt)

    main(["export", "--library", str(lib), "--format", "xmp"])

    err = capsys.readouterr().err
    assert f"note: {photos / 'a.jpg.xmp'}: " in err and "dc:subject" in err


def test_a_photo_renamed_with_its_sidecar_in_a_photo_manager_keeps_its_export_record(
    tagged, capsys
):
    """digiKam and Lightroom rename a photo's sidecar with it. The library knows the renamed photo by
    its fingerprint, and so does the export record: later exports and undo still reach the sidecar."""
    lib, photos = tagged
    main(["export", "--library", str(lib), "--format", "xmp"])  # exit 1: c.jpg.xmp is refused
    assert keywords(photos / "a.jpg.xmp")[DIGIKAM_TAGS] >= MACHINE_KEYWORDS[DIGIKAM_TAGS]
    (photos / "a.jpg").rename(photos / "grandma-2020.jpg")
    (photos / "a.jpg.xmp").rename(photos / "grandma-2020.jpg.xmp")
    assert main(["index", "--library", str(lib), "--no-progress"]) == 0
    assert "moved 1" in capsys.readouterr().out

    main(["export", "--library", str(lib), "--format", "xmp"])
    # a.jpg's keywords found again
    assert "changed 0 sidecars, 2 unchanged, 1 skipped" in capsys.readouterr().err
    assert main(["export", "--library", str(lib), "--undo"]) == 0

    # every machine keyword taken back
    assert (photos / "grandma-2020.jpg.xmp").read_bytes() == HAND_WRITTEN
    assert not (photos / "b.png.xmp").exists()
