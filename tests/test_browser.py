"""What a visitor sees, in a real browser (Debian's headless Chromium driven by Playwright)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium_page, demo_zoo_dir, screenshot, served

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"),
]


@pytest.fixture(scope="module")
def zoo() -> Path:
    return demo_zoo_dir()


def test_parents_tab_shows_both_demo_parents_with_architecture_and_accuracies(zoo, monkeypatch):
    from darwin_core.zoo.build import load_zoo_manifest
    from ui.app import build_demo, launch_kwargs

    monkeypatch.delenv("SPACE_ID", raising=False)
    manifest = load_zoo_manifest(zoo)
    father, mother = manifest["models"]["father"], manifest["models"]["mother"]
    kwargs = {k: v for k, v in launch_kwargs().items() if k != "server_name"}
    with served(build_demo(zoo_dir=zoo, local_mode=True), **kwargs) as url, chromium_page(url) as page:
        facts = page.locator("#parents-facts")
        # The table is filled by the page's load event; wait for the demo parents' names to arrive.
        facts.get_by_text("demo mother").first.wait_for()
        text = facts.inner_text()
        assert "demo father" in text and "demo mother" in text
        assert father["architecture"] in text and mother["architecture"] in text
        for skill in manifest["skills"]:
            assert f"Held-out accuracy: {skill}" in text
            for entry in (father, mother):
                assert f"{100 * entry['heldout_accuracy'][skill]:.1f}%" in text
        verdict = page.locator("#parents-verdict").inner_text()
        assert re.search(r"\w", verdict), "the compatibility verdict is shown"
        assert page.locator("#parents-error").inner_text().strip() == ""
        for tab in ("MRI", "Evolve", "Health", "Publish", "Runs"):
            assert page.get_by_role("tab", name=tab).count() == 1
        path = screenshot(page, "parents")
        assert path.stat().st_size > 10_000

        # A mother that does not exist: one visible sentence, no stack trace; the picks stay as they were.
        page.locator("#mother-typed textarea, #mother-typed input").first.fill("/nonexistent/model")
        page.locator("#mother-typed textarea, #mother-typed input").first.press("Enter")
        error = page.locator("#parents-error")
        error.get_by_text("does not exist").wait_for()
        assert "Traceback" not in error.inner_text() and "/nonexistent/model" in error.inner_text()
        screenshot(page, "parents-error")
