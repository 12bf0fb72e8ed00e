"""Background runs: a queue of run folders and one worker process that executes them, one at a time.

A run is a folder (see runfolder.py). `submit` writes the config and status "queued" and makes sure a worker
is alive; the worker (`python -m darwin_core runs worker --runs-dir DIR`, started on demand in its own session
so it outlives the page or shell that submitted the run) takes queued runs oldest first and executes each in a
child process (`python -m darwin_core runs run RUN_DIR`), so a crash, an out-of-memory kill or a leaked GPU
allocation ends with that run, not with the queue. One run at a time: the accelerator is one resource.

Who writes status.json, so that no two processes race on it:
- `submit`, `cancel` and `resume` change the state of runs that are not executing, and the worker claims a run,
  all under one lock file per runs folder (`.queue.lock`);
- the process executing a run holds the run's own lock (`<run>/.lock`) and is the only writer while it runs;
- the worker writes once more after the run's process has exited, only if that process died without saying how
  it ended.

States: queued → starting → running → finished | failed | cancelled. "interrupted" is derived, never written:
status says starting/running but no process holds the run (it was killed); `resume` continues it from its last
checkpoint. Cancel sets a flag file the loop checks between candidates; what was measured stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.evolution.curves import curves
from darwin_core.io.runfolder import (
    BEST_RECIPE,
    CANCELLED,
    CHILD,
    ERROR_LOG,
    FAILED,
    FINISHED,
    INTERRUPTED,
    QUEUED,
    REPORT,
    RUNNING,
    REPO_ROOT,
    STARTING,
    RunFolder,
    check_run_id,
    lock_is_held,
    now_iso,
    run_folders,
    runs_dir_default,
)

QUEUE_LOCK = ".queue.lock"
WORKER_LOCK = ".worker.lock"
WORKER_LOG = "worker.log"
IDLE_SECONDS = 3.0  # how long an idle worker waits for new work before it exits
POLL_SECONDS = 0.5


def _folder(run_id: str, runs_dir: str | Path | None) -> RunFolder:
    folder = RunFolder(runs_dir_default(runs_dir) / check_run_id(run_id))
    if not folder.exists():
        raise DarwinError(f"There is no run {run_id!r} in {runs_dir_default(runs_dir)}.")
    return folder


@contextlib.contextmanager
def _queue_lock(runs_dir: Path) -> Iterator[None]:
    """Serialises state changes of non-executing runs (submit, claim, cancel, resume) across processes."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / QUEUE_LOCK, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _parse_config(config: Any, runs_dir: Path | None = None) -> Any:
    """Validate a config (EvolutionConfig, mapping, YAML text or path) into an EvolutionConfig.

    A path is read by `EvolutionConfig.load`, so its relative paths mean what they mean beside the file. With
    local mode off its tasks are vetted here too (darwin_core.fitness.policy), before a run folder exists.
    """
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.fitness.policy import check_untrusted_tasks

    if isinstance(config, EvolutionConfig):
        parsed = config
    elif isinstance(config, dict):
        parsed = EvolutionConfig.from_dict(config)
    elif isinstance(config, Path) or (isinstance(config, str) and "\n" not in config and config.endswith((".yaml", ".yml"))):
        parsed = EvolutionConfig.load(config)
    elif isinstance(config, str):
        parsed = EvolutionConfig.from_yaml(config)
    else:
        raise DarwinError("A run needs an evolution config (a mapping, YAML text or a .yaml file).")
    if not parsed.local_mode:
        check_untrusted_tasks(parsed.tasks, runs_dir=runs_dir)
    return parsed


def _checked_config(config: Any, root: Path, *, strict_hub: bool, token: str | None = None) -> str:
    """The config's YAML text once everything a run needs has been checked, before any run folder exists:
    the settings, then this machine's side (`darwin_core.evolution.preflight`: device, scan and task files,
    parents and whether they can be bred; Hub parents only with `strict_hub`)."""
    from darwin_core.evolution.preflight import check_before_run
    from darwin_core.io.environment import LOCAL_MODE_ENV, local_mode_default

    parsed = _parse_config(config, root)
    if parsed.local_mode and not local_mode_default():
        raise DarwinError(f"This config asks for local mode (folders and files of this machine), which this server "
                          f"does not allow ({LOCAL_MODE_ENV} is not 1); set local_mode: false.")
    check_before_run(parsed, root, strict_hub=strict_hub, token=token)
    return parsed.to_yaml()


# --------------------------------------------------------------------------------------------- queue API


def submit(config: Any, runs_dir: str | Path | None = None, *, run_id: str | None = None, start_worker: bool = True) -> str:
    """Queue a run; returns its id. The worker is started if none is alive."""
    root = runs_dir_default(runs_dir)
    if run_id is not None:
        check_run_id(run_id)  # before the runs folder is made
    text = _checked_config(config, root, strict_hub=False)  # a queued run may wait for the Hub: its worker tells
    with _queue_lock(root):
        folder = RunFolder.create(root, text, run_id=run_id, state=QUEUED)
        # relative paths in the config (parents, task files) mean what they meant where the run was submitted
        folder.update_status(cwd=os.getcwd())
    if start_worker:
        ensure_worker(root)
    return folder.run_id


def cancel(run_id: str, runs_dir: str | Path | None = None) -> str:
    """Ask a run to stop. A queued run is cancelled at once; a running one stops before its next candidate.

    Returns the state the run is in right after the call.
    """
    folder = _folder(run_id, runs_dir)
    with _queue_lock(runs_dir_default(runs_dir)):
        state = _state(folder)
        if state in (FINISHED, FAILED, CANCELLED):
            return state
        folder.request_cancel()
        if state in (QUEUED, INTERRUPTED):
            folder.update_status(state=CANCELLED, finished_at=now_iso())
            folder.append_event("cancelled")
            return CANCELLED
    return state


def resume(run_id: str, runs_dir: str | Path | None = None, *, start_worker: bool = True) -> None:
    """Queue a failed, cancelled or interrupted run again; it continues from its last checkpoint."""
    root = runs_dir_default(runs_dir)
    folder = _folder(run_id, root)
    with _queue_lock(root):
        state = _state(folder)
        if state == FINISHED:
            raise DarwinError(f"Run {run_id} has already finished; there is nothing to resume.")
        if state in (QUEUED, STARTING, RUNNING):
            raise DarwinError(f"Run {run_id} is already {state}.")
        _check_trusted_here(folder)
        folder.clear_cancel()
        folder.update_status(state=QUEUED, queued_at=time.time(), error=None, finished_at=None)
        folder.append_event("resume_requested", previous_state=state)
    if start_worker:
        ensure_worker(root)


def _state(folder: RunFolder) -> str:
    """The run's state, with starting/running runs that no process holds shown as interrupted."""
    from darwin_core.runs.hfjobs import held_remotely

    state = folder.read_status().get("state", QUEUED)
    if state in (STARTING, RUNNING) and not folder.is_active() and not held_remotely(folder):
        # Read again: a run writes its final state before it lets go of the lock, so once the lock is seen free
        # this read is final (the first one may predate a run that just finished).
        state = folder.read_status().get("state", QUEUED)
        if state not in (STARTING, RUNNING):
            return state
        if state == STARTING and _claimed_recently(folder):
            return STARTING  # the worker claimed it and its process is about to take the run's lock
        return INTERRUPTED
    return state


def _check_trusted_here(folder: RunFolder) -> None:
    """Before a run executes or queues here: a run launched as a Hugging Face Job only with the config the Space
    sealed (runs/hfjobs.py: its folder is written by the Job); and no run's config unlocks local mode where this
    process does not allow it (runs/jobs.py), whoever wrote the runs folder."""
    from darwin_core.runs.hfjobs import check_trusted_here
    from darwin_core.runs.jobs import check_local_mode_allowed

    check_trusted_here(folder)
    check_local_mode_allowed(folder)


def read_state(folder: RunFolder) -> str:
    """The state a run is in now, as the runs list shows it (interrupted when no process holds a running run)."""
    return _state(folder)


def _claimed_recently(folder: RunFolder, seconds: float = 30.0) -> bool:
    status = folder.read_status()
    claimed = status.get("claimed_at")
    return isinstance(claimed, (int, float)) and time.time() - claimed < seconds and worker_alive(folder.path.parent)


# --------------------------------------------------------------------------------------------- reading


def _summary(folder: RunFolder) -> dict[str, Any]:
    status = folder.read_status()
    summary = {
        "run_id": folder.run_id,
        "path": str(folder.path),
        "state": _state(folder),
        "created_at": status.get("created_at"),
        "queued_at": status.get("queued_at"),
        "started_at": status.get("started_at"),
        "finished_at": status.get("finished_at"),
        "phase": status.get("phase"),
        "generation": status.get("generation", 0),
        "generations": status.get("generations"),
        "best_fitness": status.get("best_fitness"),
        "error": status.get("error"),
        "cancel_requested": folder.cancel_requested(),
        # a gated or private parent: its pinned id is shown to the run's owner only
        "parents_restricted": bool(status.get("parents_restricted")),
    }
    try:
        import yaml

        config = yaml.safe_load(folder.config_text()) or {}
        summary["father"], summary["mother"] = config.get("father"), config.get("mother")
        summary["kind"] = config.get("job", "evolve")
        summary.setdefault("generations", config.get("generations"))
        if summary["generations"] is None:
            summary["generations"] = config.get("generations")
    except Exception:  # noqa: BLE001 — a listing must not fail on one broken folder
        summary["father"] = summary["mother"] = None
        summary["kind"] = "evolve"
    return summary


def list_runs(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run in the runs folder, newest first, with state and progress (cheap: status + config only)."""
    runs = [_summary(f) for f in run_folders(runs_dir_default(runs_dir))]
    return sorted(runs, key=lambda r: (r.get("created_at") or "", r["run_id"]), reverse=True)


def read_run(run_id: str, runs_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything the UI and CLI show about one run: summary, config, curves, best, report, recent events."""
    folder = _folder(run_id, runs_dir)
    run = _summary(folder)
    evaluations = folder.evaluations()
    run["config_yaml"] = folder.config_text()
    run["curves"] = curves(evaluations)
    run["evaluations"] = len(evaluations)
    # the loop's own rule: highest full-search fitness; ties go to the earlier generation, then the lower index
    full = [e for e in evaluations if e.get("kind") == "candidate" and e.get("phase") == "full"]
    best = min(full, key=lambda e: (-e["fitness"], e["generation"], e["index"])) if full else None
    run["best"] = best
    if best is not None and run["best_fitness"] is None:
        run["best_fitness"] = best["fitness"]
    recipe = folder.file(BEST_RECIPE)
    run["best_recipe"] = recipe.read_text(encoding="utf-8") if recipe.is_file() else None
    report = folder.file(REPORT)
    run["report"] = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None
    run["child_dir"] = str(folder.file(CHILD)) if (folder.file(CHILD) / "config.json").is_file() else None
    run["events"] = folder.events()[-50:]
    return run


# --------------------------------------------------------------------------------------------- executing


def prepare_foreground(config: Any, runs_dir: str | Path | None = None, *, run_id: str | None = None,
                       token: str | None = None) -> RunFolder:
    """The folder for a run executed in this process (the CLI): a new one, or an unfinished one with the same
    config when `run_id` names it (running the same command again resumes it). `token`: the Hub token of the
    user who runs it (a gated parent is checked with it); never written."""
    root = runs_dir_default(runs_dir)
    if run_id:
        check_run_id(run_id)  # before the runs folder is made
    text = _checked_config(config, root, strict_hub=True, token=token)  # it runs right away: a Hub parent must resolve now
    with _queue_lock(root):
        if run_id and (root / check_run_id(run_id) / "config.yaml").is_file():
            folder = RunFolder(root / run_id)
            if folder.config_text() != text:
                raise DarwinError(f"Run {run_id} exists with a different config; choose another run id.")
            state = _state(folder)
            if state == FINISHED:
                raise DarwinError(f"Run {run_id} has already finished.")
            if state in (STARTING, RUNNING):
                raise DarwinError(f"Run {run_id} is already {state}.")
            folder.clear_cancel()
            folder.update_status(state=STARTING, error=None, finished_at=None)
            return folder
        return RunFolder.create(root, text, run_id=run_id, state=STARTING)


def execute(run_dir: str | Path, *, log: Callable[[str], None] | None = None,
            wrap_problem: Callable[[Any], Any] | None = None, token: str | None = None) -> str:
    """Execute (or resume) one run in this process; returns its final state. Never raises for a run failure:
    the failure is written to status.json (one sentence) and error.log (the traceback of a bug)."""
    from darwin_core.runs.jobs import execute_folder

    folder = RunFolder(run_dir)
    log = log or (lambda message: None)
    terminated = {"flag": False}

    def on_term(signum, frame):  # a polite stop (Space shutting down, `kill`): behave like cancel
        terminated["flag"] = True

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        with folder.hold_lock():
            if folder.read_status().get("state") == FINISHED:
                return FINISHED
            try:
                _check_trusted_here(folder)
            except DarwinError as error:
                return _fail(folder, str(error))
            if folder.cancel_requested():
                folder.update_status(state=CANCELLED, finished_at=now_iso())
                folder.append_event("cancelled")
                return CANCELLED
            folder.update_status(state=RUNNING, pid=os.getpid(), started_at=now_iso(), error=None, finished_at=None)
            folder.append_event("started", pid=os.getpid())
            try:
                outcome = execute_folder(folder, should_stop=lambda: terminated["flag"] or folder.cancel_requested(), log=log,
                                         wrap_problem=wrap_problem, token=token)
            except DarwinError as error:
                return _fail(folder, str(error))
            except Exception as error:  # noqa: BLE001 — a bug: one sentence in status, the traceback in error.log
                (folder.file(ERROR_LOG)).write_text(traceback.format_exc(), encoding="utf-8")
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                return _fail(folder, f"Unexpected error ({type(error).__name__}){': ' + message if message else ''}; see {ERROR_LOG} in the run folder.")
            if terminated["flag"] and outcome != FINISHED and not folder.cancel_requested():
                # Nobody cancelled it: the server is stopping. The status stays "running"; once this process lets
                # go of the run's lock the run reads as interrupted, and its owner resumes it from the checkpoint.
                folder.update_status(phase="stopped", note="stopped by a termination signal; resume it to continue")
                folder.append_event(INTERRUPTED, reason="termination signal")
                return INTERRUPTED
            folder.update_status(state=outcome, finished_at=now_iso(), phase=None if outcome == FINISHED else "stopped", note=None)
            folder.append_event(outcome)
            return outcome
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(folder: RunFolder, message: str) -> str:
    folder.update_status(state=FAILED, error=message, finished_at=now_iso())
    folder.append_event("failed", error=message)
    return FAILED


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------------------------- the worker


def worker_alive(runs_dir: str | Path | None = None) -> bool:
    """True while a worker process holds the runs folder's worker lock."""
    return lock_is_held(runs_dir_default(runs_dir) / WORKER_LOCK)


def ensure_worker(runs_dir: str | Path | None = None) -> bool:
    """Start a worker for the runs folder unless one is alive; True when one was started.

    The worker runs in its own session, so it outlives this process (a Gradio server, a shell). Two callers
    racing here may both start one: the second finds the lock taken and exits at once.
    """
    root = runs_dir_default(runs_dir)
    if worker_alive(root):
        return False
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(root / WORKER_LOG, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "darwin_core", "runs", "worker", "--runs-dir", str(root.resolve())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            cwd=str(REPO_ROOT),
        )
    return True


def start_worker_if_queued(runs_dir: str | Path | None = None) -> bool:
    """At start-up (the app, `runs resume`): runs queued before a restart would otherwise wait forever."""
    root = runs_dir_default(runs_dir)
    return root.is_dir() and _has_queued(root) and ensure_worker(root)


def _claim_next(root: Path) -> RunFolder | None:
    """The oldest queued run (by queue time, then id), marked starting; cancelled-while-queued runs are closed."""
    with _queue_lock(root):
        queued = []
        for folder in run_folders(root):
            status = folder.read_status()
            if status.get("state") != QUEUED:
                continue
            if folder.cancel_requested():
                folder.update_status(state=CANCELLED, finished_at=now_iso())
                folder.append_event("cancelled")
                continue
            queued.append((float(status.get("queued_at") or 0.0), folder.run_id, folder))
        if not queued:
            return None
        _, _, folder = min(queued, key=lambda q: (q[0], q[1]))
        folder.update_status(state=STARTING, claimed_at=time.time(), worker_pid=os.getpid())
        folder.append_event("claimed", worker_pid=os.getpid())
        return folder


def _has_queued(root: Path) -> bool:
    return any(f.read_status().get("state") == QUEUED for f in run_folders(root))


def work(runs_dir: str | Path | None = None, *, idle_seconds: float = IDLE_SECONDS) -> int:
    """The worker loop: execute queued runs one at a time until the queue has been empty for `idle_seconds`.

    Returns how many runs it executed. Exits at once (0) when another worker holds the lock.
    """
    root = runs_dir_default(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    done = 0
    while True:
        with open(root / WORKER_LOCK, "a+") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return done
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            idle_since = time.monotonic()
            while True:
                folder = _claim_next(root)
                if folder is None:
                    if time.monotonic() - idle_since >= idle_seconds:
                        break
                    time.sleep(POLL_SECONDS)
                    continue
                _run_child(folder)
                done += 1
                idle_since = time.monotonic()
        # The lock is released. A submit that saw this worker alive just before may have queued a run that no
        # one will start: look once more, and go on if there is one (another worker may already have it).
        if not _has_queued(root):
            return done


def _run_child(folder: RunFolder) -> None:
    """Execute one run in a child process and wait; a child that died without a final state failed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    cwd = folder.read_status().get("cwd")
    if not cwd or not Path(cwd).is_dir():
        cwd = str(REPO_ROOT)
    with open(folder.file("run.log"), "ab") as log:
        code = subprocess.call(
            [sys.executable, "-m", "darwin_core", "runs", "run", str(folder.path.resolve())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        )
    status = folder.read_status()
    stopped = status.get("phase") == "stopped"  # a termination signal: interrupted (resumable), not failed
    if status.get("state") in (STARTING, RUNNING, QUEUED) and not stopped and not folder.is_active():
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        _fail(folder, f"The run's process {how} before it finished; resume the run to continue from its last checkpoint.")
