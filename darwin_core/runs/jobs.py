"""Device jobs besides evolutions: MRI scans, health checks and chats, queued for the same worker.

The worker executes one job at a time, whatever its kind, so a scan asked for while an evolution runs waits
for it: two models never load onto one accelerator at once, and nothing heavy runs in the web process. A job
is a run folder like any other (`status.json`, `events.jsonl`, listed by `runs list`), whose config.yaml
names its kind. A scan's id is the hash of what decides its result (the parents' weight files or Hub
commits, and the probe set), so asking twice for the same scan is served from the stored `mri.json`; a health
check's id follows its run, and its result is the run's own `health.json`, where the card reads it. A chat
(one prompt answered by some of a run's models, `darwin_core.chat`) is named by the hash of its run, prompt,
models and sampling settings, so the same question is answered from the stored `chat.json`.

Tokens never reach a job: a gated or private Hub parent is downloaded with the visitor's token when the job
is asked for (`parent_for_job`), and the job names its cached commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import (
    CANCELLED,
    CHILD,
    FAILED,
    FINISHED,
    INTERRUPTED,
    MRI_SCAN,
    QUEUED,
    RunFolder,
    check_run_id,
    runs_dir_default,
)


class JobKind(str, Enum):
    """What a run folder's worker process does with it."""

    EVOLVE = "evolve"
    SCAN = "scan"
    HEALTH = "health"
    CHAT = "chat"


class ScanTarget(str, Enum):
    """Which parents an MRI scan looks at."""

    BOTH = "both"
    FATHER = "father"
    MOTHER = "mother"


CHAT_RESULT = "chat.json"  # in a chat job's folder: each model's answer
JOB_KEY = "job"  # the config.yaml key naming a job's kind; evolution configs have none
DEFAULT_PROBES = "default"  # the five built-in probe categories


def job_kind(config: Mapping[str, Any]) -> JobKind:
    """The kind of job a run folder's config describes (an evolution config has no `job` key)."""
    value = config.get(JOB_KEY, JobKind.EVOLVE.value)
    try:
        return JobKind(value)
    except ValueError:
        raise DarwinError(f"Unknown job kind {value!r}; known kinds are: {', '.join(k.value for k in JobKind)}.") from None


def asks_local_mode(config: Mapping[str, Any], runs_dir: Path) -> bool:
    """Whether executing this run folder's config would read local folders or files: an evolution or a scan by
    its own `local_mode` (True when absent, as on the CLI); a health check or a chat by the config of the run it
    reads, whose parents it loads."""
    if job_kind(config) in (JobKind.HEALTH, JobKind.CHAT):
        run_dir = runs_dir / check_run_id(str(config.get("run", "")))
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return False  # nothing to read: the job fails on its own, reading nothing local
    return bool(config.get("local_mode", True))


def check_local_mode_allowed(folder: RunFolder) -> None:
    """Refuse to execute a run that asks for local mode where this process may not grant it (a public Space):
    the page never writes such a config there, so one found in the runs folder was written by someone else."""
    from darwin_core.io.environment import LOCAL_MODE_ENV, local_mode_default

    if local_mode_default():
        return
    config = yaml.safe_load(folder.config_text()) or {}
    if isinstance(config, Mapping) and asks_local_mode(config, folder.path.parent):
        raise DarwinError(f"Run {folder.run_id} asks for local mode (folders and files of this machine), which this "
                          f"server does not allow ({LOCAL_MODE_ENV} is not 1); it will not run here.")


def compute_device() -> str:
    """Where scans and health checks run: the first GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parent_for_job(ref: str, *, local_mode: bool, token: str | None, zoo_dir: str | Path | None = None,
                   runs_dir: str | Path | None = None, may_breed_run: Callable[[str], bool] | None = None):
    """(the name a job's config gives the parent, its resolved ModelRef); one sentence when unknown.

    `demo:`/`run:` names and public Hub ids stay as typed; a local folder is named by its absolute path (local
    mode only); a gated or private Hub parent is downloaded now with the visitor's token and named by its
    cached commit, which the worker then reads without asking the Hub (the worker never sees a token).
    """
    from darwin_core.parents import Scheme, hub, parse_parent, resolve_parent_name

    text = (ref or "").strip()
    model = resolve_parent_name(text, local_mode=local_mode, token=token, runs_dir=runs_dir, zoo_dir=zoo_dir,
                                may_breed_run=may_breed_run)
    if parse_parent(text, local_mode=local_mode).scheme in (Scheme.DEMO, Scheme.RUN):
        return text, model
    if model.local:
        return str(Path(model.folder).resolve()), model
    if model.gated or model.private:
        model = hub.download(model, token=token)
        return f"{model.id}@{model.commit}", model
    return text, model


def model_identity(model: Any) -> list[Any]:
    """What decides a scan's input: a folder's weight and config files (name, size, time), or a Hub commit."""
    if model.folder is None:
        return [model.id, model.commit or model.revision]
    folder = Path(model.folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json"))
    return [str(folder.resolve())] + [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]


def scan_job_id(models: Sequence[Any], probes: str) -> str:
    key = json.dumps({"models": [model_identity(m) for m in models], "probes": probes}, sort_keys=True)
    return "scan-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def health_job_id(run_id: str) -> str:
    return "health-" + check_run_id(run_id)


def chat_job_id(run_id: str, prompt: str, models: Sequence[str], sampling: Mapping[str, Any]) -> str:
    key = json.dumps({"run": check_run_id(run_id), "prompt": prompt, "models": list(models), "sampling": dict(sampling)},
                     sort_keys=True)
    return "chat-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def submit_job(config: Mapping[str, Any], job_id: str, runs_dir: str | Path | None = None, *,
               start_worker: bool = True) -> str:
    """Queue a scan, health or chat job once: an existing job with this id is served (finished, queued or running)
    or queued again (failed, cancelled, interrupted). Returns the job id."""
    from darwin_core.runs.queue import _queue_lock, ensure_worker, read_state

    root = runs_dir_default(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(config), sort_keys=False)
    with _queue_lock(root):
        folder = RunFolder(root / check_run_id(job_id))
        if not folder.exists():
            RunFolder.create(root, text, run_id=job_id, state=QUEUED)
        elif read_state(folder) in (FAILED, CANCELLED, INTERRUPTED):
            folder.clear_cancel()
            folder.update_status(state=QUEUED, error=None, finished_at=None, queued_at=_now())
            folder.append_event("queued", again=True)
    if start_worker:
        ensure_worker(root)
    return job_id


def _now() -> float:
    import time

    return time.time()


def submit_scan(target: ScanTarget, parent_names: Sequence[str], models: Sequence[Any], *, probes: str,
                local_mode: bool, runs_dir: str | Path | None = None, start_worker: bool = True) -> str:
    """Queue an MRI scan of one parent or a pair (named as `parent_for_job` names them); returns the job id."""
    if len(parent_names) != (2 if target is ScanTarget.BOTH else 1):
        raise DarwinError("A pair scan needs both parents; a single scan needs one.")
    config = {JOB_KEY: JobKind.SCAN.value, "target": target.value, "parents": list(parent_names),
              "probes": probes, "local_mode": local_mode}
    if target is ScanTarget.BOTH:
        config["father"], config["mother"] = parent_names
    else:
        config[target.value] = parent_names[0]
    return submit_job(config, scan_job_id(models, probes), runs_dir, start_worker=start_worker)


def submit_health(run_id: str, runs_dir: str | Path | None = None, *, start_worker: bool = True) -> str:
    """Queue the health check of a finished run's child; returns the job id."""
    root = runs_dir_default(runs_dir)
    run = RunFolder(root / check_run_id(run_id))
    if not (run.file(CHILD) / "config.json").is_file():
        raise DarwinError(f"Run {run_id} has no child yet: the health check runs once the run has finished.")
    config = {JOB_KEY: JobKind.HEALTH.value, "run": run_id}
    return submit_job(config, health_job_id(run_id), root, start_worker=start_worker)


def submit_chat(run_id: str, prompt: str, models: Sequence[str], sampling: Mapping[str, Any] | None = None, *,
                local_mode: bool, runs_dir: str | Path | None = None, start_worker: bool = True) -> str:
    """Queue one prompt for some of a run's models (the child, candidates by name, "father", "mother"); returns
    the job id. Everything is checked first: off local mode the prompt is bounded by the prompt_chars quota."""
    from darwin_core.chat.answer import Sampling, check_prompt
    from darwin_core.chat.models import check_models
    from darwin_core.runs.quotas import Quotas

    root = runs_dir_default(runs_dir)
    run = RunFolder(root / check_run_id(run_id))
    if not run.exists():
        raise DarwinError(f"There is no run {run_id!r} in {root}.")
    text = check_prompt(prompt, limit=None if local_mode else Quotas.from_env().prompt_chars)
    names = check_models(run.path, models)
    settings = Sampling.from_dict(sampling).to_dict()
    config = {JOB_KEY: JobKind.CHAT.value, "run": run_id, "prompt": text, "models": names, "sampling": settings}
    return submit_job(config, chat_job_id(run_id, text, names, settings), root, start_worker=start_worker)


def job_result(job_id: str, runs_dir: str | Path | None = None) -> tuple[str, Any]:
    """(state, payload): ("finished", the result), ("failed", its sentence) or (state, None) while it waits."""
    from darwin_core.runs.queue import read_state

    root = runs_dir_default(runs_dir)
    folder = RunFolder(root / check_run_id(job_id))
    if not folder.exists():
        return "none", None
    state = read_state(folder)
    if state == FAILED:
        return FAILED, folder.read_status().get("error") or "The job failed."
    if state != FINISHED:
        return state, None
    config = yaml.safe_load(folder.config_text()) or {}
    kind = job_kind(config)
    if kind is JobKind.SCAN:
        result = folder.file(MRI_SCAN)
    elif kind is JobKind.CHAT:
        result = folder.file(CHAT_RESULT)
    else:
        result = root / str(config["run"]) / "health.json"
    try:
        return FINISHED, json.loads(result.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return FAILED, f"The job finished but its result {result.name} cannot be read."


def execute_folder(folder: RunFolder, *, should_stop: Callable[[], bool], log: Callable[[str], None],
                   wrap_problem: Callable[[Any], Any] | None = None, token: str | None = None) -> str:
    """Do what the run folder's config asks (an evolution, a scan, a health check, a chat); returns the final state.
    `token`: the Hub token of the user executing their own evolution (CLI, Job) for parents not cached here."""
    config = yaml.safe_load(folder.config_text()) or {}
    if job_kind(config) is not JobKind.EVOLVE:
        return execute_job(folder, config)
    from darwin_core.evolution.pipeline import EvolutionConfig, run_evolution

    return run_evolution(EvolutionConfig.from_yaml(folder.config_text()), folder.path, should_stop=should_stop, log=log,
                         wrap_problem=wrap_problem, token=token)


def execute_job(folder: RunFolder, config: Mapping[str, Any]) -> str:
    """Run a scan, health or chat job in this process (the worker's child); returns FINISHED (a DarwinError fails it)."""
    kind = job_kind(config)
    device = compute_device()
    if kind is JobKind.SCAN:
        _run_scan(folder, config, device)
    elif kind is JobKind.HEALTH:
        from darwin_core.health.run import check_run

        check_run(runs_dir_default(folder.path.parent) / check_run_id(str(config["run"])), device=device)
    elif kind is JobKind.CHAT:
        _run_chat(folder, config, device)
    else:
        raise DarwinError("An evolution is not a scan or health job.")
    return FINISHED


def _run_scan(folder: RunFolder, config: Mapping[str, Any], device: str) -> None:
    from darwin_core.evolution.pipeline import resolve_parent
    from darwin_core.fitness.probes import resolve_probes
    from darwin_core.mri.scan import save_scan, scan_model, scan_pair

    local = bool(config.get("local_mode", True))
    folders = [resolve_parent(str(name), local_mode=local, runs_dir=folder.path.parent)[1] for name in config["parents"]]
    probes = None if config.get("probes") == DEFAULT_PROBES else resolve_probes(config.get("probes"))
    if ScanTarget(config["target"]) is ScanTarget.BOTH:
        scan = scan_pair(folders[0], folders[1], probes=probes, device=device)
    else:
        scan = scan_model(folders[0], probes=probes, device=device)
    save_scan(scan, folder.file(MRI_SCAN))


def _run_chat(folder: RunFolder, config: Mapping[str, Any], device: str) -> None:
    from darwin_core.chat.answer import Sampling, chat_run
    from darwin_core.io.runfolder import atomic_write_text

    run_dir = runs_dir_default(folder.path.parent) / check_run_id(str(config["run"]))
    result = chat_run(run_dir, str(config["prompt"]), list(config["models"]), Sampling.from_dict(config.get("sampling")),
                      device=device)
    atomic_write_text(folder.file(CHAT_RESULT), json.dumps(result, indent=1) + "\n")


def wait_until_idle(runs_dir: str | Path | None = None, timeout: float = 300.0) -> bool:
    """Wait until no job in the runs folder is queued or running and its worker has exited (tests, shutdown)."""
    import time

    from darwin_core.io.runfolder import run_folders
    from darwin_core.runs.queue import read_state, worker_alive

    root = runs_dir_default(runs_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = root.exists() and any(read_state(f) in (QUEUED, "starting", "running") for f in run_folders(root))
        if not busy and not worker_alive(root):
            return True
        time.sleep(0.2)
    return False
