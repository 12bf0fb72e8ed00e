"""A Space restarts: queued runs start again when the app starts, and a run stopped by a termination signal
is interrupted (resumable), never cancelled; a forged run id in the browser state touches no file."""

from __future__ import annotations

import os
import signal

import pytest

from darwin_core.runs import queue as jobs
from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import RunFolder
from tests.test_jobs import _config, _wait, runs_dir  # noqa: F401 — the fixture that leaves no worker behind


def test_a_run_stopped_by_sigterm_is_interrupted_not_cancelled_and_resumes(fixture_pair, tmp_path, runs_dir):  # noqa: F811
    run_id = jobs.submit(_config(fixture_pair, tmp_path, generations=50), runs_dir)
    folder = RunFolder(runs_dir / run_id)
    _wait(lambda: len(folder.evaluations()) >= 5, "the first candidates to be measured")
    os.kill(int(folder.read_status()["pid"]), signal.SIGTERM)  # what a Space restart sends the run's process
    run = _wait(lambda: (r := jobs.read_run(run_id, runs_dir))["state"] not in ("running", "starting") and r,
                "the run to stop")
    assert run["state"] == "interrupted", run
    assert [e["event"] for e in folder.events()][-1] == "interrupted"
    jobs.resume(run_id, runs_dir, start_worker=False)
    assert jobs.read_run(run_id, runs_dir)["state"] == "queued"
    jobs.cancel(run_id, runs_dir)


def test_runs_queued_before_a_restart_start_when_the_app_starts(fixture_pair, tmp_path, runs_dir):  # noqa: F811
    from ui.app import build_demo

    run_id = jobs.submit(_config(fixture_pair, tmp_path, generations=50), runs_dir, start_worker=False)
    assert not jobs.worker_alive(runs_dir)
    build_demo(runs_dir=runs_dir, local_mode=True)
    _wait(lambda: jobs.read_run(run_id, runs_dir)["state"] in ("starting", "running"), "the queued run to start")
    jobs.cancel(run_id, runs_dir)


@pytest.mark.parametrize("forged", ["../../etc", "..", "a/b", "x" * 500])
def test_a_forged_run_id_in_the_browser_state_is_refused_before_any_path_is_built(forged):
    from ui.session import current_run

    with pytest.raises(DarwinError, match="is not valid"):
        current_run({"session": "s" * 20, "run_id": forged})
    assert current_run({"session": "s" * 20}) is None


def test_the_mri_scan_starts_on_a_space_where_gradio_injects_the_sign_in(monkeypatch, tmp_path):
    """On a Space every sign-in-wrapped handler gets the visitor's profile and token from Gradio; the Scan
    button's handler used to call a wrapped function itself, without them, and failed on every click."""
    from gradio_client import Client

    from tests.browser import demo_zoo_dir, served
    from ui.app import build_demo

    monkeypatch.setenv("SPACE_ID", "darwin-test/darwin")
    monkeypatch.setenv("SYSTEM", "spaces")  # what Gradio itself reads to know it runs on a Space
    for name, value in (("OAUTH_CLIENT_ID", "darwin-test"), ("OAUTH_CLIENT_SECRET", "not-a-secret"),
                        ("OAUTH_SCOPES", "openid profile"), ("OPENID_PROVIDER_URL", "http://127.0.0.1:9")):
        monkeypatch.setattr(f"gradio.oauth.{name}", value)  # what the Space runtime provides (read at import)
    with served(build_demo(runs_dir=tmp_path / "runs", zoo_dir=demo_zoo_dir(), local_mode=True)) as url:
        status, timer = Client(url, verbose=False).predict(  # the job id is session state, not returned
            "both", "demo", "demo:father", "", "demo:mother", "", api_name="/mri_scan")
    assert "Starting the scan" in status and timer["active"] is True, status
