"""Queue a breeding for a visitor: every check (quotas, the parents and the visitor's right to them, the pair's
compatibility, the tasks) runs before anything is written, then the run is queued and its owner recorded.

The page collects the form into a `BreedRequest`; this module decides whether it may run. Off local mode the
worker refuses every path a visitor could have typed, so the run's parents are demo:, run: or Hub ids, and
its tasks are files written here (`stage_tasks`): uploads copied into the runs folder, Hub and lm-eval tasks
fetched here with the visitor's token (or none), so the worker never fetches anything for a visitor.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from darwin_core.io.atomic import atomic_write_bytes
from darwin_core.io.runfolder import RunFolder
from darwin_core.runs.owners import Visitor, app_secret, may_breed_from, record_owner, visitor_usage


@dataclass(frozen=True)
class BreedRequest:
    """A breeding as the page asks for it: the parents as typed or picked, the tasks, the search settings
    (EvolutionConfig fields), and the frozen layers as the visitor wrote them ("0, 3, 5-7")."""

    father: str
    mother: str
    tasks: Sequence[Mapping[str, Any]]
    settings: Mapping[str, Any] = field(default_factory=dict)
    frozen_layers: str | None = None


def _stage_upload(path: Path, runs_dir: Path) -> str:
    """Copy one task file into the runs folder's uploads area (content-addressed); returns its absolute path."""
    from darwin_core.fitness.policy import uploads_dir

    data = Path(path).read_bytes()
    target = uploads_dir(runs_dir) / hashlib.sha256(data).hexdigest()[:16] / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return str(target.resolve())


def stage_tasks(config: Any, *, runs_dir: Path, local_mode: bool, token: str | None, quotas: Any) -> Any:
    """Load every task (one sentence for a bad one, before anything is written), check the item quotas, then
    keep the run's data where the worker may read it (see the module docstring)."""
    from darwin_core.evolution.pipeline import TaskSpec, load_spec
    from darwin_core.fitness.policy import check_untrusted_tasks, materialize_task
    from darwin_core.fitness.sources import expand_task_paths
    from darwin_core.runs.quotas import check_items

    if not local_mode:
        check_untrusted_tasks([t for t in config.tasks if t.source != "file"], runs_dir=runs_dir)
    loaded = [(spec, load_spec(spec, split_seed=config.split_seed, hub_token=token or (None if local_mode else False)))
              for spec in config.tasks]
    if quotas is not None:
        check_items(quotas, [task for _, tasks in loaded for task in tasks])
    staged: list[TaskSpec] = []
    for spec, tasks in loaded:
        if spec.source == "file":
            files = [_stage_upload(path, runs_dir) for path in expand_task_paths(spec.ref)]
            staged.append(replace(spec, ref=files[0] if len(files) == 1 else tuple(files)))
        elif local_mode or spec.source == "demo":
            staged.append(spec)
        else:
            for task in tasks:
                path = materialize_task(task, runs_dir)
                staged.append(TaskSpec(source="file", ref=str(path.resolve()), name=task.name,
                                       weight=spec.weight / len(tasks)))
    return replace(config, tasks=tuple(staged))


@dataclass(frozen=True)
class CheckedBreed:
    """A breeding every check has passed: the config to run (tasks staged into the runs folder) and whether a
    parent is gated or private (its pinned id is then shown to the run's owner only)."""

    config: Any
    parents_restricted: bool


def check_breed(request: BreedRequest, who: Visitor, *, runs_dir: str | Path, local_mode: bool, token: str | None,
                zoo_dir: str | Path | None = None) -> CheckedBreed:
    """Every check of a breeding (quotas, the parents and the visitor's right to them, the pair, the tasks), with
    nothing written but the staged task files; one sentence (DarwinError) for the first that fails. A local run
    and a Hugging Face Job pass the same checks, so a Job asks nothing a local run could not."""
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.parents.compatibility import check_breedable
    from darwin_core.runs import quotas as limits
    from darwin_core.runs.jobs import parent_for_job

    runs_dir = Path(runs_dir)
    secret = app_secret(runs_dir)
    quotas = None if local_mode else limits.Quotas.from_env()
    population, generations = int(request.settings.get("population", 8)), int(request.settings.get("generations", 10))
    if quotas is not None:
        limits.check_budget(quotas, population=population, generations=generations)
        limits.check_visitor(quotas, **visitor_usage(runs_dir, who, secret), candidates_asked=population * generations)
    may_breed = functools.partial(may_breed_from, runs_dir=runs_dir, who=who, secret=secret, local_mode=local_mode)
    found = {role: parent_for_job(ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir,
                                  may_breed_run=may_breed)
             for role, ref in (("father", request.father), ("mother", request.mother))}
    check_breedable(found["father"][1], found["mother"][1])
    config = EvolutionConfig.from_dict({
        "father": found["father"][0], "mother": found["mother"][0], "tasks": [dict(t) for t in request.tasks],
        **request.settings,
        "frozen_layers": limits.parse_frozen_layers(request.frozen_layers, found["father"][1].num_layers),
        "local_mode": local_mode,
    })
    config = stage_tasks(config, runs_dir=runs_dir, local_mode=local_mode, token=token, quotas=quotas)
    return CheckedBreed(config=config, parents_restricted=any(model.gated or model.private for _, model in found.values()))


def breed(request: BreedRequest, who: Visitor, *, runs_dir: str | Path, local_mode: bool, token: str | None,
          zoo_dir: str | Path | None = None) -> str:
    """Validate everything, queue the run, record its owner; returns the run id (DarwinError for bad input)."""
    from darwin_core.runs import queue

    runs_dir = Path(runs_dir)
    checked = check_breed(request, who, runs_dir=runs_dir, local_mode=local_mode, token=token, zoo_dir=zoo_dir)
    run_id = queue.submit(checked.config, runs_dir, start_worker=False)
    record_owner(runs_dir / run_id, who, app_secret(runs_dir))
    if checked.parents_restricted:
        RunFolder(runs_dir / run_id).update_status(parents_restricted=True)
    queue.ensure_worker(runs_dir)
    return run_id
