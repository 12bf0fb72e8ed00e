"""The check-up of a run's child, with the run's own parents and probes, written where the card reads it.

The page, the CLI (`python -m darwin_core health RUN`) and the job queue all call `check_run`, so a health check
means the same thing wherever it was started: the child against the parents the run's config names, probed
with the texts the run's tasks bring (the default five when they bring none).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import CHILD, RunFolder
from darwin_core.mri.scan import save_json

HEALTH = "health.json"  # in the run folder, beside report.json: the card's health section


def run_probes(config: Mapping[str, Any], runs_dir: Path) -> Any:
    """The run's own probe texts when its tasks bring them (the demo tasks do), else None (the default five)."""
    from darwin_core.evolution.pipeline import EvolutionConfig, load_tasks
    from darwin_core.fitness.probes import probes_from_tasks

    try:
        tasks, _ = load_tasks(EvolutionConfig.from_dict(dict(config)), runs_dir=runs_dir)
        return probes_from_tasks(tasks)
    except DarwinError:
        return None


def _parent_dir(ref: str, local_mode: bool, runs_dir: Path) -> Path:
    from darwin_core.evolution.pipeline import resolve_parent

    return Path(resolve_parent(ref, local_mode=local_mode, runs_dir=runs_dir)[1])


def check_run(run_dir: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Check the child of the run in `run_dir` against its parents; writes and returns `health.json`."""
    from darwin_core.health.checkup import check_health

    folder = RunFolder(run_dir)
    child = folder.file(CHILD)
    if not (child / "config.json").is_file():
        raise DarwinError(f"Run {folder.run_id} has no child yet: the health check runs once the run has finished.")
    config = yaml.safe_load(folder.config_text()) or {}
    local = bool(config.get("local_mode", True))
    runs_dir = folder.path.parent
    report = check_health(
        child, _parent_dir(str(config["father"]), local, runs_dir), _parent_dir(str(config["mother"]), local, runs_dir),
        probes=run_probes(config, runs_dir), device=device,
    )
    save_json(report, folder.file(HEALTH))
    return report


def read_run_health(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's health.json, or None when no check-up has been written."""
    path = Path(run_dir) / HEALTH
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DarwinError(f"{HEALTH} in run {Path(run_dir).name} is not valid JSON.") from None
