"""Probe texts drawn from fitness tasks: the MRI sees the inputs the child will be judged on.

The MRI itself takes any mapping category → texts (`darwin_core.mri.probes`, which also holds the one
implementation that turns tasks into probes, `probes_from_search_split`); this module names it for fitness tasks,
gives the name `demo` (CLI: `--probes demo`) to the demo zoo's own tasks, and vets a visitor's `probes:` file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.fitness.tasks import Task
from darwin_core.mri.probes import PROBE_FILE_SUFFIXES, Probes, probes_from_search_split
from darwin_core.mri.probes import resolve_probes as resolve_probe_texts

DEMO = "demo"  # the name that selects the demo zoo's own probes (CLI: --probes demo)


def probes_from_tasks(tasks: Iterable[Task]) -> Probes:
    """One probe category per task: the texts it brings, else worked examples of its search split (never
    held-out items); `mri.probes.probes_from_search_split` is the one implementation, this adds the sentence."""
    probes = probes_from_search_split(tasks)
    if not probes:
        raise DarwinError("None of these tasks brings probe texts or search items, so they cannot drive the MRI.")
    return probes


def vet_probes_file(path: str | Path, *, local_mode: bool, runs_dir: str | Path | None) -> None:
    """A `probes:` file is a visitor's file on a public Space (local mode off, or SPACE_ID set): like a task
    file (fitness.policy) it must be a YAML file the page copied into the runs folder's uploads area, never
    another path on the server. Where the user owns the machine any readable file is theirs to name."""
    import os

    from darwin_core.fitness.policy import uploads_dir

    if local_mode and not os.environ.get("SPACE_ID"):
        return
    file = Path(path)
    inside = False
    if runs_dir is not None:
        try:
            root = uploads_dir(runs_dir).resolve()
            inside = file.resolve().is_relative_to(root) and file.resolve() != root
        except (OSError, RuntimeError, ValueError):
            inside = False
    if not inside or file.suffix.lower() not in PROBE_FILE_SUFFIXES:
        name = file.name or str(file)
        raise DarwinError("On a public Space a probes file must be uploaded on the page (.yaml or .yml); "
                          f"{name[:80]!r} was not.")


def demo_probes() -> Probes:
    """The demo zoo's probes: one category per demo skill, worked examples from its search split."""
    from darwin_core.fitness.demo_tasks import demo_tasks

    return probes_from_tasks(demo_tasks())


def resolve_probes(probes: Mapping[str, Iterable[str]] | str | Path | None) -> Probes:
    """Accept None (the five defaults), "demo" (the demo tasks' probes), a YAML path, or a mapping."""
    if isinstance(probes, str) and probes == DEMO:
        return demo_probes()
    return resolve_probe_texts(probes)
