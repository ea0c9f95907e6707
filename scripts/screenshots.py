"""Remake the README's screenshot of the web app: docs/images/search.png.

Builds the demo library in a temporary folder, serves it on 127.0.0.1, opens the page in headless
Chromium (Debian's `chromium` + `chromium-driver` through selenium, as the browser test does:
`bash scripts/setup.sh --dev` installs them), runs a text search and saves the window.

    python scripts/screenshots.py [--query "a red heart"] [--out docs/images/search.png]

Offline, about a minute. The PNG is reduced to a 256-colour palette to keep the repository small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WINDOW = (1400, 1000)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def siglip_search(*args: str) -> list[str]:
    """The command run by this Python, so the checkout on sys.path is the one pictured."""
    return [sys.executable, "-m", "siglip_search", *args]


def wait_for_page(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"screenshots: the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"screenshots: {url} did not answer within {timeout:.0f} s")


def shoot(url: str, query: str, out: Path, profile: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        sys.exit(
            "screenshots: install Debian's chromium and chromium-driver (bash scripts/setup.sh --dev)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea, #query input"))
        box.send_keys(query, Keys.ENTER)

        def loaded_thumbnails(d):
            images = d.find_elements(By.CSS_SELECTOR, "#results img")
            ok = [
                im
                for im in images
                if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
            ]
            return ok if len(ok) >= 6 else False

        wait.until(loaded_thumbnails)
        wait.until(lambda d: query in d.find_element(By.ID, "results-summary").text)
        time.sleep(1)  # let the gallery finish its layout
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def shrink(path: Path) -> None:
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", default="a red heart")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "search.png")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryDirectory(prefix="siglip-screenshots-") as tmp:
        library = Path(tmp) / "demo-library"
        subprocess.run(
            siglip_search("demo", "--no-serve", "--no-progress", "--library", str(library)),
            check=True,
            env=env,
        )
        port = free_port()
        server = subprocess.Popen(
            siglip_search("serve", "--library", str(library), "--port", str(port)),
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_page(url, server)
            shoot(url, args.query, args.out, Path(tmp) / "profile")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    shrink(args.out)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
