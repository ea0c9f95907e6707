"""The web UI as a user and an attacker meet it: a real server on a free port over a real library,
called through gradio_client and plain HTTP, and a real headless Chromium.

The library is the demo model over data/samples when the checkout has them (then meaning is
checked: "red" finds a red sample first); otherwise a tiny random checkpoint over generated photos
(then only what does not depend on meaning is checked).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from indexer_fixtures import draw_photo, make_photo_folder, png_header_only
from PIL import Image

from indexer.vocabulary import DEFAULT_VOCABULARY_PATH
from ui.demo import build_demo_library
from ui.options import ServeOptions
from ui.server import gradio_temp_dir, launch
from ui.state import load_state

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "data" / "models" / "siglip-demo"
SAMPLES = REPO / "data" / "samples"
HAVE_DEMO = (DEMO_MODEL / "model.safetensors").is_file() and (SAMPLES / "captions.jsonl").is_file()
ARTIFACTS = REPO / "test-artifacts"
SECRET = "siglip-search-canary-7f3a"  # content of files that must never come back
MAX_UPLOAD_BYTES = 1 << 20
SAMPLE_COUNT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The photo folder of the library: the samples (copied: the test writes beside them) or generated."""
    root = tmp_path_factory.mktemp("photos") / "Pictures"
    if HAVE_DEMO:  # the first SAMPLE_COUNT samples: every colour several times, a quicker index
        root.mkdir()
        for name in sorted(sample_objects())[:SAMPLE_COUNT]:
            shutil.copy2(SAMPLES / name, root / name)
    else:
        make_photo_folder(root, n=12)
    (root / "private-notes.txt").write_text(SECRET)  # inside the root, never indexed
    return root


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    return DEMO_MODEL if HAVE_DEMO else request.getfixturevalue("tiny_checkpoint")


@pytest.fixture(scope="module")
def vocabulary_file(tmp_path_factory) -> Path:
    """The bundled vocabulary's colour and shape tags: the same format, a fraction of the prompts
    to embed (the whole vocabulary takes 10-20 s on 2 cores)."""
    lines = DEFAULT_VOCABULARY_PATH.read_text().splitlines()
    path = tmp_path_factory.mktemp("vocabulary") / "shapes.txt"
    path.write_text(
        "\n".join(line for line in lines if line.startswith(("colour|", "shape|"))) + "\n"
    )
    return path


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory, photos, model_dir, vocabulary_file) -> Path:
    """Built the way `siglip-search demo` builds its library: indexed, tagged, thumbnailed."""
    folder = tmp_path_factory.mktemp("library")
    build_demo_library(
        folder, samples=photos, model=model_dir, vocabulary=vocabulary_file, progress=False
    )
    return folder


@pytest.fixture(scope="module")
def server(library_dir, vocabulary_file):
    state = load_state(library_dir, max_pixels=40_000_000, vocabulary=vocabulary_file)
    app, url = launch(
        state, ServeOptions(port=free_port(), quiet=True, max_upload="1mb"), block=False
    )
    yield state, url
    app.close()
    state.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[1], verbose=False, analytics_enabled=False)


def search(
    client: Client,
    query: str,
    *,
    min_score=0.0,
    count=12,
    folder="",
    date_from="",
    date_to="",
    sort="best match",
):
    return client.predict(
        query, min_score, count, folder, date_from, date_to, sort, api_name="/search"
    )


def sample_objects() -> dict[str, list[dict]]:
    lines = (SAMPLES / "captions.jsonl").read_text().splitlines()
    return {rec["file"]: rec["objects"] for rec in map(json.loads, filter(None, lines))}


# --- search ---------------------------------------------------------------------------------------


def test_text_search_fills_a_gallery_of_thumbnails_captioned_with_probabilities(
    client, library_dir
):
    gallery, summary, hits = search(client, "a red circle", count=5)[:3]
    assert len(gallery) == len(hits) == 5
    assert summary.startswith("**5 photos** for “a red circle”")
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for item, hit in zip(gallery, hits, strict=True):
        assert item["caption"].endswith(" · " + Path(hit["rel_path"]).name)
        assert "%" in item["caption"]
        with Image.open(item["image"]) as im:  # a small generated thumbnail, not the original
            assert im.format == "JPEG" and max(im.size) <= 320


def test_the_camera_and_gps_options_filter_and_old_clients_without_them_still_search(client):
    """The options the page gained come last: a client passing the first seven still searches."""
    assert len(search(client, "a red circle", count=3)[2]) == 3
    args = ("a red circle", 0.0, 3, "", "", "", "best match")
    hits = client.predict(*args, "no such camera", "", False, api_name="/search")[2]
    assert hits == []
    hits = client.predict(*args, "", "", True, api_name="/search")[2]
    assert hits == []  # the generated photos have no GPS position


@pytest.mark.skipif(
    not HAVE_DEMO, reason="needs the demo model and data/samples (meaningful ranking)"
)
@pytest.mark.parametrize("query", ["red", "a red shape"])
def test_red_finds_a_red_sample_first(client, query):
    hits = search(client, query, count=3)[2]
    objects = sample_objects()[Path(hits[0]["rel_path"]).name]
    assert any(obj["colour"] == "red" for obj in objects), (query, hits[0]["rel_path"], objects)


def test_image_search_with_an_indexed_photo_returns_that_photo_first(client, photos):
    photo = sorted(p for p in photos.rglob("*.jpg"))[0]
    gallery, summary, hits = client.predict(
        handle_file(str(photo)), 0.0, 3, "", "", "", "best match", api_name="/search_image"
    )[:3]
    assert Path(hits[0]["file"]) == photo.resolve()
    assert hits[0]["cosine"] > 0.99
    assert "your picture" in summary


def test_more_like_this_starts_from_an_indexed_photo_and_leaves_it_out(client):
    first = search(client, "blue", count=1)[2][0]
    gallery, summary, hits = client.predict(
        first["id"], 0.0, 4, "", "", "", "best match", api_name="/more_like_this"
    )[:3]
    assert len(hits) == 4 and first["id"] not in [h["id"] for h in hits]
    # markdown-escaped
    assert "photos like " + Path(first["rel_path"]).name.replace("_", "\\_") in summary


def test_options_cut_off_sort_and_count(client):
    assert "No photos" in search(client, "red", min_score=1.0)[1]
    assert len(search(client, "red", count=3)[2]) == 3
    by_date = search(client, "red", count=5, sort="newest first")
    assert "newest first" in by_date[1]


def test_a_query_shows_literally_in_the_summary_and_the_hint_at_the_most_results_is_one_that_works(
    client,
):
    summary = search(client, "**red** <img src=x> [a](http://x)", count=100)[1]
    assert "“\\*\\*red\\*\\* \\<img src=x\\> \\[a\\]\\(http://x\\)”" in summary
    assert "**100 photos**" in summary and "raise the minimum probability" in summary


def test_status_shows_the_library(client, photos):
    status = client.predict(api_name="/status")
    assert "photos** indexed" in status and f"`{photos.resolve()}` | online" in status


def test_building_the_page_writes_nothing_into_the_source_tree(server):
    assert not list((REPO / "ui").glob("*.pyi"))  # Gradio does for Component subclasses


# --- tagging --------------------------------------------------------------------------------------


def test_tagging_an_upload_gives_an_independent_probability_per_label(client, photos):
    photo = sorted(photos.rglob("*.jpg"))[0]
    result, summary = client.predict(
        handle_file(str(photo)), "red, blue, green, circle, Red", False, api_name="/tag_image"
    )
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert set(confidences) == {"red", "blue", "green", "circle"}
    assert all(0 <= p <= 1 for p in confidences.values())
    if HAVE_DEMO:
        colour = sample_objects()[photo.name][0]["colour"]
        assert (
            max(("red", "blue", "green"), key=confidences.get) == colour
            or colour not in confidences
        )


def test_tagging_with_the_vocabulary_scores_every_tag_and_the_typed_labels(
    client, photos, vocabulary_file
):
    photo = sorted(photos.rglob("*.jpg"))[0]
    result, _ = client.predict(handle_file(str(photo)), "my own label", True, api_name="/tag_image")
    labels = {c["label"] for c in result["confidences"]}
    tags = {line.split(" ")[0] for line in vocabulary_file.read_text().splitlines()}
    assert labels == (tags | {"my own label"}) or (
        len(labels) == 20 and labels < tags | {"my own label"}
    )
    assert all(0 <= c["confidence"] <= 1 for c in result["confidences"])


# --- errors are messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: search(c, "   "), "Type something"),
        (lambda c: search(c, "red", date_from="last summer"), "YYYY-MM-DD"),
        (lambda c: search(c, "red", folder="/etc"), "not under a registered root"),
        (lambda c: search(c, "red + /etc/passwd"), "looks like a file on the server"),
        (
            lambda c: search(c, "red + /nowhere/x.jpg"),
            "looks like a file on the server",
        ),  # same answer: no oracle
        (lambda c: c.predict(None, "red", False, api_name="/tag_image"), "Upload, paste or drop"),
        (
            lambda c: c.predict(None, 0.0, 3, "", "", "", "best match", api_name="/more_like_this"),
            "Click a photo",
        ),
        (
            lambda c: c.predict(
                987654, 0.0, 3, "", "", "", "best match", api_name="/more_like_this"
            ),
            "no indexed photo",
        ),
    ],
)
def test_bad_input_is_a_clear_message(client, call, message):
    with pytest.raises(AppError, match=message):
        call(client)


def test_a_file_that_is_not_a_picture_is_refused_by_name(client, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is a text file, not a photo")
    with pytest.raises(AppError, match="not a picture"):
        client.predict(
            handle_file(str(notes)), 0.0, 3, "", "", "", "best match", api_name="/search_image"
        )


def test_a_decompression_bomb_is_refused(client, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(40_000, 40_000))  # 1.6 gigapixels in a few bytes
    with pytest.raises(AppError, match="too many pixels|decompression bomb"):
        client.predict(
            handle_file(str(bomb)), 0.0, 3, "", "", "", "best match", api_name="/search_image"
        )


def test_uploads_are_capped_and_land_in_gradios_temp_folder_never_beside_the_photos(
    server, client, photos, tmp_path
):
    before = {p for p in photos.rglob("*")}
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(MAX_UPLOAD_BYTES + 1000))
    response = httpx.post(
        server[1] + "gradio_api/upload", files={"files": ("big.png", big.read_bytes())}
    )
    assert response.status_code == 413, response.text
    photo = draw_photo(3)
    small = tmp_path / "upload.png"
    photo.save(small)
    response = httpx.post(
        server[1] + "gradio_api/upload", files={"files": ("../../../evil.png", small.read_bytes())}
    )
    assert response.status_code == 200
    stored = Path(response.json()[0]).resolve()
    assert gradio_temp_dir() in stored.parents and stored.name == "evil.png"
    assert {p for p in photos.rglob("*")} == before


# --- what the file routes serve ---------------------------------------------------------------------


def raw_request(url: str, method: str, path: str) -> tuple[int, bytes]:
    """Send `path` exactly as written: httpx (like browsers) would resolve `..` segments before
    sending, so a traversal would never reach the server as one. Dropped requests count as refused."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, quote(path, safe="/=%?:&~'"))
        response = connection.getresponse()
        return response.status, response.read()
    except (http.client.HTTPException, OSError):
        return 599, b""
    finally:
        connection.close()


EVENT_STREAMS = ("/heartbeat/", "/call/")  # server-sent event streams of a session: no files


def _file_routes(url: str) -> list[str]:
    """Every GET route of this Gradio version with a parameter in its path, as templates (read from
    its OpenAPI schema, so routes a new Gradio adds are probed too), less the event streams."""
    spec = httpx.get(url + "openapi.json").json()
    return [
        path
        for path, operations in spec["paths"].items()
        if "get" in operations and "{" in path and not any(s in path for s in EVENT_STREAMS)
    ]


def _fill(template: str, value: str) -> str:
    """Put `value` in the last parameter (the path-like one), harmless values in the others."""
    start = template.rindex("{")
    head, tail = template[:start], template[template.index("}", start) + 1 :]
    head = head.replace("{environment}", "client")
    while "{" in head:
        open_, close = head.index("{"), head.index("}")
        head = head[:open_] + "1" + head[close + 1 :]
    return head + value + tail


def test_only_thumbnails_come_out_of_the_file_routes(server, client, photos, tmp_path_factory):
    state, url = server
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text(SECRET)
    indexed = sorted(photos.rglob("*.jpg"))[0].resolve()
    attacks = {
        "/etc/passwd": "root:",
        "../../../../../../etc/passwd": "root:",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd": "root:",
        str(state.thumbnails.folder) + "/../../../../../../../etc/passwd": "root:",
        str(outside): SECRET,
        str(photos / "private-notes.txt"): SECRET,  # inside a root, not indexed
        str(photos / ".." / photos.name / "private-notes.txt"): SECRET,
        str(state.library_dir / "library.db"): "SQLite format 3",
        str(state.thumbnails.folder / ".." / "library.db"): "SQLite format 3",
        str(indexed): None,  # even an indexed original: only thumbnails are served
    }
    routes = _file_routes(url)
    assert "/gradio_api/file={path_or_url}" in routes and "/gradio_api/file/{path}" in routes
    routes += ["/file={path}", "/file/{path}", "/gradio_api/vibe-code?{path}"]
    original = indexed.read_bytes()
    checked = 0
    for route in routes:
        for attack, canary in attacks.items():
            for method in ("GET", "HEAD"):
                status, body = raw_request(url, method, _fill(route, attack))
                leaked = (canary is not None and canary.encode() in body) or (
                    canary is None and body == original
                )
                assert not leaked and status >= 400, (method, route, attack, status)
                checked += 1
    assert checked >= 2 * 10 * 15
    # The control, sent the same way: a thumbnail of a search result is served.
    hit = search(client, "red", count=1)[2][0]
    status, body = raw_request(
        url, "GET", f"/gradio_api/file={state.thumbnails.path_for(hit['id'])}"
    )
    assert status == 200 and body.startswith(b"\xff\xd8")  # a JPEG


def test_a_client_cannot_make_the_server_read_a_file_by_naming_it(server):
    url = server[1]
    payload = {
        "data": [
            {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
            0,
            3,
            "",
            "",
            "",
            "best match",
        ]
    }
    event = httpx.post(url + "gradio_api/call/search_image", json=payload).json()["event_id"]
    stream = httpx.get(url + f"gradio_api/call/search_image/{event}", timeout=30).text
    assert "event: error" in stream and "root:" not in stream


# --- a password, and a library started from the page ----------------------------------------------


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory, model_dir, vocabulary_file):
    """A second server: password-protected, over a folder that holds no library yet."""
    state = load_state(
        tmp_path_factory.mktemp("new-library"), model=model_dir, vocabulary=vocabulary_file
    )
    app, url = launch(
        state, ServeOptions(port=free_port(), quiet=True, auth=("anna", "s3cret:pw")), block=False
    )
    yield state, url
    app.close()
    state.close()


def test_a_password_keeps_strangers_out_and_lets_the_owner_in(locked_server):
    url = locked_server[1]
    assert httpx.get(url + "config").status_code == 401
    assert httpx.get(url + "gradio_api/file=/etc/passwd").status_code == 401
    assert (
        httpx.post(url + "login", data={"username": "anna", "password": "wrong"}).status_code == 400
    )
    with pytest.raises(Exception, match="(?i)login|auth|credentials|401"):
        Client(url, verbose=False, analytics_enabled=False)
    with pytest.raises(Exception, match="(?i)login|auth|credentials|401|incorrect"):
        Client(url, auth=("anna", "wrong"), verbose=False, analytics_enabled=False)
    owner = Client(url, auth=("anna", "s3cret:pw"), verbose=False, analytics_enabled=False)
    assert "No library yet" in owner.predict(api_name="/status")


def test_a_new_library_is_indexed_from_the_page_with_progress_and_then_searched(
    locked_server, tmp_path
):
    state, url = locked_server
    owner = Client(url, auth=("anna", "s3cret:pw"), verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="No library"):
        owner.predict("red", 0.0, 5, "", "", "", "best match", api_name="/search")
    folder = tmp_path / "new photos"
    folder.mkdir()
    for i in range(5):
        draw_photo(i).save(folder / f"photo {i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    summary, status_md, folder_filter = owner.predict(str(folder), api_name="/index")
    assert str(folder.resolve()) in str(folder_filter)  # the search tab's folder filter offers it
    assert "added 5" in summary and "failed 1" in summary
    assert "**5 photos** indexed · 1 failed" in status_md and "broken.jpg" in status_md
    hits = owner.predict("red", 0.0, 5, "", "", "", "best match", api_name="/search")[2]
    assert len(hits) == 5 and all(Path(h["file"]).parent == folder.resolve() for h in hits)
    # A tiny threshold: each photo keeps its best 10 tags (these drawn photos lie outside
    # the demo model's world, where its probabilities fall below 1e-6).
    tagged, status_md = owner.predict(1e-12, api_name="/tag_library")
    assert tagged.startswith("Done: tagged 5 photos"), tagged
    assert not list(folder.glob("*.xmp"))
    preview, _ = owner.predict("XMP sidecars", "AI", 0.0, True, api_name="/export")
    planned = int(re.match(r"\*\*(\d+) sidecars would change\*\*", preview)[1])
    assert 1 <= planned <= 5 and "Nothing was written" in preview and "AI\\|" in preview
    assert not list(folder.glob("*.xmp"))  # a dry run writes nothing
    written, _ = owner.predict("XMP sidecars", "AI", 0.0, False, api_name="/export")
    assert (
        f"**{planned} sidecars changed**" in written and len(list(folder.glob("*.xmp"))) == planned
    )
    undone, _ = owner.predict(False, api_name="/undo_export")
    assert f"**{planned} sidecars undone**" in undone and not list(folder.glob("*.xmp"))
    message, download = owner.predict("CSV", "AI", 0.0, True, api_name="/export")
    download = download["value"] if isinstance(download, dict) else download  # a gr.update() output
    rows = Path(download).read_text().splitlines()
    assert (
        rows[0] == "path,tag,score,model"
        and len(rows) > planned
        and f"of {planned} photos" in message
    )


# --- a real browser --------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian packages chromium and chromium-driver are not installed (scripts/setup.sh --dev)",
)
def test_a_browser_types_a_query_sees_the_gallery_and_opens_a_result(server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(server[1])
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea, #query input"))
        box.send_keys("a red circle", Keys.ENTER)

        def loaded_thumbnails(d):
            images = d.find_elements(By.CSS_SELECTOR, "#results img")
            ok = [
                im
                for im in images
                if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
            ]
            return ok if len(ok) >= 3 else False

        thumbnails = wait.until(loaded_thumbnails)
        assert "photos" in driver.find_element(By.ID, "results-summary").text
        driver.save_screenshot(str(ARTIFACTS / "ui-search.png"))
        thumbnails[0].click()
        details = wait.until(
            lambda d: (
                d.find_element(By.ID, "selected").is_displayed()
                and d.find_element(By.ID, "selected")
            )
        )
        wait.until(lambda d: "probability" in details.text)
        assert "More like this" in details.text and "tags:" in details.text
        driver.execute_script("arguments[0].scrollIntoView()", details)
        driver.save_screenshot(str(ARTIFACTS / "ui-selected.png"))
        for tab, expected in (
            ("Tag an image", "Candidate labels"),
            ("Library", "photos** indexed"),
        ):
            driver.execute_script("window.scrollTo(0, 0)")
            next(
                b
                for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                if b.text.strip() == tab
            ).click()
            expected = expected.replace("**", "")
            wait.until(
                lambda d, expected=expected: expected in d.find_element(By.TAG_NAME, "body").text
            )
            driver.save_screenshot(str(ARTIFACTS / f"ui-{tab.split()[0].lower()}.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # a JavaScript error means a tab did not render
    finally:
        driver.quit()
