"""Helpers to serve the app on a free localhost port and look at it with Debian's headless Chromium.

Imported by the app and browser tests (not a test module itself). The server runs in this process's threads
(`launch(prevent_thread_lock=True)`), or as `python app.py` in a subprocess when a test needs the real entry
point; Chromium is the system one at /usr/bin/chromium (CI installs it), driven by Playwright.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it), so parallel test runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(demo: Any, **launch_kwargs: Any) -> Iterator[str]:
    """Launch a Blocks in background threads on a free port; yield its URL; close it afterwards."""
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def wait_for_http(url: str, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll until `url` answers 200; fail early (with the reason) if the serving process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def app_process(log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[str]:
    """Run `python app.py` (the real entry point, off-Space) on a free port; yield its URL; stop it afterwards."""
    port = free_port()
    child_env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", **(env or {})}
    child_env.pop("SPACE_ID", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            try:
                wait_for_http(url, timeout=timeout, process=process)
            except (RuntimeError, TimeoutError) as error:
                raise RuntimeError(f"{error}; app log:\n{log_path.read_text(errors='replace')[-3000:]}") from error
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def chromium_page(url: str, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium, already at `url` (page fully loaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="load")
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/screenshots/ (gitignored) for a human to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def demo_zoo_dir() -> Path:
    """The shipped demo zoo (assets/zoo), which the UI tests show."""
    from darwin_core.zoo import build as zoo

    if not (zoo.DEFAULT_ZOO_DIR / zoo.MANIFEST).is_file():
        raise FileNotFoundError(f"{zoo.DEFAULT_ZOO_DIR / zoo.MANIFEST} is missing: the demo zoo ships with the repository")
    return zoo.DEFAULT_ZOO_DIR
