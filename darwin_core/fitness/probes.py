"""Probe texts drawn from fitness tasks: the MRI sees the inputs the child will be judged on.

The MRI itself takes any mapping category → texts (`darwin_core.mri.probes`); this module turns tasks into
one, and gives the name `demo` (CLI: `--probes demo`) to the demo zoo's own tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.fitness.tasks import Task
from darwin_core.mri.probes import Probes, validate_probes
from darwin_core.mri.probes import resolve_probes as resolve_probe_texts

DEMO = "demo"  # the name that selects the demo zoo's own probes (CLI: --probes demo)


def probes_from_tasks(tasks: Iterable[Task]) -> Probes:
    """One probe category per task, from the texts the task brings (`Task.probe_prompts`)."""
    probes = {task.name: list(task.probe_prompts) for task in tasks if task.probe_prompts}
    if not probes:
        raise DarwinError("None of these tasks brings probe texts, so they cannot drive the MRI.")
    return validate_probes(probes)


def demo_probes() -> Probes:
    """The demo zoo's probes: one category per demo skill, worked examples from its search split."""
    from darwin_core.fitness.demo_tasks import demo_tasks

    return probes_from_tasks(demo_tasks())


def resolve_probes(probes: Mapping[str, Iterable[str]] | str | Path | None) -> Probes:
    """Accept None (the five defaults), "demo" (the demo tasks' probes), a YAML path, or a mapping."""
    if isinstance(probes, str) and probes == DEMO:
        return demo_probes()
    return resolve_probe_texts(probes)
