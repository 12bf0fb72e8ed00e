"""Loading a config's fitness tasks: each TaskSpec read from its source and split into search / held-out items.

The split is seeded by the config's `split_seed` alone, so runs with different CMA-ES seeds are judged on the
same held-out items; the UI's task preview and the health check load tasks through the same functions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig, TaskSpec
from darwin_core.fitness.tasks import Task


def load_tasks(config: EvolutionConfig, *, runs_dir: str | Path | None = None,
               visitor_token: str | None = None) -> tuple[list[Task], dict[str, float]]:
    """The config's tasks, split with `split_seed`, and their composite weights (by task name).

    With local mode off, darwin_core.fitness.policy vets every task before anything is loaded, and Hub
    datasets are read with the visitor's token (the page) or none (token=False, the worker): never with the
    server's own token.
    """
    from darwin_core.fitness.policy import check_untrusted_tasks

    if not config.local_mode:
        check_untrusted_tasks(config.tasks, runs_dir=runs_dir)
    hub_token: str | bool | None = visitor_token or (None if config.local_mode else False)
    tasks: list[Task] = []
    weights: dict[str, float] = {}
    for spec in config.tasks:
        loaded = load_spec(spec, split_seed=config.split_seed, hub_token=hub_token)
        for task in loaded:
            if task.name in weights:
                raise DarwinError(f"Two tasks are named {task.name!r}; give one of them another name.")
            if task.name == "composite":
                raise DarwinError("A task may not be named 'composite'; that name is kept for the weighted composite.")
            tasks.append(task)
            weights[task.name] = spec.weight / len(loaded)  # an lm-eval group shares its weight among subtasks
    return tasks, weights


def load_spec(spec: TaskSpec, *, split_seed: int, hub_token: str | bool | None = None) -> list[Task]:
    """The task(s) one spec names (an lm-eval group gives several), split with `split_seed`."""
    from darwin_core.fitness import sources
    from darwin_core.fitness.demo_tasks import demo_task

    if spec.source == "demo":
        loaded = [demo_task(spec.ref, split_seed, limit=spec.limit)]
        if spec.max_new_tokens is not None:
            loaded = [replace(t, max_new_tokens=spec.max_new_tokens) for t in loaded]
        return [replace(t, name=spec.name) for t in loaded] if spec.name else loaded
    if spec.source == "file":
        return [sources.load_task(spec.ref, format=spec.format or "user", name=spec.name, seed=split_seed, limit=spec.limit,
                                  max_new_tokens=spec.max_new_tokens)]
    if spec.source == "hub":
        return [sources.load_hub_task(spec.ref, format=spec.format, config=spec.config, split=spec.split, name=spec.name,
                                      seed=split_seed, limit=spec.limit, token=hub_token, max_new_tokens=spec.max_new_tokens)]
    if spec.source == "lm_eval":
        return sources.tasks_from_lm_eval([spec.ref], include_path=spec.include_path, seed=split_seed, limit=spec.limit)
    raise DarwinError(f"Unknown task source {spec.source!r}.")

