"""Background runs: a queue of run folders executed one at a time by a worker that outlives its submitter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darwin_core.runs import queue as jobs
from darwin_core.errors import DarwinError
from darwin_core.evolution.pipeline import EvolutionConfig
from darwin_core.io.runfolder import RunFolder
from tests.test_evolve import write_choice_task

TIMEOUT = 300
REPO = Path(__file__).resolve().parent.parent


def _task_file(path: Path, n: int = 30) -> Path:
    return write_choice_task(path, n, seed=1)


def _config(fixture_pair, tmp_path: Path, **overrides) -> EvolutionConfig:
    father, mother = fixture_pair("llama")
    values = dict(
        father=str(father), mother=str(mother), tasks=({"file": str(_task_file(tmp_path / "mc.jsonl")), "name": "mc"},),
        genome="per-block-role", population=4, generations=2, proxy_items=6, topk_full=1, heldout=False, device="cpu",
    )
    values.update(overrides)
    return EvolutionConfig(**values)


def _wait(predicate, what: str, timeout: float = TIMEOUT, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    yield root
    # never leave a worker behind: cancel whatever is still queued or running, then wait for the worker to go
    if root.exists():
        for run in jobs.list_runs(root):
            if run["state"] in ("queued", "starting", "running"):
                jobs.cancel(run["run_id"], root)
        _wait(lambda: not jobs.worker_alive(root), "the worker to exit", timeout=120)


def test_two_runs_queued_at_once_run_one_after_the_other_and_both_finish(fixture_pair, tmp_path, runs_dir):
    import threading

    from darwin_core.io.runfolder import run_folders

    first = jobs.submit(_config(fixture_pair, tmp_path, seed=1), runs_dir)
    # Watch every run's state from now on: on a loaded machine the first run may be over before the CLI below returns.
    states: list[dict[str, str]] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            states.append({folder.run_id: jobs.read_state(folder) for folder in run_folders(runs_dir)})
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # the second comes from the CLI, in a process that exits at once: runs outlive whoever submitted them
    config_file = tmp_path / "second.yaml"
    config_file.write_text(_config(fixture_pair, tmp_path, seed=2).to_yaml())
    submitted = subprocess.run(
        [sys.executable, "-m", "darwin_core", "runs", "submit", str(config_file), "--runs-dir", str(runs_dir)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=True,
    )
    second = submitted.stdout.strip().splitlines()[-1]

    def both_done() -> bool:
        a, b = jobs.read_run(first, runs_dir)["state"], jobs.read_run(second, runs_dir)["state"]
        return a in ("finished", "failed") and b in ("finished", "failed")

    try:
        _wait(both_done, "both runs to finish")
    finally:
        watching.clear()
        watcher.join()
    seen = [(s.get(first), s.get(second)) for s in states]
    a, b = jobs.read_run(first, runs_dir), jobs.read_run(second, runs_dir)
    assert (a["state"], b["state"]) == ("finished", "finished"), (a["error"], b["error"])
    assert any(s[0] in ("starting", "running") for s in seen), "the first run was seen executing"
    assert all(s[1] == "queued" for s in seen if s[1] is not None and s[0] in ("queued", "starting", "running")), \
        "the second waited"
    assert b["started_at"] >= a["finished_at"], "one run at a time, in submission order"
    for run, seed in ((a, 1), (b, 2)):
        folder = RunFolder(run["path"])
        config = EvolutionConfig.from_yaml(folder.config_text())
        assert config.seed == seed, "each folder kept its own config"
        events = [e["event"] for e in folder.events()]
        assert events.count("started") == 1 and events[-1] == "finished"
        evals = folder.evaluations()
        assert len(evals) == 3 + 2 * (4 + 1), "three baselines, then 4 proxy + 1 full per generation, nothing else"
        assert run["curves"]["generations"] == [1, 2] and set(run["curves"]["baselines"]) == {"father", "mother", "uniform-50"}
        assert run["best"]["fitness"] == run["best_fitness"] == max(run["curves"]["best_so_far"])
    # a genome is a function of the seed: the two runs searched differently and did not write into each other
    genomes = [[e["genome"] for e in RunFolder(r["path"]).evaluations() if e.get("phase") == "proxy"] for r in (a, b)]
    assert genomes[0] != genomes[1]
    listed = jobs.list_runs(runs_dir)
    assert {r["run_id"] for r in listed} == {first, second} and all(r["state"] == "finished" for r in listed)


def test_cancel_stops_a_running_run_and_keeps_what_was_measured(fixture_pair, tmp_path, runs_dir):
    run_id = jobs.submit(_config(fixture_pair, tmp_path, generations=50), runs_dir)
    folder = RunFolder(runs_dir / run_id)
    _wait(lambda: len(folder.evaluations()) >= 5, "the first candidates to be measured")
    jobs.cancel(run_id, runs_dir)
    measured_when_cancelled = folder.evaluations()
    run = _wait(lambda: (r := jobs.read_run(run_id, runs_dir))["state"] == "cancelled" and r, "the run to stop")
    kept = folder.evaluations()
    assert kept[: len(measured_when_cancelled)] == measured_when_cancelled, "nothing measured was thrown away"
    assert run["generation"] < 50 and run["report"] is None and run["child_dir"] is None
    assert [e["event"] for e in folder.events()][-1] == "cancelled"
    # a cancelled run can be queued again (it would continue from its checkpoint); cancel it while queued
    jobs.resume(run_id, runs_dir, start_worker=False)
    assert jobs.read_run(run_id, runs_dir)["state"] == "queued"
    assert jobs.cancel(run_id, runs_dir) == "cancelled"
    assert folder.evaluations() == kept


def test_a_run_cancelled_while_queued_never_starts(fixture_pair, tmp_path, runs_dir):
    run_id = jobs.submit(_config(fixture_pair, tmp_path), runs_dir, start_worker=False)
    assert jobs.cancel(run_id, runs_dir) == "cancelled"
    assert jobs.work(runs_dir, idle_seconds=0) == 0
    folder = RunFolder(runs_dir / run_id)
    assert folder.evaluations() == [] and "started" not in [e["event"] for e in folder.events()]


def test_a_failing_run_is_marked_failed_with_one_sentence(fixture_pair, tmp_path, runs_dir):
    import shutil

    father, _ = fixture_pair("llama")
    vanishing = tmp_path / "no-such-model"
    shutil.copytree(father, vanishing)
    config = _config(fixture_pair, tmp_path, father=str(vanishing))
    run_id = jobs.submit(config, runs_dir, start_worker=False)  # checked when queued; gone before the worker starts
    shutil.rmtree(vanishing)
    assert jobs.work(runs_dir, idle_seconds=0) == 1
    run = jobs.read_run(run_id, runs_dir)
    assert run["state"] == "failed"
    assert run["error"] and "\n" not in run["error"] and "Traceback" not in run["error"]
    assert "no-such-model" in run["error"]


def test_a_worker_that_finds_the_lock_taken_exits_at_once(tmp_path):
    import fcntl

    root = tmp_path / "runs"
    root.mkdir()
    with open(root / jobs.WORKER_LOCK, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert jobs.worker_alive(root)
        started = time.monotonic()
        assert jobs.work(root, idle_seconds=30) == 0
        assert time.monotonic() - started < 5
    assert not jobs.worker_alive(root)


def test_a_run_whose_process_died_reads_as_interrupted_and_can_be_resumed(fixture_pair, tmp_path, runs_dir):
    run_id = jobs.submit(_config(fixture_pair, tmp_path), runs_dir, start_worker=False)
    folder = RunFolder(runs_dir / run_id)
    folder.update_status(state="running", pid=999999)  # what a SIGKILLed process leaves behind
    assert jobs.read_run(run_id, runs_dir)["state"] == "interrupted"
    jobs.resume(run_id, runs_dir, start_worker=False)
    assert jobs.read_run(run_id, runs_dir)["state"] == "queued"
    with pytest.raises(DarwinError, match="already queued"):
        jobs.resume(run_id, runs_dir, start_worker=False)
    jobs.cancel(run_id, runs_dir)


def test_bad_input_gets_one_clear_sentence(tmp_path):
    with pytest.raises(DarwinError, match="no run"):
        jobs.read_run("nothing-here", tmp_path)
    with pytest.raises(DarwinError, match="not valid"):
        jobs.read_run("../etc", tmp_path)
    with pytest.raises(DarwinError, match="population"):
        jobs.submit({"father": "a", "mother": "b", "population": 0}, tmp_path, start_worker=False)
    run_id = jobs.submit({"father": "a", "mother": "b"}, tmp_path, run_id="mine", start_worker=False)
    with pytest.raises(DarwinError, match="already exists"):
        jobs.submit({"father": "a", "mother": "b"}, tmp_path, run_id=run_id, start_worker=False)
    assert os.path.isfile(tmp_path / "mine" / "config.yaml")
