"""Tag export stories: machine tags go into real sidecars, the user's data never suffers, undo is exact."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from indexer.export import (
    ManifestError,
    OutputPathError,
    SidecarError,
    TagNameError,
    TagRow,
    commit_sidecar_plan,
    export_xmp,
    load_manifest,
    machine_tag_path,
    merge_keywords_into_sidecar,
    plan_keyword_merge,
    sidecar_path_for,
    undo_xmp,
    write_csv,
    write_exiftool_csv,
    write_jsonl,
)
from indexer.export import xmp_export as export  # its commit_sidecar_plan is patched below

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PROPERTY_TAGS = {
    "dc:subject": "{http://purl.org/dc/elements/1.1/}subject",
    "lr:hierarchicalSubject": "{http://ns.adobe.com/lightroom/1.0/}hierarchicalSubject",
    "digiKam:TagsList": "{http://www.digikam.org/ns/1.0/}TagsList",
    "MicrosoftPhoto:LastKeywordXMP": "{http://ns.microsoft.com/photo/1.0/}LastKeywordXMP",
    "mediapro:CatalogSets": "{http://ns.iview-multimedia.com/mediapro/1.0/}CatalogSets",
}

# What digiKam (exiv2) writes: xpacket wrapper, one attribute per line, padding before the trailer;
# plus a darktable history block in a second rdf:Description and a namespace nobody knows.
DIGIKAM_SIDECAR = (
    """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
   xmp:Rating="4">
   <xmp:Label>Red</xmp:Label>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>dog</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <my:Thing xmlns:my="http://example.com/my/">keep me &amp; my entity</my:Thing>
  </rdf:Description>
  <rdf:Description rdf:about=""
    xmlns:darktable="http://darktable.sf.net/"
   darktable:history_end="1">
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
    + " " * 200
    + """
<?xpacket end="w"?>"""
)

PRESERVED_PARTS = [  # (what the user would miss, element to compare)
    ("colour label", "{http://ns.adobe.com/xap/1.0/}Label"),
    ("unknown namespace", "{http://example.com/my/}Thing"),
    ("darktable edits", "{http://darktable.sf.net/}history"),
]


def make_photo(folder: Path, name: str, content: bytes = b"not really an image") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    photo = folder / name
    photo.write_bytes(content)
    return photo


def keywords(sidecar: Path) -> dict[str, list[str]]:
    """Each keyword property's rdf:li values, read with a strict namespace-aware parser."""
    data = sidecar.read_bytes()
    xml.dom.minidom.parseString(data)  # raises on anything malformed, unbound prefixes included
    root = ET.fromstring(data)
    found = {}
    for key, tag in PROPERTY_TAGS.items():
        prop = next(root.iter(tag), None)
        if prop is not None:
            found[key] = [li.text for li in prop.iter(f"{{{RDF}}}li")]
    return found


def subtree(data: bytes, tag: str) -> bytes:
    """The element serialised alone (without the whitespace after it, which belongs to its parent)."""
    element = next(ET.fromstring(data).iter(tag))
    element.tail = None
    return ET.tostring(element)


def rating(data: bytes) -> str | None:
    desc = next(ET.fromstring(data).iter(f"{{{RDF}}}Description"))
    return desc.get("{http://ns.adobe.com/xap/1.0/}Rating")


def test_digikam_sidecar_keeps_everything_and_undo_restores_it_byte_for_byte(tmp_path):
    photo = make_photo(tmp_path / "photos", "IMG_1.jpg")
    sidecar = photo.with_name("IMG_1.jpg.xmp")
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    original = sidecar.read_bytes()
    manifest = tmp_path / "export.json"

    report = export_xmp([(photo, ["animal|dog", "scene|beach"])], manifest)

    assert [c.path for c in report.written] == [sidecar] and report.skipped == []
    after = sidecar.read_bytes()
    tags = keywords(sidecar)
    # The user's "dog" stays first and appears once; ours follow.
    assert tags["dc:subject"] == ["dog", "AI", "animal", "scene", "beach"]
    assert tags["lr:hierarchicalSubject"] == [
        "dog",
        "AI",
        "AI|animal",
        "AI|animal|dog",
        "AI|scene",
        "AI|scene|beach",
    ]
    # digiKam reads only TagsList once it exists, so the user's own "dog" is copied there too.
    assert tags["digiKam:TagsList"] == ["dog", "AI/animal/dog", "AI/scene/beach"]
    assert rating(after) == "4"
    for what, tag in PRESERVED_PARTS:
        assert subtree(after, tag) == subtree(original, tag), what
    # Untouched bytes, not just equal trees.
    assert b'   xmp:Rating="4">\n   <xmp:Label>Red</xmp:Label>' in after
    assert b"ns0" not in after and b'xmlns:my="http://example.com/my/"' in after
    assert after.startswith('<?xpacket begin="\ufeff"'.encode()) and after.endswith(
        b" " * 200 + b'\n<?xpacket end="w"?>'
    )

    report = undo_xmp(manifest)

    assert [c.path for c in report.written] == [sidecar]
    assert keywords(sidecar) == {"dc:subject": ["dog"]}
    assert sidecar.read_bytes() == original
    assert load_manifest(manifest) == {}


def test_photo_without_sidecar_gets_name_ext_xmp_with_the_standard_wrapper(tmp_path):
    photo = make_photo(tmp_path, "IMG_1.jpg")

    report = export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    sidecar = tmp_path / "IMG_1.jpg.xmp"
    assert report.written[0].created and report.written[0].path == sidecar
    assert not (tmp_path / "IMG_1.xmp").exists()
    data = sidecar.read_bytes()
    assert data.startswith('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'.encode())
    assert data.rstrip().endswith(b'<?xpacket end="w"?>')
    assert (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' in data and b'<rdf:Description rdf:about=""' in data
    )
    assert keywords(sidecar) == {
        "dc:subject": ["AI", "animal", "dog"],
        "lr:hierarchicalSubject": ["AI", "AI|animal", "AI|animal|dog"],
        "digiKam:TagsList": ["AI/animal/dog"],
    }


def test_jpeg_and_raw_with_one_base_name_never_share_a_sidecar(tmp_path):
    """A RAW+JPEG pair: IMG_1.xmp is the RAW's (what Lightroom and Capture One read for it), the
    JPEG gets IMG_1.jpg.xmp; each holds its own photo's tags, whatever the order they are written in."""
    jpeg, raw = make_photo(tmp_path, "IMG_1.jpg"), make_photo(tmp_path, "IMG_1.cr2")

    export_xmp([(jpeg, ["animal|dog"]), (raw, ["scene|beach"])], tmp_path / "export.json")

    assert sorted(p.name for p in tmp_path.glob("*.xmp")) == ["IMG_1.jpg.xmp", "IMG_1.xmp"]
    assert keywords(tmp_path / "IMG_1.jpg.xmp")["digiKam:TagsList"] == ["AI/animal/dog"]
    assert keywords(tmp_path / "IMG_1.xmp")["digiKam:TagsList"] == ["AI/scene/beach"]
    # asked for photo.xmp, the JPEG still never takes the RAW's
    for naming in ("photo.xmp", "auto"):
        assert sidecar_path_for(jpeg, naming=naming) == tmp_path / "IMG_1.jpg.xmp"
        assert sidecar_path_for(raw, naming=naming) == tmp_path / "IMG_1.xmp"
    assert sidecar_path_for(raw, naming="photo.ext.xmp") == tmp_path / "IMG_1.cr2.xmp"
    # two RAW files of one name: neither takes IMG_1.xmp
    other_raw = make_photo(tmp_path, "IMG_1.dng")
    assert sidecar_path_for(raw, naming="photo.xmp") == tmp_path / "IMG_1.cr2.xmp"
    assert sidecar_path_for(other_raw) == tmp_path / "IMG_1.dng.xmp"


def test_sidecar_names_for_each_photo_manager(tmp_path):
    """auto: a lone RAW gets IMG.xmp (Lightroom, Capture One), DNG and JPEG get IMG.ext.xmp (digiKam,
    darktable, Immich; Adobe reads their embedded XMP); an existing sidecar keeps its name."""
    lone_raw, dng, jpeg = (make_photo(tmp_path, n) for n in ("A.NEF", "B.dng", "C.jpg"))
    assert [sidecar_path_for(p).name for p in (lone_raw, dng, jpeg)] == [
        "A.xmp",
        "B.dng.xmp",
        "C.jpg.xmp",
    ]
    assert [sidecar_path_for(p, naming="photo.xmp").name for p in (lone_raw, dng, jpeg)] == [
        "A.xmp",
        "B.xmp",
        "C.xmp",
    ]
    # darktable's, already there
    (tmp_path / "A.NEF.xmp").write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    (tmp_path / "C.xmp").write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    assert [sidecar_path_for(p).name for p in (lone_raw, jpeg)] == ["A.NEF.xmp", "C.xmp"]
    with pytest.raises(ValueError, match="sidecar naming must be one of"):
        sidecar_path_for(jpeg, naming="IMG.xmp")


def test_switching_the_sidecar_name_moves_our_keywords_and_leaves_the_users_sidecar_as_it_was(
    tmp_path,
):
    """Exported as IMG.ext.xmp (digiKam, darktable), then as IMG.xmp (Lightroom, Capture One): our
    keywords move to the new sidecar, the old one is deleted if we created it, or gets back its
    own bytes if it was the user's; undo then removes them from the new one. Nothing is duplicated."""
    raw, jpeg = make_photo(tmp_path, "IMG_2.cr2"), make_photo(tmp_path, "C.jpg")
    users = tmp_path / "C.jpg.xmp"
    users.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    original = users.read_bytes()
    manifest = tmp_path / "export.json"
    items = [(raw, ["scene|beach"]), (jpeg, ["animal|cat"])]

    export_xmp(items, manifest, naming="photo.ext.xmp")
    assert keywords(tmp_path / "IMG_2.cr2.xmp")["digiKam:TagsList"] == ["AI/scene/beach"]
    assert "AI|animal|cat" in keywords(users)["lr:hierarchicalSubject"]

    report = export_xmp(items, manifest, naming="photo.xmp")

    assert not (tmp_path / "IMG_2.cr2.xmp").exists()  # ours, now empty: deleted
    assert keywords(tmp_path / "IMG_2.xmp")["lr:hierarchicalSubject"] == [
        "AI",
        "AI|scene",
        "AI|scene|beach",
    ]
    assert users.read_bytes() == original  # the user's own sidecar, as it was before any export
    assert keywords(tmp_path / "C.xmp")["dc:subject"] == ["AI", "animal", "cat"]
    notes = [note for change in report.written for note in change.notes]
    assert "keywords moved to IMG_2.xmp (--sidecar-name)" in notes
    assert sorted(p.name for p in load_manifest(manifest)) == ["C.xmp", "IMG_2.xmp"]
    # A second export with the same name changes nothing; undo leaves the user's sidecar alone.
    again = export_xmp(items, manifest, naming="photo.xmp")
    assert again.written == [] and len(again.unchanged) == 2
    undo_xmp(manifest)
    assert sorted(p.name for p in tmp_path.glob("*.xmp")) == ["C.jpg.xmp"]
    assert users.read_bytes() == original


def test_auto_keeps_the_sidecar_it_wrote_when_another_tool_creates_one_later(tmp_path):
    """A lone RAW got IMG_3.xmp (auto); darktable then writes IMG_3.cr2.xmp beside it: the next
    auto export keeps writing to IMG_3.xmp and never touches darktable's file."""
    raw = make_photo(tmp_path, "IMG_3.cr2")
    manifest = tmp_path / "export.json"
    export_xmp([(raw, ["scene|beach"])], manifest)
    darktable = tmp_path / "IMG_3.cr2.xmp"
    darktable.write_text(DIGIKAM_SIDECAR, encoding="utf-8")

    report = export_xmp([(raw, ["scene|beach", "animal|dog"])], manifest)

    assert [c.path.name for c in report.written] == ["IMG_3.xmp"]
    assert "AI|animal|dog" in keywords(tmp_path / "IMG_3.xmp")["lr:hierarchicalSubject"]
    assert darktable.read_text(encoding="utf-8") == DIGIKAM_SIDECAR


def test_a_keyword_the_user_removed_before_the_name_switch_does_not_come_back(tmp_path):
    jpeg = make_photo(tmp_path, "D.jpg")
    manifest = tmp_path / "export.json"
    items = [(jpeg, ["animal|dog", "scene|beach"])]
    export_xmp(items, manifest)
    old = tmp_path / "D.jpg.xmp"
    text = old.read_text(encoding="utf-8")
    for value in ("AI/animal/dog", "AI|animal|dog"):  # deleted in digiKam
        text = text.replace(f"<rdf:li>{value}</rdf:li>", "")
    old.write_text(text, encoding="utf-8")

    report = export_xmp(items, manifest, naming="photo.xmp")

    assert report.rejected == [(jpeg, ("AI", "animal", "dog"))]
    # digiKam rewrote the sidecar we created: no longer our bytes, so it is kept without ours.
    assert old.exists() and not any(keywords(old).values())
    assert keywords(tmp_path / "D.xmp")["digiKam:TagsList"] == ["AI/scene/beach"]


def test_shared_base_name_sidecar_is_left_alone_when_jpeg_and_raw_coexist(tmp_path):
    jpeg, _ = make_photo(tmp_path, "IMG_1.jpg"), make_photo(tmp_path, "IMG_1.cr2")
    shared = tmp_path / "IMG_1.xmp"  # the RAW's (Lightroom's), never the JPEG's
    shared.write_text(DIGIKAM_SIDECAR, encoding="utf-8")

    assert sidecar_path_for(jpeg) == tmp_path / "IMG_1.jpg.xmp"
    export_xmp([(jpeg, ["animal|dog"])], tmp_path / "export.json")
    assert shared.read_text(encoding="utf-8") == DIGIKAM_SIDECAR


def test_lone_raw_updates_its_existing_lightroom_style_sidecar(tmp_path):
    raw = make_photo(tmp_path, "IMG_2.CR2")
    lightroom = tmp_path / "IMG_2.xmp"
    lightroom.write_text(DIGIKAM_SIDECAR, encoding="utf-8")

    report = export_xmp([(raw, ["animal|dog"])], tmp_path / "export.json")

    assert [c.path for c in report.written] == [lightroom]
    assert not (tmp_path / "IMG_2.CR2.xmp").exists()
    assert "AI|animal|dog" in keywords(lightroom)["lr:hierarchicalSubject"]


def test_an_apple_edit_file_beside_the_photo_does_not_hide_the_users_base_name_sidecar(tmp_path):
    photo = make_photo(tmp_path, "IMG_7.HEIC")
    make_photo(tmp_path, "IMG_7.AAE")  # Apple Photos' edit file: not a second photo
    users = tmp_path / "IMG_7.xmp"
    users.write_text(DIGIKAM_SIDECAR, encoding="utf-8")

    export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    assert not (tmp_path / "IMG_7.HEIC.xmp").exists()  # would hide IMG_7.xmp from Immich
    assert "AI/animal/dog" in keywords(users)["digiKam:TagsList"]
    make_photo(tmp_path, "IMG_7.MOV")  # a Live Photo's movie is another medium: IMG_7.xmp is shared
    assert sidecar_path_for(photo) == tmp_path / "IMG_7.HEIC.xmp"


def test_a_user_keyword_a_new_list_cannot_hold_is_named_in_a_note(tmp_path):
    photo = make_photo(tmp_path, "IMG_8.jpg")
    sidecar = tmp_path / "IMG_8.jpg.xmp"
    sidecar.write_text(
        DIGIKAM_SIDECAR.replace(
            "<dc:subject>",
            '<lr:hierarchicalSubject xmlns:lr="http://ns.adobe.com/lightroom/1.0/"><rdf:Bag>'
            "<rdf:li>music|AC/DC</rdf:li><rdf:li>places|Rome</rdf:li></rdf:Bag></lr:hierarchicalSubject>\n"
            "   <dc:subject>",
        ),
        encoding="utf-8",
    )

    report = export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    assert "places/Rome" in keywords(sidecar)["digiKam:TagsList"]
    assert any("'music|AC/DC'" in note for note in report.written[0].notes)


def test_broken_sidecars_are_reported_by_name_and_never_touched(tmp_path):
    truncated = make_photo(tmp_path, "truncated.jpg")
    not_xmp = make_photo(tmp_path, "not_xmp.jpg")
    laughs = make_photo(tmp_path, "laughs.jpg")
    good = make_photo(tmp_path, "good.jpg")
    broken = {
        tmp_path / "truncated.jpg.xmp": DIGIKAM_SIDECAR[:400].encode(),
        tmp_path / "not_xmp.jpg.xmp": b"<html><body>hello</body></html>",
        tmp_path / "laughs.jpg.xmp": (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF.encode() + b'">'
            b'<rdf:Description rdf:about="">&lol2;</rdf:Description></rdf:RDF></x:xmpmeta>'
        ),
    }
    for path, data in broken.items():
        path.write_bytes(data)

    report = export_xmp(
        [(p, ["animal|dog"]) for p in (truncated, not_xmp, laughs, good)], tmp_path / "export.json"
    )

    skipped = dict(report.skipped)
    assert set(skipped) == set(broken)
    assert "not well-formed" in skipped[tmp_path / "truncated.jpg.xmp"]
    assert "not XMP" in skipped[tmp_path / "not_xmp.jpg.xmp"]
    assert "DTD" in skipped[tmp_path / "laughs.jpg.xmp"]
    for path, data in broken.items():
        assert path.read_bytes() == data
    assert [c.path for c in report.written] == [tmp_path / "good.jpg.xmp"]
    assert set(load_manifest(tmp_path / "export.json")) == {tmp_path / "good.jpg.xmp"}


def test_photo_bytes_and_mtime_survive_export_and_undo(tmp_path):
    photo = make_photo(tmp_path, "IMG_7.jpg", b"\xff\xd8 a text file pretending to be a JPEG")
    os.utime(photo, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    before = (photo.read_bytes(), photo.stat().st_mtime_ns, photo.stat().st_mode)

    export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")
    undo_xmp(tmp_path / "export.json")

    assert (photo.read_bytes(), photo.stat().st_mtime_ns, photo.stat().st_mode) == before


def test_second_export_adds_nothing_and_one_undo_removes_both_runs(tmp_path):
    fresh = make_photo(tmp_path, "fresh.jpg")
    user = make_photo(tmp_path, "user.jpg")
    user_sidecar = tmp_path / "user.jpg.xmp"
    user_sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    manifest = tmp_path / "export.json"
    items = [(fresh, ["animal|dog"]), (user, ["animal|dog"])]

    export_xmp(items, manifest)
    first = {p: p.read_bytes() for p in (tmp_path / "fresh.jpg.xmp", user_sidecar)}
    again = export_xmp(items, manifest)

    assert again.written == [] and set(again.unchanged) == set(first)
    assert {p: p.read_bytes() for p in first} == first

    more = export_xmp([(user, ["animal|dog", "scene|beach"])], manifest)
    assert more.written[0].added["digiKam:TagsList"] == ["AI/scene/beach"]

    undo_xmp(manifest)

    assert not (tmp_path / "fresh.jpg.xmp").exists()  # we created it and it held only our tags
    assert user_sidecar.read_text(encoding="utf-8") == DIGIKAM_SIDECAR


def test_undo_keeps_a_keyword_the_user_added_after_the_export(tmp_path):
    photo = make_photo(tmp_path, "IMG_3.jpg")
    manifest = tmp_path / "export.json"
    export_xmp([(photo, ["animal|dog"])], manifest)
    sidecar = tmp_path / "IMG_3.jpg.xmp"
    # The user tags the photo "holiday" in their photo manager, which rewrites the lists.
    text = sidecar.read_text(encoding="utf-8")
    text = text.replace(
        "<rdf:li>dog</rdf:li>", "<rdf:li>dog</rdf:li>\n     <rdf:li>holiday</rdf:li>"
    )
    text = text.replace(
        "<rdf:li>AI/animal/dog</rdf:li>", "<rdf:li>AI/animal/dog</rdf:li><rdf:li>holiday</rdf:li>"
    )
    sidecar.write_text(text, encoding="utf-8")

    report = undo_xmp(manifest)

    assert report.written[0].deleted is False and sidecar.exists()
    assert keywords(sidecar) == {"dc:subject": ["holiday"], "digiKam:TagsList": ["holiday"]}


def test_flat_keywords_stay_visible_to_readers_that_prefer_hierarchical_lists(tmp_path):
    photo = make_photo(tmp_path, "IMG_4.jpg")
    sidecar = tmp_path / "IMG_4.jpg.xmp"
    # PhotoPrism-style sidecar: only dc:subject, as an rdf:Seq, everything on one line.
    original = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF + '">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:subject><rdf:Seq><rdf:li>holiday</rdf:li></rdf:Seq></dc:subject>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    sidecar.write_text(original, encoding="utf-8")
    manifest = tmp_path / "export.json"

    export_xmp([(photo, ["animal|dog"])], manifest)

    tags = keywords(sidecar)
    assert (
        b"<dc:subject><rdf:Seq><rdf:li>holiday</rdf:li><rdf:li>AI</rdf:li>" in sidecar.read_bytes()
    )
    # The user's rdf:Seq was extended, not replaced by a Bag nor joined by a second dc:subject.
    subjects = list(ET.fromstring(sidecar.read_bytes()).iter(PROPERTY_TAGS["dc:subject"]))
    assert [child.tag for s in subjects for child in s] == [f"{{{RDF}}}Seq"]
    # darktable now reads lr:hierarchicalSubject instead of dc:subject: "holiday" must be there too.
    assert tags["lr:hierarchicalSubject"][0] == "holiday"
    assert tags["digiKam:TagsList"] == ["holiday", "AI/animal/dog"]

    undo_xmp(manifest)
    assert sidecar.read_text(encoding="utf-8") == original


# What darktable writes: its own hierarchy (`darktable|format|CR2`, `darktable|changed`) beside the
# user's tags in lr:hierarchicalSubject, only the user's in dc:subject.
DARKTABLE_SIDECAR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/" '
    'x:xmptk="XMP Core 4.4.0-Exiv2"><rdf:RDF xmlns:rdf="' + RDF + '">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmlns:darktable="http://darktable.sf.net/" '
    'darktable:xmp_version="5">'
    "<dc:subject><rdf:Seq><rdf:li>holiday</rdf:li></rdf:Seq></dc:subject>"
    "<lr:hierarchicalSubject><rdf:Seq><rdf:li>darktable|format|CR2</rdf:li>"
    "<rdf:li>darktable|changed</rdf:li><rdf:li>places|home</rdf:li><rdf:li>holiday</rdf:li>"
    "</rdf:Seq></lr:hierarchicalSubject></rdf:Description></rdf:RDF></x:xmpmeta>\n"
)


def test_a_new_tagslist_copies_the_users_keywords_but_never_darktables_own(tmp_path):
    """digiKam reads only the first keyword list it finds: the TagsList we create copies the user's
    tags so digiKam still shows them, but darktable's bookkeeping hierarchy stays darktable's."""
    photo = make_photo(tmp_path, "IMG_5.CR2")
    sidecar = tmp_path / "IMG_5.CR2.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    manifest = tmp_path / "export.json"

    export_xmp([(photo, ["animal|dog"])], manifest)

    tags = keywords(sidecar)
    assert tags["digiKam:TagsList"] == ["places/home", "holiday", "AI/animal/dog"]
    assert tags["lr:hierarchicalSubject"][:4] == [
        "darktable|format|CR2",
        "darktable|changed",
        "places|home",
        "holiday",
    ]
    undo_xmp(manifest)
    assert sidecar.read_text(encoding="utf-8") == DARKTABLE_SIDECAR


def test_without_ancestors_each_tag_is_written_alone(tmp_path):
    """--no-ancestors: no bare `AI` (nor `animal`) keyword on every photo, which Lightroom would
    list as keywords of their own; the whole path stays in the hierarchical lists."""
    photo = make_photo(tmp_path, "IMG_6.jpg")
    manifest = tmp_path / "export.json"

    export_xmp([(photo, ["animal|dog", "scene|beach"])], manifest, ancestors=False)

    tags = keywords(tmp_path / "IMG_6.jpg.xmp")
    assert tags["dc:subject"] == ["dog", "beach"]
    assert tags["lr:hierarchicalSubject"] == ["AI|animal|dog", "AI|scene|beach"]
    assert tags["digiKam:TagsList"] == ["AI/animal/dog", "AI/scene/beach"]
    # Exporting again with ancestors adds them; undo takes all of it back.
    export_xmp([(photo, ["animal|dog"])], manifest)
    assert keywords(tmp_path / "IMG_6.jpg.xmp")["dc:subject"] == ["dog", "AI", "animal"]
    undo_xmp(manifest)
    assert not (tmp_path / "IMG_6.jpg.xmp").exists()
    out = tmp_path / "tags.csv"
    write_exiftool_csv([TagRow(str(photo), "animal|dog", 0.9, "m")], out, ancestors=False)
    assert out.read_text(encoding="utf-8").splitlines()[1] == f"{photo},dog,dog,AI|animal|dog"


def test_other_keyword_lists_already_present_are_extended_in_their_own_syntax(tmp_path):
    photo = make_photo(tmp_path, "IMG_5.jpg")
    sidecar = tmp_path / "IMG_5.jpg.xmp"
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF + '"\n'
        ' xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"\n'
        ' xmlns:mediapro="http://ns.iview-multimedia.com/mediapro/1.0/">\n'
        ' <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="2"/>\n'
        ' <rdf:Description rdf:about="">\n'
        "  <MicrosoftPhoto:LastKeywordXMP><rdf:Bag><rdf:li>people/Ann</rdf:li></rdf:Bag>"
        "</MicrosoftPhoto:LastKeywordXMP>\n"
        "  <mediapro:CatalogSets><rdf:Bag><rdf:li>people|Ann</rdf:li></rdf:Bag></mediapro:CatalogSets>\n"
        " </rdf:Description>\n"
        "</rdf:RDF></x:xmpmeta>\n",
        encoding="utf-8",
    )
    original = sidecar.read_bytes()

    export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    tags = keywords(sidecar)
    assert tags["MicrosoftPhoto:LastKeywordXMP"] == ["people/Ann", "AI/animal/dog"]
    assert tags["mediapro:CatalogSets"] == ["people|Ann", "AI|animal|dog"]
    assert tags["digiKam:TagsList"] == ["people/Ann", "AI/animal/dog"]  # copied from LastKeywordXMP
    # The self-closing Description that holds the rating was opened around the new lists.
    assert rating(sidecar.read_bytes()) == "2"

    undo_xmp(tmp_path / "export.json")
    after_undo = sidecar.read_bytes()
    assert keywords(sidecar) == {
        "MicrosoftPhoto:LastKeywordXMP": ["people/Ann"],
        "mediapro:CatalogSets": ["people|Ann"],
    }
    # Only whitespace differs: the Description we opened stays open.
    assert after_undo.replace(b'"2">\n </rdf:Description>', b'"2"/>') == original


def test_dry_run_writes_nothing_but_reports_the_plan(tmp_path):
    fresh = make_photo(tmp_path, "fresh.jpg")
    user = make_photo(tmp_path, "user.jpg")
    (tmp_path / "user.jpg.xmp").write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    manifest = tmp_path / "export.json"

    report = export_xmp([(fresh, ["animal|dog"]), (user, ["animal|dog"])], manifest, dry_run=True)

    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert report.written == []
    planned = {c.path.name: c for c in report.planned}
    assert planned["fresh.jpg.xmp"].created and planned["fresh.jpg.xmp"].added["dc:subject"] == [
        "AI",
        "animal",
        "dog",
    ]
    assert planned["user.jpg.xmp"].added["dc:subject"] == ["AI", "animal"]  # "dog" is the user's
    assert merge_keywords_into_sidecar(fresh, ["animal|dog"], dry_run=True).created
    assert not (tmp_path / "fresh.jpg.xmp").exists()

    export_xmp([(user, ["animal|dog"])], manifest)
    exported = {p: p.read_bytes() for p in tmp_path.iterdir()}
    undo_plan = undo_xmp(manifest, dry_run=True)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == exported
    assert undo_plan.planned[0].removed["digiKam:TagsList"] == ["dog", "AI/animal/dog"]


def test_interrupted_export_can_still_be_undone(tmp_path, monkeypatch):
    photos = [make_photo(tmp_path, f"IMG_{i}.jpg") for i in range(3)]
    manifest = tmp_path / "export.json"
    real_commit, calls = export.commit_sidecar_plan, []

    def commit_then_crash(plan):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(plan.change.path)
        real_commit(plan)

    monkeypatch.setattr(export, "commit_sidecar_plan", commit_then_crash)
    with pytest.raises(KeyboardInterrupt):
        export_xmp([(p, ["animal|dog"]) for p in photos], manifest)

    assert set(load_manifest(manifest)) == set(calls)  # the unwritten third entry was rolled back
    monkeypatch.undo()
    undo_xmp(manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "IMG_0.jpg",
        "IMG_1.jpg",
        "IMG_2.jpg",
        "export.json",
    ]


def test_sidecar_changed_by_another_program_meanwhile_is_not_overwritten(tmp_path):
    photo = make_photo(tmp_path, "IMG_6.jpg")
    sidecar = tmp_path / "IMG_6.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    plan = plan_keyword_merge(photo, [machine_tag_path("animal|dog")])
    # digiKam saves a new rating meanwhile.
    sidecar.write_text(DIGIKAM_SIDECAR.replace('"4"', '"5"'), encoding="utf-8")

    with pytest.raises(SidecarError, match="changed by another program"):
        commit_sidecar_plan(plan)
    assert rating(sidecar.read_bytes()) == "5"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_tag_names_are_refused_before_any_file_is_touched(tmp_path):
    for bad in ["AC/DC", ("rock|roll",), "animal||dog", "", " dog"]:
        with pytest.raises(TagNameError):
            machine_tag_path(bad)
    with pytest.raises(TagNameError, match="AC/DC"):
        machine_tag_path("music|AC/DC")
    with pytest.raises(TagNameError):
        machine_tag_path("dog", root_tag="AI/tags")
    assert machine_tag_path(("animal", "dog"), root_tag="AI|siglip") == (
        "AI",
        "siglip",
        "animal",
        "dog",
    )

    good, bad_photo = make_photo(tmp_path, "good.jpg"), make_photo(tmp_path, "bad.jpg")
    with pytest.raises(TagNameError):
        export_xmp([(good, ["animal|dog"]), (bad_photo, ["AC/DC"])], tmp_path / "export.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg", "good.jpg"]


def test_undo_without_a_manifest_says_so(tmp_path):
    with pytest.raises(ManifestError, match="nothing to undo"):
        undo_xmp(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ManifestError):
        export_xmp([], tmp_path / "other.json")


ROWS = [
    TagRow('/photos/Été, 2023/chat "noir".jpg', "AI|animal|cat", 0.8125, "siglip-base-patch16-224"),
    TagRow(
        '/photos/Été, 2023/chat "noir".jpg', "AI|scene|indoor", 0.1 + 0.2, "siglip-base-patch16-224"
    ),
    TagRow("/photos/日本/海.jpg", "AI|scene|beach", 1e-7, "siglip-base-patch16-224"),
]


def test_csv_round_trips_unicode_and_commas_in_paths(tmp_path):
    out = tmp_path / "tags.csv"
    write_csv(ROWS, out)

    with open(out, newline="", encoding="utf-8") as f:
        parsed = list(csv.DictReader(f))
    assert list(parsed[0]) == ["path", "tag", "score", "model"]
    assert [TagRow(r["path"], r["tag"], float(r["score"]), r["model"]) for r in parsed] == ROWS


def test_jsonl_round_trips_and_stdout_works(tmp_path, capsys):
    out = tmp_path / "tags.jsonl"
    write_jsonl(ROWS, out)

    lines = out.read_text(encoding="utf-8").splitlines()
    assert [TagRow(**json.loads(line)) for line in lines] == ROWS

    write_csv(ROWS, "-")
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["path"] for r in parsed] == [r.path for r in ROWS]


def test_exiftool_csv_has_one_line_per_photo(tmp_path):
    out = tmp_path / "exiftool.csv"
    rows = [TagRow(r.path, r.tag.removeprefix("AI|"), r.score, r.model) for r in ROWS]
    write_exiftool_csv(rows, out)

    with open(out, newline="", encoding="utf-8") as f:
        parsed = list(csv.DictReader(f))
    assert [r["SourceFile"] for r in parsed] == [
        '/photos/Été, 2023/chat "noir".jpg',
        "/photos/日本/海.jpg",
    ]
    assert parsed[0]["Keywords"] == "AI, animal, cat, scene, indoor" == parsed[0]["Subject"]
    assert parsed[1]["HierarchicalSubject"] == "AI, AI|scene, AI|scene|beach"
    with pytest.raises(TagNameError, match="exiftool"):
        write_exiftool_csv([TagRow("/a.jpg", "cat, domestic", 0.5, "m")], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_exiftool_csv_root_tag_with_a_comma_is_named_as_the_culprit(tmp_path):
    with pytest.raises(TagNameError, match=r"root tag 'A,B' contains ','.*--root-tag"):
        write_exiftool_csv(
            [TagRow("/a.jpg", "shape|star", 0.5, "m")], tmp_path / "x.csv", root_tag="A,B"
        )


# docs/export.md ("Tag export") documents this command; IPTC Keywords are Latin-1 unless told otherwise.
EXIFTOOL_IMPORT = ["exiftool", "-sep", ", ", "-charset", "iptc=UTF8", "-CodedCharacterSet=UTF8"]


def test_a_file_name_with_a_carriage_return_stays_one_row_for_csv_readers_and_exiftool(tmp_path):
    """Python before 3.12 leaves a lone CR unquoted when rows end in LF: readers would split the row."""
    odd, plain = tmp_path / "scan\r01.jpg", tmp_path / "海.jpg"
    for photo in (odd, plain):
        Image.new("RGB", (16, 16), "red").save(photo, "JPEG")
    rows = [TagRow(str(odd), "animal|cat", 0.5, "m"), TagRow(str(plain), "場所|海", 0.25, "m")]
    write_csv(rows, tmp_path / "tags.csv")
    with open(tmp_path / "tags.csv", newline="", encoding="utf-8") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [str(odd), str(plain)]
    table = tmp_path / "exiftool.csv"
    write_exiftool_csv(rows, table)
    with open(table, newline="", encoding="utf-8") as f:
        assert [r["SourceFile"] for r in csv.DictReader(f)] == [str(odd), str(plain)]
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed")
    readme = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text(
        encoding="utf-8"
    )
    assert 'exiftool -sep ", " -charset iptc=UTF8 -CodedCharacterSet=UTF8 -csv+=tags.csv' in readme
    run = subprocess.run(
        [*EXIFTOOL_IMPORT, f"-csv+={table}", "-overwrite_original", str(odd), str(plain)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "2 image files updated" in run.stdout + run.stderr, run.stderr
    read = subprocess.run(
        [
            "exiftool",
            "-j",
            "-charset",
            "iptc=UTF8",
            "-IPTC:Keywords",
            "-XMP:HierarchicalSubject",
            str(odd),
            str(plain),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = {Path(d["SourceFile"]).name: d for d in json.loads(read.stdout)}
    assert found[odd.name]["Keywords"] == ["AI", "animal", "cat"]
    assert found[plain.name]["Keywords"] == ["AI", "場所", "海"]  # not "???": IPTC written as UTF-8
    assert found[plain.name]["HierarchicalSubject"] == ["AI", "AI|場所", "AI|場所|海"]


def test_reexport_after_retagging_replaces_the_earlier_machine_keywords_and_keeps_the_users(
    tmp_path,
):
    photo = make_photo(tmp_path, "user.jpg")
    sidecar = tmp_path / "user.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")  # the user's own "dog" in dc:subject
    manifest = tmp_path / "export.json"
    export_xmp([(photo, ["animal|dog", "scene|beach"])], manifest)

    # Re-tagged: the dog was a cat, and the beach is gone.
    report = export_xmp([(photo, ["animal|cat"])], manifest)

    assert report.written[0].removed["lr:hierarchicalSubject"] == [
        "AI|animal|dog",
        "AI|scene",
        "AI|scene|beach",
    ]
    found = keywords(sidecar)
    assert found["dc:subject"] == ["dog", "AI", "animal", "cat"]  # the user's "dog" stays
    assert found["lr:hierarchicalSubject"] == ["dog", "AI", "AI|animal", "AI|animal|cat"]
    # with the copy of the user's keyword
    assert found["digiKam:TagsList"] == [
        "dog",
        "AI/animal/cat",
    ]
    assert "Red" in sidecar.read_text(encoding="utf-8")
    assert export_xmp([(photo, ["animal|cat"])], manifest).written == []  # now in step: no change

    undo_xmp(manifest)
    assert sidecar.read_text(encoding="utf-8") == DIGIKAM_SIDECAR


def test_whole_library_export_strips_photos_that_lost_all_their_tags(tmp_path):
    kept, untagged, users = (
        make_photo(tmp_path, n) for n in ("kept.jpg", "untagged.jpg", "user.jpg")
    )
    (tmp_path / "user.jpg.xmp").write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    manifest = tmp_path / "export.json"
    everything = [(kept, ["animal|dog"]), (untagged, ["animal|dog"]), (users, ["scene|beach"])]
    export_xmp(everything, manifest, every_photo=True)
    kept_bytes = (tmp_path / "kept.jpg.xmp").read_bytes()

    export_xmp([(kept, ["animal|dog"])], manifest)  # a partial export touches only what it names
    assert (tmp_path / "untagged.jpg.xmp").exists()

    report = export_xmp([(kept, ["animal|dog"])], manifest, every_photo=True)

    assert {c.path.name for c in report.written if c.deleted} == {"untagged.jpg.xmp"}
    assert not (tmp_path / "untagged.jpg.xmp").exists()  # we created it; nothing else was in it
    assert (tmp_path / "user.jpg.xmp").read_text(encoding="utf-8") == DIGIKAM_SIDECAR
    assert (tmp_path / "kept.jpg.xmp").read_bytes() == kept_bytes
    assert set(load_manifest(manifest)) == {tmp_path / "kept.jpg.xmp"}
    undo_xmp(manifest)
    assert not (tmp_path / "kept.jpg.xmp").exists()


def test_a_sidecar_without_write_permission_is_left_alone_even_for_root(tmp_path):
    photo = make_photo(tmp_path, "IMG_5.jpg")
    sidecar = tmp_path / "IMG_5.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    sidecar.chmod(0o444)

    report = export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    assert report.skipped == [(sidecar, "read-only; left untouched")]
    assert sidecar.read_text(encoding="utf-8") == DIGIKAM_SIDECAR


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give files away"
)
def test_a_rewritten_sidecar_keeps_its_owner_when_root_exports(tmp_path):
    photo = make_photo(tmp_path, "IMG_6.jpg")
    sidecar = tmp_path / "IMG_6.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    os.chown(sidecar, 65534, 65534)

    export_xmp([(photo, ["animal|dog"])], tmp_path / "export.json")

    assert "AI/animal/dog" in sidecar.read_text(encoding="utf-8")
    assert (sidecar.stat().st_uid, sidecar.stat().st_gid) == (65534, 65534)


def test_text_exports_write_into_pipes_and_refuse_folders_with_one_line(tmp_path):
    rows = [TagRow(str(tmp_path / "a.jpg"), "animal|dog", 0.9, "m")]
    with pytest.raises(OutputPathError, match="is a folder"):
        write_csv(rows, tmp_path)
    with pytest.raises(OutputPathError, match="does not exist"):
        write_csv(rows, tmp_path / "no such folder" / "tags.csv")
    if not hasattr(os, "mkfifo"):
        return
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_jsonl(rows, fifo)
        assert json.loads(os.read(reader, 4096))["tag"] == "animal|dog"
    finally:
        os.close(reader)
    assert fifo.is_fifo()  # still a pipe, not replaced by a regular file


def test_a_photo_moved_with_its_sidecar_keeps_its_export_record(tmp_path):
    photo = make_photo(tmp_path / "inbox", "IMG_9.jpg")
    (tmp_path / "inbox" / "IMG_9.jpg.xmp").write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    manifest = tmp_path / "export.json"
    export_xmp([(photo, ["animal|dog"])], manifest)
    (tmp_path / "2024").mkdir()
    for name in ("IMG_9.jpg", "IMG_9.jpg.xmp"):  # the user files the photo, sidecar and all
        (tmp_path / "inbox" / name).rename(tmp_path / "2024" / name)
    moved, sidecar = tmp_path / "2024" / "IMG_9.jpg", tmp_path / "2024" / "IMG_9.jpg.xmp"

    report = export_xmp([(moved, ["animal|cat"])], manifest)  # re-tagged meanwhile

    assert report.written[0].removed["digiKam:TagsList"] == ["AI/animal/dog"]
    assert keywords(sidecar)["digiKam:TagsList"] == ["dog", "AI/animal/cat"]
    assert set(load_manifest(manifest)) == {sidecar}
    sidecar.rename(tmp_path / "inbox" / "IMG_9.jpg.xmp")  # and back, photo too: undo still finds it
    moved.rename(photo)
    undo = undo_xmp(manifest, photos=[photo])
    assert (
        undo.missing == []
        and (tmp_path / "inbox" / "IMG_9.jpg.xmp").read_text(encoding="utf-8") == DIGIKAM_SIDECAR
    )
