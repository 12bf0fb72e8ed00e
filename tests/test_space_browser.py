"""The app as a Hugging Face Space serves it (local mode off, Gradio told it runs on a Space, sign-in wired in),
with its runs folder outside both the working folder and the temp folder, as a mounted bucket would be.

In a real browser (Debian's headless Chromium driven by Playwright): the MRI scan of the demo parents shows its
result, a tiny run launched from the Evolve tab finishes, the Health tab shows its verdict, and "Download as zip"
hands the browser a zip of the child. Through the public API (gradio_client), two visitors: B may not breed
from A's unpublished child (one sentence, nothing written), A may.

The Space is simulated the way tests/test_space_runtime.py does it: SPACE_ID and SYSTEM=spaces in the
environment and the OAuth settings the Space runtime provides patched into gradio.oauth.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from darwin_core.runs import queue as jobs
from tests.browser import CHROMIUM, chromium_page, demo_zoo_dir, screenshot, served
from tests.test_jobs import _wait
from tests.test_space_security import _snapshot, unsealed  # noqa: F401 — the fixture puts the token seal back

TIMEOUT = 300
RUN_ID = re.compile(r"Run `?(\d{8}-\d{6}-\w+)")
ITEMS_PER_SKILL = "8"  # the demo skills' items: a run of population 2 × 1 generation finishes in seconds


def _outside(path: Path, folder: str | Path) -> bool:
    return not path.resolve().is_relative_to(Path(folder).resolve())


@pytest.fixture()
def space(monkeypatch, unsealed):  # noqa: F811
    """What a Space's runtime gives the app: its id, Gradio's SYSTEM marker and the OAuth app's settings."""
    monkeypatch.setenv("SPACE_ID", "darwin-test/darwin")
    monkeypatch.setenv("SYSTEM", "spaces")  # what Gradio itself reads to know it runs on a Space
    monkeypatch.delenv("DARWIN_LOCAL_MODE", raising=False)  # the Space's default: local mode off
    for name, value in (("OAUTH_CLIENT_ID", "darwin-test"), ("OAUTH_CLIENT_SECRET", "not-a-secret"),
                        ("OAUTH_SCOPES", "openid profile"), ("OPENID_PROVIDER_URL", "http://127.0.0.1:9")):
        monkeypatch.setattr(f"gradio.oauth.{name}", value)  # what the Space runtime provides (read at import)


@pytest.fixture()
def bucket_runs():
    """A runs folder outside the working folder and the temp folder (like a Space's mounted storage bucket);
    removed afterwards, once no run and no worker is left on it."""
    from darwin_core.runs.jobs import wait_until_idle
    from ui.tabs.publish import ZIPS

    candidates = [Path("/var/tmp"), Path.home()]
    base = next((c for c in candidates if c.is_dir() and _outside(c, Path.cwd()) and _outside(c, tempfile.gettempdir())), None)
    if base is None:
        pytest.skip("no writable folder outside both the working folder and the temp folder")
    root = base / f"darwin-space-test-{uuid.uuid4().hex[:12]}" / "runs"
    assert _outside(root, Path.cwd()) and _outside(root, tempfile.gettempdir())
    root.mkdir(parents=True)
    yield root
    try:
        for run in jobs.list_runs(root):
            if run["state"] in ("queued", "starting", "running"):
                jobs.cancel(run["run_id"], root)
        _wait(lambda: not jobs.worker_alive(root), "the worker to exit", timeout=120)
        wait_until_idle(root, 300)
    finally:
        import hashlib

        shutil.rmtree(root.parent, ignore_errors=True)
        zips = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        shutil.rmtree(Path(tempfile.gettempdir()) / ZIPS / zips, ignore_errors=True)


def _space_app(runs_dir: Path):
    """The page exactly as app.py builds and launches it on a Space (local mode from the environment: off)."""
    from ui.app import build_demo, launch_kwargs
    from ui.common import local_mode_default

    assert local_mode_default() is False
    kwargs = {k: v for k, v in launch_kwargs().items() if k != "server_name"}
    return build_demo(runs_dir=runs_dir, zoo_dir=demo_zoo_dir()), kwargs


# ------------------------------------------------------------------------------------------- in a browser


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _fill(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(value)
    field.press("Tab")


def _no_error_toast(page, where: str) -> None:
    toasts = page.locator(".toast-body.error")
    assert toasts.count() == 0, f"{where}: error toast {toasts.first.inner_text()!r}"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
def test_a_space_visitor_scans_breeds_checks_and_downloads_the_child_as_a_zip(space, bucket_runs, tmp_path):
    from darwin_core.fitness.demo_tasks import DEMO_SKILLS, SKILLS

    demo, kwargs = _space_app(bucket_runs)
    with served(demo, **kwargs) as url, chromium_page(url) as page:
        page.locator("#parents-verdict").get_by_text(re.compile("Breedable|Not breedable")).first.wait_for()
        assert "Breedable" in page.locator("#parents-verdict").inner_text()

        # MRI: the scan of both demo parents runs in the background; its result shows when the timer finds it.
        _tab(page, "MRI")
        page.click("#mri-scan")
        status = page.locator("#mri-status")
        try:
            status.get_by_text("done").wait_for(timeout=TIMEOUT * 1000)
        except Exception as error:
            raise AssertionError(f"MRI status: {status.inner_text()!r}") from error
        assert "⚠" not in status.inner_text()
        assert "demo:father" in page.locator("#mri-summary").inner_text()
        for plot in ("mri-father", "mri-mother", "mri-advantage", "mri-divergence"):
            page.locator(f"#{plot} .js-plotly-plot").wait_for()
        assert page.locator("#mri-prescription [role='gridcell']").count() > 0
        assert list(bucket_runs.glob("scan-*/mri.json")), "the scan is kept in the runs folder"
        _no_error_toast(page, "MRI")
        screenshot(page, "space-mri")

        # Evolve: a tiny run of this browser's session (its owner), launched with the button.
        _tab(page, "Evolve")
        cells = page.locator('#evolve-demo-tasks [role="gridcell"]')
        for row, name in enumerate(SKILLS):
            if name in DEMO_SKILLS:  # the tasks with a weight: a few items each
                cells.nth(row * 4 + 3).dblclick()  # 4 columns: task, what it asks, weight, items
                page.keyboard.press("Control+A")
                page.keyboard.type(ITEMS_PER_SKILL)
                page.keyboard.press("Enter")
        _fill(page, "evolve-population", "2")
        _fill(page, "evolve-generations", "1")
        _fill(page, "evolve-proxy", "4")
        _fill(page, "evolve-topk", "1")
        page.locator("#evolve-mri input[type=checkbox]").uncheck()
        page.click("#evolve-launch")
        header = page.locator("#evolve-header")
        try:
            header.get_by_text(RUN_ID).wait_for(timeout=60_000)
        except Exception as error:
            raise AssertionError(f"no run started: {page.locator('#evolve-error').inner_text()!r}") from error
        run_id = RUN_ID.search(header.inner_text()).group(1)
        assert (bucket_runs / run_id / "config.yaml").is_file()
        try:
            header.get_by_text("finished").wait_for(timeout=TIMEOUT * 1000)
        except Exception as error:
            raise AssertionError(f"the run did not finish: {jobs.read_run(run_id, bucket_runs).get('error')!r}") from error
        assert "You started this run" in header.inner_text()
        config = (bucket_runs / run_id / "config.yaml").read_text()
        assert "local_mode: false" in config
        _no_error_toast(page, "Evolve")
        screenshot(page, "space-evolve")

        # Health: the check-up of the finished run's child against both parents, and its verdict.
        _tab(page, "Health")
        page.locator("#health-header").get_by_text(run_id).wait_for(timeout=60_000)
        page.click("#health-check")
        verdict = page.locator("#health-verdict")
        try:
            verdict.get_by_text(re.compile("Healthy|Warning|Broken")).first.wait_for(timeout=TIMEOUT * 1000)
        except Exception as error:
            raise AssertionError(f"health status: {page.locator('#health-status').inner_text()!r}") from error
        page.locator("#health-chart .js-plotly-plot").wait_for()
        assert "⚠" not in page.locator("#health-status").inner_text()
        assert (bucket_runs / run_id / "health.json").is_file()
        _no_error_toast(page, "Health")
        screenshot(page, "space-health")

        # Publish: "Download as zip" gives this browser (the run's owner) a zip of the child.
        _tab(page, "Publish")
        page.click("#publish-zip")
        result = page.locator("#publish-result")
        try:
            result.get_by_text("zip is ready").wait_for(timeout=120_000)
        except Exception as error:
            raise AssertionError(f"publish result: {result.inner_text()!r}") from error
        link = page.locator(f'#publish-zip-file a[data-testid="download-link"][download="darwin-child-{run_id}.zip"]')
        link.wait_for(timeout=60_000)  # the gr.File's download link (its text is the size)
        with page.expect_download(timeout=60_000) as download_info:
            link.click()
        download = download_info.value
        assert download.failure() is None, download.failure()
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        _no_error_toast(page, "Publish")
        screenshot(page, "space-publish")

    assert saved.name == f"darwin-child-{run_id}.zip"
    assert zipfile.is_zipfile(saved)
    child = bucket_runs / run_id / "child"
    expected = {str(p.relative_to(child)) for p in child.rglob("*") if p.is_file()}
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert names == expected, (names, expected)
        assert "config.json" in names and any(n.endswith(".safetensors") for n in names) and "README.md" in names
        weights = next(n for n in names if n.endswith(".safetensors"))
        assert archive.read(weights) == (child / weights).read_bytes()


# ------------------------------------------------------------------------------------------- two visitors, by API


def _launch_args(father_typed: str = "") -> dict:
    """evolve_launch's arguments (its API names): a tiny run of the demo parents on a few demo items; a father
    typed into the Parents tab's box (as a visitor names an earlier child, `run:<id>`) wins over the pick."""
    from ui.tabs.evolve import DEMO_HEADERS, demo_task_rows

    rows = demo_task_rows()
    rows["items"] = int(ITEMS_PER_SKILL)
    return dict(father_pick="demo:father", father_typed=father_typed, mother_pick="demo:mother", mother_typed="",
                demo_tasks={"headers": DEMO_HEADERS, "data": rows.values.tolist()}, uploads=None, population=2,
                generations=1, proxy_items=4, topk_full=1, frozen_layers="", mri=False)


def _finished(run_id: str, runs_dir: Path) -> dict:
    run = _wait(lambda: (r := jobs.read_run(run_id, runs_dir))["state"] in ("finished", "failed", "cancelled") and r,
                f"run {run_id} to end")
    assert run["state"] == "finished", run.get("error")
    return run


def test_visitor_b_cannot_breed_from_visitor_a_unpublished_child_through_the_api_and_a_can(space, bucket_runs):
    """Each gradio_client Client plays one browser: the page's gr.BrowserState is an ordinary input and output of
    evolve_launch, so each client keeps the state the server handed back (what localStorage keeps)."""
    import yaml
    from gradio_client import Client

    from ui.session import current_run

    demo, kwargs = _space_app(bucket_runs)
    with served(demo, **kwargs) as url:
        visitor_a, visitor_b = Client(url, verbose=False), Client(url, verbose=False)

        # A breeds the demo parents (a first visit: no session yet, the server gives one).
        state_a, error = visitor_a.predict({}, **_launch_args(), api_name="/evolve_launch")
        assert error == "", error
        run_a = current_run(state_a)
        assert run_a and len(state_a["session"]) >= 16
        _finished(run_a, bucket_runs)
        assert (bucket_runs / run_a / "child").is_dir()
        _wait(lambda: not jobs.worker_alive(bucket_runs), "the worker to exit", timeout=120)

        # B, another browser, names A's unpublished child as a parent: one sentence, nothing written.
        state_b = {}
        before = _snapshot(bucket_runs)
        runs_before = [r["run_id"] for r in jobs.list_runs(bucket_runs)]
        returned_b, refusal = visitor_b.predict(state_b, **_launch_args(f"run:{run_a}"),
                                                api_name="/evolve_launch")
        assert "not yours and has not been published" in refusal, refusal
        sentence = refusal.strip().strip("*").removeprefix("⚠").strip()
        assert "\n" not in sentence and len(sentence) < 300, refusal
        assert sentence.endswith(".") and sentence.count(".") == 1, f"not one sentence: {refusal!r}"
        assert "Traceback" not in refusal and run_a in refusal
        assert not current_run(returned_b if isinstance(returned_b, dict) else {}), returned_b
        assert [r["run_id"] for r in jobs.list_runs(bucket_runs)] == runs_before
        assert _snapshot(bucket_runs) == before, "B's refused launch wrote into the runs folder"

        # A, the owner, breeds from the same child through the same endpoint.
        state_a2, error = visitor_a.predict(state_a, **_launch_args(f"run:{run_a}"),
                                            api_name="/evolve_launch")
        assert error == "", error
        run_a2 = current_run(state_a2)
        assert run_a2 and run_a2 != run_a and state_a2["session"] == state_a["session"]
        config = yaml.safe_load((bucket_runs / run_a2 / "config.yaml").read_text())
        assert config["father"] == f"run:{run_a}" and config["local_mode"] is False
        _finished(run_a2, bucket_runs)
