"""The whole breeding flow in a real browser (Debian's headless Chromium driven by Playwright), on the demo parents.

compatibility shown → MRI pictures render → a small evolution starts and its curve gains points while the test
watches → the page is reloaded mid-run and the curve is still there → the run finishes → health verdict and
held-out table → the card names both parents and carries the measured numbers → "save locally" gives a folder
that transformers loads. Every tab is screenshotted into test-artifacts/screenshots/.

Two budgets: `fast` breeds on an uploaded 60-item multiple-choice task (log-likelihood scoring, seconds per
generation); `demo` (slow) on the demo zoo's four generative skills with the page's default items.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium_page, demo_zoo_dir, screenshot, served

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"),
]

WORDS = ["".join(chr(97 + (i * 7 + k * 3) % 26) for k in range(3 + i % 3)) for i in range(60)]
POINTS_JS = """() => {
  const el = document.querySelector('#evolve-curve .js-plotly-plot');
  if (!el || !el.data) return 0;
  return el.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0);
}"""
BUDGETS = {
    # population 4; the fast one runs 60 short generations (a fraction of a second to a few seconds each), long
    # enough that the run is still going when the test has watched the curve grow and reloads the page
    "fast": {"population": "4", "generations": "60", "proxy": "8", "topk": "1", "upload": True},
    "demo": {"population": "4", "generations": "2", "proxy": "4", "topk": "1", "upload": False},
}


def _choice_task(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for i, word in enumerate(WORDS):
            handle.write(json.dumps({"id": f"w{i}", "prompt": f"rev: {word} =", "choices": [word[::-1], word], "answer": 0}) + "\n")
    return path


def _fill(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(value)
    field.press("Tab")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


@pytest.mark.parametrize("budget", ["fast", pytest.param("demo", marks=pytest.mark.slow)])
def test_breeding_flow_from_parents_to_a_saved_child(budget, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ui.app import build_demo, launch_kwargs
    from darwin_core.runs.jobs import wait_until_idle

    monkeypatch.delenv("SPACE_ID", raising=False)
    settings = BUDGETS[budget]
    zoo = demo_zoo_dir()
    runs_dir = tmp_path / "runs"
    kwargs = {k: v for k, v in launch_kwargs().items() if k != "server_name"}
    shot = lambda page, name: screenshot(page, f"flow-{budget}-{name}")  # noqa: E731
    with served(build_demo(runs_dir=runs_dir, zoo_dir=zoo, local_mode=True), **kwargs) as url, chromium_page(url) as page:
        # Parents: the compatibility verdict of the two demo parents.
        page.locator("#parents-verdict").get_by_text(re.compile("Breedable|Not breedable")).first.wait_for()
        assert "Breedable" in page.locator("#parents-verdict").inner_text()
        shot(page, "parents")

        # MRI: scanned in the background; the pictures render when the timer finds the scan.
        _tab(page, "MRI")
        page.click("#mri-scan")
        try:
            page.locator("#mri-status").get_by_text("done").wait_for(timeout=300_000)
        except Exception as error:
            raise AssertionError(f"MRI status: {page.locator('#mri-status').inner_text()!r}") from error
        for plot in ("mri-father", "mri-mother", "mri-advantage", "mri-divergence"):
            page.locator(f"#{plot} .js-plotly-plot").wait_for()
        assert "mri_ratio" in page.locator("#mri-prescription").inner_text()
        assert page.locator("#mri-prescription [role='gridcell']").count() > 0
        shot(page, "mri")

        # Evolve: a tiny budget, launched; the click returns and the worker runs it.
        _tab(page, "Evolve")
        if settings["upload"]:
            cells = page.locator('#evolve-demo-tasks [role="gridcell"]')
            for row in range(4):  # the demo skills' weights to 0: only the uploaded task counts
                cells.nth(row * 4 + 2).dblclick()  # 4 columns: task, what it asks, weight, items
                page.keyboard.press("Control+A")
                page.keyboard.type("0")
                page.keyboard.press("Enter")
            page.set_input_files("#evolve-uploads input[type=file]", str(_choice_task(tmp_path / "reverse-choice.jsonl")))
            page.locator("#evolve-uploads").get_by_text("reverse-choice.jsonl").first.wait_for()
        _fill(page, "evolve-population", settings["population"])
        _fill(page, "evolve-generations", settings["generations"])
        _fill(page, "evolve-proxy", settings["proxy"])
        _fill(page, "evolve-topk", settings["topk"])
        page.click("#evolve-launch")
        header = page.locator("#evolve-header")
        header.get_by_text(re.compile(r"Run \d{8}-\d{6}-")).wait_for(timeout=30_000)
        run_id = re.search(r"Run (\d{8}-\d{6}-\w+)", header.inner_text()).group(1)
        assert "⚠" not in page.locator("#evolve-error").inner_text()

        # The curve gains points while we watch (the page polls the run folder).
        seen: list[int] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(set(n for n in seen if n > 0)) < 2:
            seen.append(page.evaluate(POINTS_JS))
            time.sleep(1)
        grown = sorted(set(n for n in seen if n > 0))
        assert len(grown) >= 2, f"the curve never grew while watched: {seen}"
        shot(page, "evolve-running")

        # Reload mid-run: the browser state brings the same run back, with its curve. The run's process is paused
        # (SIGSTOP) around the reload so "mid-run" does not depend on how fast this machine breeds.
        status = json.loads((runs_dir / run_id / "status.json").read_text())
        assert status["state"] in ("running", "starting") and status.get("pid"), f"the run ended before the reload: {status}"
        os.kill(status["pid"], signal.SIGSTOP)
        try:
            before = page.evaluate(POINTS_JS)
            page.reload(wait_until="load")
            page.get_by_role("tab", name="Evolve").click()
            page.locator("#evolve-header").get_by_text(run_id).wait_for(timeout=60_000)
            page.wait_for_function(f"() => ({POINTS_JS})() >= {before}", timeout=60_000)
            assert "running" in page.locator("#evolve-header").inner_text()
            shot(page, "evolve-reloaded")
        finally:
            os.kill(status["pid"], signal.SIGCONT)

        # The run finishes; the page says so.
        page.locator("#evolve-header").get_by_text("finished").wait_for(timeout=900_000)
        page.locator("#evolve-genome-plot .js-plotly-plot").wait_for()
        assert "Traceback" not in page.content()
        shot(page, "evolve-finished")
        report = json.loads((runs_dir / run_id / "report.json").read_text())

        # Health: the check starts by itself for the run's owner; verdict and held-out table show.
        _tab(page, "Health")
        page.locator("#health-verdict").get_by_text(re.compile("Healthy|Warning|Broken")).first.wait_for(timeout=600_000)
        page.locator("#health-chart .js-plotly-plot").wait_for()
        heldout = page.locator("#health-heldout").inner_text()
        assert "composite" in heldout and "p vs father" in heldout
        shot(page, "health")

        # Publish: the card names both parents and carries the numbers the run measured.
        _tab(page, "Publish")
        card = page.locator("#publish-card textarea")
        page.wait_for_function("() => (document.querySelector('#publish-card textarea') || {}).value?.includes('demo:mother')",
                               timeout=60_000)
        text = card.input_value()
        assert "demo:father" in text and "demo:mother" in text
        child = report["heldout"]["models"]["child"]["composite"]
        assert f"| composite | {sum(report['heldout']['items'].values())} | {100 * child:.1f} |" in text
        assert f"{report['best']['fitness']:.4f}" in text
        shot(page, "publish")

        # Save locally: a folder transformers loads.
        destination = tmp_path / "saved-child"
        _fill(page, "publish-dest", str(destination))
        page.click("#publish-save")
        page.locator("#publish-result").get_by_text("Saved to").wait_for(timeout=120_000)

        _tab(page, "Runs")
        page.locator('#runs-table [role="gridcell"]').get_by_text(run_id).first.wait_for(timeout=30_000)
        shot(page, "runs")
    wait_until_idle(runs_dir, 300)

    model = AutoModelForCausalLM.from_pretrained(destination)
    tokenizer = AutoTokenizer.from_pretrained(destination)
    assert model.config.num_hidden_layers >= 1 and len(tokenizer) > 0
    assert (destination / "README.md").read_text().count("demo:father") >= 1
