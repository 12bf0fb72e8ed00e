"""The Parents tab on a cross-architecture pair in a real browser (Debian's headless Chromium driven by
Playwright, as tests/test_flow_browser.py): a Gemma 4 father and a Qwen3.5 GatedDeltaNet mother typed as
folders show the FFN-only verdict and the layer-map picture, father layer → mother layer at the same depth."""

from __future__ import annotations

import re

import pytest

from tests.browser import CHROMIUM, chromium_page, demo_zoo_dir, screenshot, served

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"),
]

LAYER_MAP_JS = """() => {
  const el = document.querySelector('#parents-layer-map .js-plotly-plot');
  if (!el || !el.data) return null;
  return el.data.map(t => ({name: t.name || '', x: Array.from(t.x || []), y: Array.from(t.y || [])}));
}"""


def _fill(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(value)
    field.press("Tab")


def test_a_cross_architecture_pair_shows_the_ffn_only_verdict_and_the_layer_map(tmp_path, monkeypatch):
    from darwin_core.testing.fixtures import write_tiny_model
    from ui.app import build_demo, launch_kwargs

    monkeypatch.delenv("SPACE_ID", raising=False)
    father = write_tiny_model("gemma4_text", tmp_path / "father", seed=0)
    mother = write_tiny_model("qwen3_5_text", tmp_path / "mother", seed=1, overrides={"num_hidden_layers": 6})
    kwargs = {k: v for k, v in launch_kwargs().items() if k != "server_name"}
    demo = build_demo(runs_dir=tmp_path / "runs", zoo_dir=demo_zoo_dir(), local_mode=True)
    with served(demo, **kwargs) as url, chromium_page(url) as page:
        page.locator("#parents-verdict").get_by_text(re.compile("Breedable|Not breedable")).first.wait_for()
        _fill(page, "father-typed", str(father))
        _fill(page, "mother-typed", str(mother))
        page.locator("#inspect-parents").click()
        page.locator("#parents-verdict").get_by_text(re.compile("feed-forward only")).first.wait_for(timeout=60_000)
        # the queue's status line ("queue: 1/1 | 0.1s") sits above the verdict while any event that writes it runs,
        # so the verdict is read in the same snapshot that shows it settled
        settled = page.wait_for_function(
            "() => { const t = document.querySelector('#parents-verdict').innerText.trim();"
            " return t.startsWith('Breedable, feed-forward only') ? t : null; }", timeout=60_000)
        verdict = settled.json_value()
        assert "attention stays the father's" in verdict
        page.locator("#parents-layer-map .js-plotly-plot").wait_for(timeout=60_000)
        page.wait_for_function(f"() => ({LAYER_MAP_JS})() !== null")
        traces = page.evaluate(LAYER_MAP_JS)
        bred = next(t for t in traces if t["name"].startswith("FFN bred"))
        assert bred["x"] == [0, 1, 2, 3] and bred["y"] == [0, 2, 3, 5]
        screenshot(page, "parents-cross-arch-layer-map")
