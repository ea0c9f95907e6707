"""A keyword the user deleted in their photo manager stays deleted: the next export finds it missing
from the sidecar, records it as rejected in the library, never writes it again and leaves the
photo's other tags alone; `tag` never proposes it again; clearing the rejections brings it back."""

from __future__ import annotations

import json
import re

from indexer_fixtures import draw_photo

from indexer.export import export_library_xmp, undo_library_xmp
from indexer.jobs import index_paths
from indexer.status import library_status
from siglip_search.cli import main


def _remove_keyword(sidecar, leaf: str) -> None:
    """What digiKam, darktable and Lightroom do when the user deletes a keyword: every list loses it."""
    text = sidecar.read_text(encoding="utf-8")
    text = re.sub(rf"\s*<rdf:li>(AI/animal/{leaf}|AI\|animal\|{leaf}|{leaf})</rdf:li>", "", text)
    sidecar.write_text(text, encoding="utf-8")


def test_a_keyword_removed_in_a_photo_manager_stays_removed(tmp_path, library, embedder):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("a.jpg", "b.jpg")):
        draw_photo(i).save(photos / name)
    index_paths(library, [photos], embedder, progress=False)
    ids = {r.rel_path: r.id for r in library.store.iter_images()}
    tags = {
        i: [("animal|dog", 0.9), ("animal|cat", 0.4), ("scene|beach", 0.3)] for i in ids.values()
    }
    library.store.replace_machine_tags(tags, embedder.model_id, "v1")
    export_library_xmp(library)
    sidecar = photos / "a.jpg.xmp"
    _remove_keyword(sidecar, "dog")  # the user deletes the wrong "dog" of a.jpg in digiKam

    dry = export_library_xmp(library, dry_run=True)
    assert dry.rejected == [(photos / "a.jpg", ("AI", "animal", "dog"))]
    assert library.store.rejected_tags() == {}  # a dry run records nothing
    report = export_library_xmp(library)

    assert report.rejected == [(photos / "a.jpg", ("AI", "animal", "dog"))]
    assert library.store.rejected_tags() == {ids["a.jpg"]: {"animal|dog"}}
    text = sidecar.read_text(encoding="utf-8")
    assert "AI/animal/dog" not in text and "AI|animal|dog" not in text
    assert "AI/animal/cat" in text and "AI|scene|beach" in text  # its other tags stay
    # other photos keep it
    assert "AI/animal/dog" in (photos / "b.jpg.xmp").read_text(encoding="utf-8")
    # Tagging again proposes it; the library leaves it out, and exports never bring it back.
    library.store.replace_machine_tags(tags, embedder.model_id, "v2")
    again = export_library_xmp(library)
    assert again.rejected == [] and "AI/animal/dog" not in sidecar.read_text(encoding="utf-8")
    assert library_status(library).rejected_tags == 1
    # Undo takes back what exports added; the user's decision stays in the library.
    undo_library_xmp(library)
    assert library.store.rejected_tags() == {ids["a.jpg"]: {"animal|dog"}}
    assert library.store.clear_rejections() == 1
    library.store.replace_machine_tags(tags, embedder.model_id, "v3")
    export_library_xmp(library)
    assert "AI/animal/dog" in sidecar.read_text(encoding="utf-8")


def test_lightroom_removing_a_keyword_from_its_lists_only_counts_too(tmp_path, library, embedder):
    """Lightroom rewrites dc:subject and lr:hierarchicalSubject but not digiKam's TagsList: a tag gone
    from a list it was written to is a rejection, and the export takes its TagsList entry back."""
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_photo(3).save(photos / "IMG_1.jpg")
    index_paths(library, [photos], embedder, progress=False)
    (image_id,) = [r.id for r in library.store.iter_images()]
    library.store.replace_machine_tags(
        {image_id: [("animal|dog", 0.9), ("scene|beach", 0.3)]}, "m", "v1"
    )
    export_library_xmp(library)
    sidecar = photos / "IMG_1.jpg.xmp"
    text = sidecar.read_text(encoding="utf-8")
    sidecar.write_text(text.replace("<rdf:li>AI|animal|dog</rdf:li>", ""), encoding="utf-8")

    export_library_xmp(library)

    assert library.store.rejected_tags() == {image_id: {"animal|dog"}}
    text = sidecar.read_text(encoding="utf-8")
    assert "AI/animal/dog" not in text and "AI|scene|beach" in text


def test_tag_lists_the_rejections_and_forgets_those_of_one_tag_or_all(
    tmp_path, library, embedder, capsys
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("a.jpg", "b.jpg")):
        draw_photo(i).save(photos / name)
    index_paths(library, [photos], embedder, progress=False)
    ids = {r.rel_path: r.id for r in library.store.iter_images()}
    library.store.reject_tags([(ids["a.jpg"], "animal|dog"), (ids["b.jpg"], "animal|dog")])
    library.store.reject_tags([(ids["b.jpg"], "scene|beach")], source="user")
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("animal|dog\nscene|beach\n", encoding="utf-8")
    lib = ["--library", str(library.path)]

    assert main(["tag", "--rejections", *lib]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        [str(photos / "a.jpg"), "animal|dog"],
        [str(photos / "b.jpg"), "animal|dog"],
        [str(photos / "b.jpg"), "scene|beach"],
    ]
    assert "removed from its sidecar" in lines[0] and "rejected in the app" in lines[2]
    assert "3 rejected tags on 2 photos" in err
    assert main(["tag", "--rejections", "--json", *lib]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["tag"], d["source"]) for d in document] == [
        (ids["a.jpg"], "animal|dog", "sidecar"),
        (ids["b.jpg"], "animal|dog", "sidecar"),
        (ids["b.jpg"], "scene|beach", "user"),
    ]
    assert document[0]["rejected_at"].endswith("+00:00")

    # Forgetting one tag (named by its last part) leaves the others, and re-tags every photo.
    common = ["--vocabulary", str(vocabulary), "--threshold", "0.0001", "--no-progress", *lib]
    assert main(["tag", "--clear-rejections", "dog", *common]) == 0
    out = capsys.readouterr().out
    assert "forgot 2 rejected tags; every photo was tagged again" in out
    assert "1 you rejected left out" in out  # b.jpg's beach
    assert library.store.rejected_tags() == {ids["b.jpg"]: {"scene|beach"}}
    tagged = {(r.image_id, r.tag) for r in library.store.iter_tags()}
    assert (ids["a.jpg"], "animal|dog") in tagged and (ids["b.jpg"], "scene|beach") not in tagged
    assert main(["tag", "--clear-rejections", *common]) == 0
    assert "forgot 1 rejected tags" in capsys.readouterr().out
    assert library.store.rejected_tags() == {}
