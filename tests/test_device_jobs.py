"""MRI scans and health checks are jobs of the one worker: they wait for an evolution in flight, never load
beside it, are listed with the runs, and a scan asked for twice is served from its stored result."""

from __future__ import annotations

import subprocess
import sys

import pytest

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import RunFolder
from darwin_core.parents import resolve_parent_name
from darwin_core.runs import jobs as device_jobs
from darwin_core.runs import queue
from tests.test_jobs import REPO, _config, _wait, runs_dir  # noqa: F401 — the fixture that leaves no worker behind


def _scan_of(father, mother, runs_dir, *, start_worker=True) -> str:  # noqa: F811
    names = [str(father), str(mother)]
    models = [resolve_parent_name(name, local_mode=True) for name in names]
    return device_jobs.submit_scan(device_jobs.ScanTarget.BOTH, names, models, probes="default", local_mode=True,
                                   runs_dir=runs_dir, start_worker=start_worker)


def _held(folder: RunFolder) -> tuple[float, float]:
    """When the job's process held the device: from its `started` event to its last event (its final state)."""
    events = folder.events()
    started = next(e for e in events if e["event"] == "started")
    assert events[-1]["event"] in ("finished", "cancelled", "failed"), events[-1]
    return started["t"], events[-1]["t"]


def test_a_scan_asked_for_while_an_evolution_runs_waits_and_never_overlaps_it(fixture_pair, tmp_path, runs_dir):  # noqa: F811
    father, mother = fixture_pair("llama")
    evolution = queue.submit(_config(fixture_pair, tmp_path, generations=50), runs_dir)
    evolution_folder = RunFolder(runs_dir / evolution)
    _wait(lambda: len(evolution_folder.evaluations()) >= 3, "the evolution to be measuring candidates")

    scan = _scan_of(father, mother, runs_dir)
    scan_folder = RunFolder(runs_dir / scan)
    for _ in range(20):  # two seconds of an evolution in flight: the scan stays queued
        assert queue.read_state(scan_folder) == "queued"
        assert queue.read_state(evolution_folder) == "running"
        _wait(lambda: True, "a tick", timeout=1)
    listed = {run["run_id"]: run for run in queue.list_runs(runs_dir)}
    assert listed[scan]["kind"] == "scan" and listed[evolution]["kind"] == "evolve"

    queue.cancel(evolution, runs_dir)
    state, scan_result = _wait(lambda: (r := device_jobs.job_result(scan, runs_dir))[0] in ("finished", "failed") and r,
                               "the scan to finish")
    assert state == "finished", scan_result
    assert {"father", "mother", "prescription"} <= set(scan_result)
    evolution_held, scan_held = _held(evolution_folder), _held(scan_folder)
    assert scan_held[0] >= evolution_held[1], (evolution_held, scan_held)


def test_the_same_scan_asked_again_is_served_from_its_stored_result(fixture_pair, runs_dir):  # noqa: F811
    father, mother = fixture_pair("llama")
    first = _scan_of(father, mother, runs_dir)
    _wait(lambda: device_jobs.job_result(first, runs_dir)[0] == "finished", "the first scan")
    events = len(RunFolder(runs_dir / first).events())
    stored = (runs_dir / first / "mri.json").read_bytes()

    again = _scan_of(father, mother, runs_dir)
    assert again == first
    assert device_jobs.job_result(again, runs_dir)[0] == "finished"
    assert len(RunFolder(runs_dir / first).events()) == events
    assert (runs_dir / first / "mri.json").read_bytes() == stored


def test_a_health_check_is_refused_before_the_run_has_a_child(fixture_pair, tmp_path, runs_dir):  # noqa: F811
    run_id = queue.submit(_config(fixture_pair, tmp_path), runs_dir, start_worker=False)
    before = sorted(p.name for p in runs_dir.iterdir())
    with pytest.raises(DarwinError, match="has no child yet"):
        device_jobs.submit_health(run_id, runs_dir, start_worker=False)
    assert sorted(p.name for p in runs_dir.iterdir()) == before
    queue.cancel(run_id, runs_dir)


def test_runs_list_on_the_command_line_names_each_jobs_kind(fixture_pair, runs_dir):  # noqa: F811
    father, mother = fixture_pair("llama")
    scan = _scan_of(father, mother, runs_dir, start_worker=False)
    listing = subprocess.run([sys.executable, "-m", "darwin_core", "runs", "list", "--runs-dir", str(runs_dir)],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert scan in listing and "scan" in listing
    queue.cancel(scan, runs_dir)


def test_health_of_a_run_on_the_command_line_uses_its_parents_and_lands_where_card_reads_it(fixture_pair, tmp_path):
    runs = tmp_path / "runs"
    folder = queue.prepare_foreground(_config(fixture_pair, tmp_path), runs, run_id="checked")
    assert queue.execute(folder.path) == "finished"
    before = subprocess.run([sys.executable, "-m", "darwin_core", "card", str(runs / "checked")],
                            capture_output=True, text=True, cwd=REPO)
    assert "No health check was run for this child." in before.stdout, before.stderr

    checked = subprocess.run([sys.executable, "-m", "darwin_core", "health", "checked", "--runs-dir", str(runs)],
                             capture_output=True, text=True, cwd=REPO)
    assert checked.returncode in (0, 1), checked.stderr
    assert (runs / "checked" / "health.json").is_file() and "verdict:" in checked.stdout
    after = subprocess.run([sys.executable, "-m", "darwin_core", "card", str(runs / "checked")],
                           capture_output=True, text=True, cwd=REPO)
    assert "No health check was run for this child." not in after.stdout and "Verdict: **" in after.stdout


def test_health_of_an_unknown_run_is_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-m", "darwin_core", "health", "nope", "--runs-dir", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: There is no run 'nope'")


def test_a_scan_started_from_the_mri_tab_waits_for_the_evolution_in_flight(fixture_pair, tmp_path, runs_dir):  # noqa: F811
    from ui.tabs.mri import poll_scan, start_scan

    father, mother = fixture_pair("llama")
    evolution = queue.submit(_config(fixture_pair, tmp_path, generations=50), runs_dir)
    evolution_folder = RunFolder(runs_dir / evolution)
    _wait(lambda: len(evolution_folder.evaluations()) >= 3, "the evolution to be measuring candidates")

    job, error = start_scan("both", "default", None, str(father), None, str(mother), runs_dir=runs_dir,
                            local_mode=True, token=None, zoo_dir=None)
    assert error == "" and job is not None, error
    status, *_ = poll_scan(job, runs_dir=runs_dir)
    assert status.startswith("Waiting for the device")
    assert queue.read_state(RunFolder(runs_dir / job["job"])) == "queued"
    assert queue.read_state(evolution_folder) == "running"
    queue.cancel(evolution, runs_dir)
    _wait(lambda: device_jobs.job_result(job["job"], runs_dir)[0] == "finished", "the scan to finish")
    assert _held(RunFolder(runs_dir / job["job"]))[0] >= _held(evolution_folder)[1]
