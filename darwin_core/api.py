"""The façade the page and the command line call: inspect, scan, breed, merge, check, card, publish.

Every rule that decides what a visitor may do lives behind these functions (or in the layers they call), so the
UI only lays out components and renders what comes back, and the CLI can do whatever the page does. Long device
work (evolutions, scans, health checks) is queued for the one worker; these functions return a job id at once.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    submit_health,
    submit_scan,
)

__all__ = [
    "DEFAULT_PROBES", "DarwinError", "JobKind", "ScanTarget", "check", "compute_device", "health_job_id", "job_result",
    "parent_for_job", "run_health", "scan",
]


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
