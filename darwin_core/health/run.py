"""The check-up of a run's child, with the run's own parents and probes, written where the card reads it.

The page, the CLI (`python -m darwin_core health RUN`) and the job queue all call `check_run`, so a health check
means the same thing wherever it was started: the child against the parents the run's config names, probed
with the texts the run's MRI used (its `probes:` file, else its tasks' search split, else the default five), and
task by task on the held-out items the run's report measured (heldout-results.json, no model scored twice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from darwin_core.errors import DarwinError
from darwin_core.evolution.report import HELDOUT_RESULTS
from darwin_core.io.runfolder import CHILD, RunFolder
from darwin_core.mri.scan import save_json

HEALTH = "health.json"  # in the run folder, beside report.json: the card's health section


def run_tasks(config: Mapping[str, Any], runs_dir: Path) -> list[Any]:
    """The run's tasks, split as the run split them; [] when they cannot be loaded (the check is then layer-level)."""
    from darwin_core.evolution.pipeline import EvolutionConfig, load_tasks

    try:
        return load_tasks(EvolutionConfig.from_dict(dict(config)), runs_dir=runs_dir)[0]
    except DarwinError:
        return []


def run_probes(config: Mapping[str, Any], runs_dir: Path, tasks: list[Any] | None = None) -> Any:
    """The probes the run's MRI uses: the config's `probes:` file, else texts from its tasks' search split, else
    None (the default five)."""
    from darwin_core.mri.probes import GENERIC_PROBES, choose_probes

    probes, source = choose_probes(run_tasks(config, runs_dir) if tasks is None else tasks, config.get("probes"))
    return None if source == GENERIC_PROBES else probes


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
    tasks = run_tasks(config, runs_dir)
    heldout_file = folder.file(HELDOUT_RESULTS)
    heldout = json.loads(heldout_file.read_text(encoding="utf-8")) if heldout_file.is_file() else None
    report = check_health(
        child, _parent_dir(str(config["father"]), local, runs_dir), _parent_dir(str(config["mother"]), local, runs_dir),
        probes=run_probes(config, runs_dir, tasks), device=device, tasks=tasks, heldout_results=heldout,
        seed=int(config.get("seed", 0)),
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
