"""The Space shows a Hugging Face Job's run like any other: the run folder the Job fills in the bucket is listed,
opened and drawn by the Runs tab.

The Job is launched against the local Hub server (which records the request); a local process standing in for
the Job runs the recorded command on the same runs folder, as the Job's container would on the mounted bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from darwin_core.evolution.pipeline import EvolutionConfig
from darwin_core.runs import hfjobs, owners
from darwin_core.testing.fakehub import FakeHub
from tests.browser import CHROMIUM, chromium_page, demo_zoo_dir, screenshot, served

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_visitorOwnJobsTokenForTheBrowser42"
SPACE = {"SPACE_ID": "darwin-org/darwin", hfjobs.BUCKET_ENV: "darwin-org/darwin-runs"}


def _launched_and_run_by_a_stand_in(runs: Path, monkeypatch) -> tuple[str, dict]:
    """(run id, the recorded job): launched through the local Hub, then its command run here to the end."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(owners.SECRET_ENV, "the-spaces-own-session-secret")  # a Space that launches Jobs sets it
    config = EvolutionConfig.from_dict({
        "father": "demo:father", "mother": "demo:mother", "genome": "per-block-role", "population": 2,
        "generations": 2, "proxy_items": 4, "topk_full": 1, "seed": 3, "device": "cpu",
        "tasks": [{"demo": "reverse", "weight": 0.5, "limit": 8}, {"demo": "sort", "weight": 0.5, "limit": 8}],
    })
    plan = hfjobs.plan_job(config, pair_bytes=10**9, seconds_per_candidate=2.0)
    with FakeHub() as hub:
        run_id = hfjobs.launch_job(config, runs, token=TOKEN, who=owners.Visitor(session="the-visitor"), plan=plan,
                                   endpoint=hub.url, environ=SPACE)
    (job,) = hub.record.jobs.values()
    command = [sys.executable, *job["spec"]["command"][1:]]
    command[command.index("--nproc-per-node") + 1] = "1"
    env = {**os.environ, **job["spec"]["environment"], "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return run_id, job


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
def test_the_runs_tab_lists_opens_and_draws_the_run_a_job_wrote_into_the_bucket(tmp_path, monkeypatch):
    from ui.app import build_demo

    runs = tmp_path / "bucket" / "runs"
    run_id, job = _launched_and_run_by_a_stand_in(runs, monkeypatch)
    assert job["spec"]["volumes"][0]["mountPath"] == str(runs.resolve())
    demo = build_demo(runs_dir=runs, zoo_dir=demo_zoo_dir())
    with served(demo) as url, chromium_page(url) as page:
        page.get_by_role("tab", name="Runs").click()
        page.locator('#runs-table [role="gridcell"]').get_by_text(run_id).first.wait_for(timeout=60_000)
        picker = page.locator("#runs-pick input").first
        picker.fill(run_id)
        picker.press("Enter")
        page.click("#runs-open")
        page.locator("#runs-header").get_by_text(run_id).wait_for(timeout=60_000)
        assert "finished" in page.locator("#runs-header").inner_text().lower()
        page.locator("#runs-curve .js-plotly-plot").wait_for(timeout=60_000)
        assert TOKEN not in page.content()
        screenshot(page, "job-run")
