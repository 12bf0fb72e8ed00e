"""MRI probe texts: what the scan runs through a model to see which layers each kind of input relies on.

Probes are data, not code: the defaults (seed 002's five categories REASONING, CODE, MATH, KNOWLEDGE,
LANGUAGE) live in `darwin_core/mri/data/probes.yaml` and can be replaced by any mapping category → texts, e.g.
the demo zoo's tasks, which bring their own worked examples (`darwin_core.fitness.probes`). A category's weight in
the prescription defaults to an equal share (weights sum to 1, so the probe score stays on the scale of one
cosine distance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import yaml

from darwin_core.errors import DarwinError

DEFAULT_PROBES_PATH = Path(__file__).resolve().parent / "data" / "probes.yaml"
DEFAULT_CATEGORIES: tuple[str, ...] = ("REASONING", "CODE", "MATH", "KNOWLEDGE", "LANGUAGE")

Probes = dict[str, list[str]]

PROBES_PER_TASK = 8  # worked examples per task: enough for a stable mean importance, cheap next to a fitness pass
TASK_PROBES = "tasks (search split)"
PROBE_FILE_SUFFIXES = (".yaml", ".yml")
MAX_PROBE_FILE_BYTES = 1_000_000  # a probe file is a few hundred texts; more is not a probe set, and is refused
GENERIC_PROBES = "generic five categories (no tasks)"


class ProbeItem(Protocol):
    """What the MRI reads of a fitness item (darwin_core.fitness.tasks.Item, which this layer may not import)."""

    prompt: str
    answer: str
    choices: tuple[str, ...] | None


class ProbeTask(Protocol):
    """What the MRI reads of a fitness task: its name, its search split, and the probe texts it may bring."""

    name: str
    search: Sequence[ProbeItem]
    probe_prompts: Sequence[str]


def validate_probes(probes: Mapping[str, Iterable[str]]) -> Probes:
    """A clean copy (category → list of texts), or DarwinError naming what is wrong."""
    if not isinstance(probes, Mapping) or not probes:
        raise DarwinError("The probe set is empty; give at least one category with at least one text.")
    clean: Probes = {}
    for category, texts in probes.items():
        if not isinstance(category, str) or not category.strip():
            raise DarwinError("Every probe category needs a non-empty name.")
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise DarwinError(f"Probe category {category!r} must be a list of texts.")
        items = list(texts)
        if not items or not all(isinstance(t, str) and t.strip() for t in items):
            raise DarwinError(f"Probe category {category!r} needs at least one text, and every text must be non-empty.")
        clean[category] = items
    return clean


def load_probes(path: str | Path | None = None) -> Probes:
    """Probe texts from a YAML file (category: [texts]); the shipped defaults when `path` is None. The file is
    data only (yaml.safe_load, never a tag that builds an object) and bounded in size (MAX_PROBE_FILE_BYTES)."""
    file = Path(path) if path is not None else DEFAULT_PROBES_PATH
    try:
        if file.is_dir():
            raise DarwinError(f"The probe file {file} is a folder, not a YAML file.")
        if file.stat().st_size > MAX_PROBE_FILE_BYTES:
            raise DarwinError(f"The probe file {file} is larger than {MAX_PROBE_FILE_BYTES // 1_000_000} MB; "
                              "a probe set is a few hundred texts.")
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DarwinError(f"The probe file {file} does not exist.") from None
    except UnicodeDecodeError:
        raise DarwinError(f"The probe file {file} is not UTF-8 text.") from None
    except yaml.YAMLError as error:
        raise DarwinError(f"The probe file {file} is not valid YAML ({error.__class__.__name__}).") from None
    except OSError as error:
        raise DarwinError(f"The probe file {file} cannot be read ({error.strerror or type(error).__name__}).") from None
    return validate_probes(data or {})


def default_probes() -> Probes:
    return load_probes(None)


def resolve_probes(probes: Mapping[str, Iterable[str]] | str | Path | None) -> Probes:
    """Accept None (the five defaults), a YAML path, or a mapping (the demo tasks' probes: `fitness.probes`)."""
    if probes is None:
        return default_probes()
    if isinstance(probes, (str, Path)):
        return load_probes(probes)
    return validate_probes(probes)


def equal_weights(categories: Iterable[str]) -> dict[str, float]:
    """Equal weights summing to 1 (seed 002 leaves the weights open; equal is the neutral choice)."""
    names = list(categories)
    if not names:
        raise DarwinError("There are no probe categories to weight.")
    return {name: 1.0 / len(names) for name in names}


def worked_example(item: ProbeItem) -> str:
    """The item with its gold answer appended: the layers that compute an answer are only busy while it is
    being produced (a choice item's answer is the index of the correct choice)."""
    if item.choices:
        try:
            return item.prompt + item.choices[int(item.answer)]
        except (ValueError, IndexError):
            return item.prompt
    return item.prompt + item.answer


def probes_from_search_split(tasks: Iterable[ProbeTask], per_task: int = PROBES_PER_TASK) -> Probes:
    """One category per task: the texts it brings, else worked examples of its first search items.

    Only the search split is read, so the scan (and the prescription built on it) never sees an item the
    held-out report will judge the child on. Tasks without any usable text are left out; an empty result is {}.
    """
    probes: Probes = {}
    for task in tasks:
        texts = [t for t in task.probe_prompts if t.strip()] or [worked_example(i) for i in task.search[:per_task]]
        texts = [t for t in texts if t.strip()]
        if texts:
            probes[task.name] = texts
    return probes


def choose_probes(tasks: Iterable[ProbeTask], probes_file: str | Path | None = None) -> tuple[Probes, str]:
    """(probe texts, where they came from) for an evolution's MRI: the config's `probes:` file when it names
    one, else the tasks' search split, else (no tasks, or none with a text) the generic five categories."""
    if probes_file:
        return load_probes(probes_file), f"file {Path(probes_file).name}"
    from_tasks = probes_from_search_split(tasks)
    if from_tasks:
        return from_tasks, TASK_PROBES
    return default_probes(), GENERIC_PROBES


def describe_probes(probes: Mapping[str, Sequence[str]], source: str) -> str:
    """One line for the log and the pages: where the probe texts came from and how many each category has."""
    counts = ", ".join(f"{category} ({len(texts)})" for category, texts in probes.items())
    return f"MRI probes: {source}: {counts}"
