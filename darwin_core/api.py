"""The façade the page and the command line call: inspect, scan, breed, merge, check, try, card, publish.

Every rule that decides what a visitor may do lives behind these functions (or in the layers they call), so the
UI only lays out components and renders what comes back, and the CLI can do whatever the page does. Long device
work (evolutions, scans, health checks, chats) is queued for the one worker; these functions return a job id at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.runs.jobs import (
    DEFAULT_PROBES,
    JobKind,
    ScanTarget,
    compute_device,
    health_job_id,
    job_result,
    parent_for_job,
    submit_chat,
    submit_health,
    submit_scan,
)

# What the page and the CLI read besides the functions below: names, constants and small readers, imported when
# first used (the page starts without loading torch, transformers or plotly).
REEXPORTS: dict[str, str] = {
    **dict.fromkeys(("CANCELLED", "CHILD", "FAILED", "FINAL_STATES", "FINISHED", "INTERRUPTED", "PUBLISHED",
                     "RunFolder", "check_run_id", "runs_dir_default"), "darwin_core.io.runfolder"),
    **dict.fromkeys(("atomic_write_text",), "darwin_core.io.atomic"),
    **dict.fromkeys(("local_mode_default", "on_space"), "darwin_core.io.environment"),
    **dict.fromkeys(("DEMO_PREFIX", "RUN_PREFIX", "Scheme", "parse_parent", "parent_label", "resolve_parent_name"),
                    "darwin_core.parents"),
    **dict.fromkeys(("ModelRef", "compatibility", "search_models", "seal_ambient_token"), "darwin_core.parents.hub"),
    **dict.fromkeys(("classify",), "darwin_core.parents.anatomy"),
    **dict.fromkeys(("tokenizer_report",), "darwin_core.parents.tokenizers"),
    **dict.fromkeys(("DEFAULT_ZOO_DIR", "load_zoo_manifest", "zoo_paths"), "darwin_core.parents.demo"),
    **dict.fromkeys(("family_breed_settings",), "darwin_core.zoo.rivals"),
    **dict.fromkeys(("SPACE_NAMES", "get_space"), "darwin_core.genome.spaces"),
    **dict.fromkeys(("method_names",), "darwin_core.merge.methods.registry"),
    **dict.fromkeys(("layer_map_rows",), "darwin_core.merge.pairing"),
    **dict.fromkeys(("DEMO_SKILLS", "SKILLS"), "darwin_core.fitness.demo_tasks"),
    **dict.fromkeys(("parse_candidate_name",), "darwin_core.evolution.pipeline"),
    **dict.fromkeys(("estimate_cost", "estimate_run_cost"), "darwin_core.evolution.cost"),
    **dict.fromkeys(("placement_sentence",), "darwin_core.evolution.preflight"),
    **dict.fromkeys(("throughput", "timed_eta_seconds"), "darwin_core.evolution.timing"),
    **dict.fromkeys(("card_text", "curve_png", "heldout_rows", "inline_pictures", "write_card"),
                    "darwin_core.publishing.cardgen"),
    **dict.fromkeys(("report_evidence",), "darwin_core.publishing.card"),
    **dict.fromkeys(("push_to_hub", "save_locally", "zip_child"), "darwin_core.publishing.push"),
    **dict.fromkeys(("Quotas", "check_upload", "parse_frozen_layers"), "darwin_core.runs.quotas"),
    **dict.fromkeys(("cancel", "ensure_worker", "list_runs", "read_run", "read_state", "resume",
                     "start_worker_if_queued"), "darwin_core.runs.queue"),
    **dict.fromkeys(("OWNER_FILE", "REFUSED", "SECRET_ENV", "SECRET_FILE", "Visitor", "app_secret", "is_owner",
                     "may_breed_from", "read_owners", "record_owner", "require_owner", "visitor_usage"),
                    "darwin_core.runs.owners"),
    **dict.fromkeys(("BreedRequest", "CheckedBreed", "breed", "check_breed", "stage_tasks"), "darwin_core.runs.breeding"),
    **dict.fromkeys(("FLAVOR_NAMES", "JobPlan", "job_stage", "plan_job"), "darwin_core.runs.hfjobs"),
}

__all__ = [
    "DEFAULT_PROBES", "DarwinError", "JobKind", "ScanTarget", "chat", "chat_models", "check", "compute_device", "health_job_id", "job_result",
    "follow_hf_job", "launch_hf_job", "mark_published", "parent_for_job", "run_health", "scan", *REEXPORTS,
]


def __getattr__(name: str) -> Any:
    module = REEXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'darwin_core.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def scan(which: str, refs: Mapping[str, str], probes: str, *, local_mode: bool, token: str | None,
         zoo_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> tuple[str, list[str]]:
    """Queue an MRI scan of the father, the mother or both (`which`); returns (job id, the parents as named).

    A pair scan needs parents with the same tensors (its divergence and prescription compare them one by one).
    """
    try:
        target = ScanTarget(which)
    except ValueError:
        raise DarwinError("Choose what to scan: both parents, the father or the mother.") from None
    roles = ["father", "mother"] if target is ScanTarget.BOTH else [target.value]
    names, models = [], []
    for role in roles:
        name, model = parent_for_job(refs[role], local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
        names.append(name)
        models.append(model)
    if target is ScanTarget.BOTH:
        from darwin_core.parents import hub

        compat = hub.compatibility(*models)
        if compat.verdict != "full":
            raise DarwinError(f"A pair scan needs parents with the same tensors: {compat.reason}")
    labels = [refs[role].strip() for role in roles]
    job_id = submit_scan(target, names, models, probes=probes, local_mode=local_mode, runs_dir=runs_dir)
    return job_id, labels


def check(run_id: str, runs_dir: str | Path | None = None) -> str:
    """Queue the health check of a finished run's child against its parents; returns the job id."""
    return submit_health(run_id, runs_dir)


def run_health(run_id: str, runs_dir: str | Path | None = None) -> Any:
    """The run's stored health check (`health.json`), or None when none has been written."""
    from darwin_core.health.run import read_run_health
    from darwin_core.io.runfolder import check_run_id, runs_dir_default

    return read_run_health(runs_dir_default(runs_dir) / check_run_id(run_id))


def mark_published(run_dir: str | Path, repo_id: str, url: str) -> None:
    """Record that a run's child is public on the Hub: from then on anyone may breed from it (`run:` parents)."""
    import json

    from darwin_core.io.atomic import atomic_write_text
    from darwin_core.io.runfolder import PUBLISHED

    atomic_write_text(Path(run_dir) / PUBLISHED, json.dumps({"repo_id": repo_id, "url": url}) + "\n")


def chat_models(run_id: str, runs_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, name) of every model of the run one can talk to: the child, the parents, the measured candidates."""
    from darwin_core.chat.models import model_choices
    from darwin_core.io.runfolder import check_run_id, runs_dir_default

    return model_choices(runs_dir_default(runs_dir) / check_run_id(run_id))


def chat(run_id: str, prompt: str, models: Sequence[str], sampling: Mapping[str, Any] | None = None, *,
         local_mode: bool, runs_dir: str | Path | None = None) -> str:
    """Queue one prompt for some of a run's models (the child, a candidate by name, "father", "mother"); returns
    the job id, whose result (`job_result`) holds each model's answer. Asked again, it is served from the store.

    sampling: {"sample": bool, "temperature", "top_p", "max_new_tokens", "seed"} (greedy when absent).
    """
    return submit_chat(run_id, prompt, models, sampling, local_mode=local_mode, runs_dir=runs_dir)


def launch_hf_job(config: Any, who: Any, *, runs_dir: str | Path, token: str | None, local_mode: bool,
                  flavor: str | None = None, push_repo: str | None = None, seconds_per_candidate: float | None = None,
                  zoo_dir: str | Path | None = None) -> tuple[str, Any]:
    """Run a checked breeding config as a Hugging Face Job on the visitor's account: (run id, JobPlan).

    The flavour follows from both parents' size and the estimate unless the visitor chose one; the run folder
    is written into the (bucketed) runs folder the page already lists, so the Job's run shows like any other.
    """
    from darwin_core.runs import hfjobs

    pair_bytes = sum(parent_for_job(ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)[1].bytes
                     for ref in (config.father, config.mother))
    per_candidate = seconds_per_candidate or hfjobs.estimate_seconds_per_candidate(config, pair_bytes)
    plan = hfjobs.plan_job(config, pair_bytes, per_candidate, flavor=flavor)
    return hfjobs.launch_job(config, runs_dir, token=token, who=who, plan=plan, push_repo=push_repo), plan


def follow_hf_job(run_id: str, who: Any, *, runs_dir: str | Path, token: str | None, local_mode: bool) -> bool:
    """For the page polling its run: when the run is a Hugging Face Job of this visitor's that ended before the run
    did, record it as failed (resumable) and return True. Another visitor's run asks the Hub nothing."""
    from darwin_core.io.runfolder import check_run_id
    from darwin_core.runs import hfjobs, owners

    run_dir = Path(runs_dir) / check_run_id(run_id)
    if not owners.is_owner(run_dir, who, owners.app_secret(Path(runs_dir)), local_mode=local_mode):
        return False
    return hfjobs.follow_job(run_dir, token=token)


def follow_hf_jobs(who: Any, *, runs_dir: str | Path, token: str | None, local_mode: bool,
                   runs: list[dict[str, Any]] | None = None) -> int:
    """For the Runs tab's list: `follow_hf_job` for this visitor's newest Job runs that still read as starting or
    running, at most `hfjobs.JOBS_ASKED_PER_LISTING` Hub calls, so a Job that died shows as failed in the list too
    and not only on its owner's Evolve tab. Signed out, the Hub is not asked. `runs`: the listing already read
    (`list_runs`), else it is read here. Returns how many runs were settled."""
    from darwin_core.io.runfolder import RUNNING, STARTING, RunFolder
    from darwin_core.runs import hfjobs, owners, queue

    if not token:
        return 0
    runs_dir, asked, settled = Path(runs_dir), 0, 0
    secret = owners.app_secret(runs_dir)
    for run in queue.list_runs(runs_dir) if runs is None else runs:  # newest first; an ended run needs no second read
        run_dir = runs_dir / run["run_id"]
        if asked >= hfjobs.JOBS_ASKED_PER_LISTING:
            break
        if run.get("state") not in (STARTING, RUNNING):
            continue
        if hfjobs.held_remotely(RunFolder(run_dir)) and owners.is_owner(run_dir, who, secret, local_mode=local_mode):
            asked += 1
            settled += hfjobs.follow_job(run_dir, token=token)
    return settled
