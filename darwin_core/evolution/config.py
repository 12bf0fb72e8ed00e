"""What decides a run's result: the evolution config (saved as config.yaml) and its fitness tasks, validated.

A config is the one source of truth for a run: the same YAML runs it again, and its digest keys the checkpoint
so a run only resumes under the config that wrote it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from darwin_core.errors import DarwinError

@dataclass(frozen=True)
class TaskSpec:
    """One fitness task and its weight in the composite.

    source: "demo" (a built-in skill name), "file" (JSONL/JSON/CSV path), "hub" (a dataset id) or "lm_eval"
    (an lm-evaluation-harness task name). format/config/split/limit/name pass through to the loader.
    """

    source: str
    ref: str
    weight: float = 1.0
    name: str | None = None
    format: str | None = None
    config: str | None = None
    split: str | None = None
    limit: int | None = None

    SOURCES = ("demo", "file", "hub", "lm_eval")

    @classmethod
    def parse(cls, value: Any) -> "TaskSpec":
        """A task from YAML: a string (demo skill name, `hub:id`, `lm_eval:name`, or a file path) or a mapping
        with exactly one of demo/file/hub/lm_eval plus optional weight, name, format, config, split, limit."""
        if isinstance(value, TaskSpec):
            return value
        if isinstance(value, str):
            return cls._from_string(value)
        if not isinstance(value, Mapping):
            raise DarwinError(f"A task must be a name or a mapping, not {value!r}.")
        keys = [k for k in cls.SOURCES if k in value]
        if len(keys) != 1:
            raise DarwinError(f"A task needs exactly one of {', '.join(cls.SOURCES)}; got {sorted(value)}.")
        extra = set(value) - set(cls.SOURCES) - {"weight", "name", "format", "config", "split", "limit"}
        if extra:
            raise DarwinError(f"Unknown task setting {sorted(extra)[0]!r}.")
        weight = value.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0 or not math.isfinite(weight):
            raise DarwinError(f"The weight of task {value[keys[0]]!r} must be a non-negative number.")
        limit = value.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 2):
            raise DarwinError("A task's limit must be a whole number of at least 2 items.")
        return cls(
            source=keys[0],
            ref=str(value[keys[0]]),
            weight=float(weight),
            name=value.get("name"),
            format=value.get("format"),
            config=value.get("config"),
            split=value.get("split"),
            limit=limit,
        )

    @classmethod
    def _from_string(cls, text: str) -> "TaskSpec":
        from darwin_core.fitness.demo_tasks import SKILLS

        text = text.strip()
        for prefix in ("hub:", "lm_eval:", "file:", "demo:"):
            if text.startswith(prefix):
                return cls(source=prefix[:-1], ref=text[len(prefix):])
        if text in SKILLS:
            return cls(source="demo", ref=text)
        if Path(text).suffix.lower() in (".jsonl", ".json", ".csv"):
            return cls(source="file", ref=text)
        raise DarwinError(f"Task {text!r} is not a demo skill or a .jsonl/.json/.csv file; write hub:<id> or lm_eval:<name> for those sources.")

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.source: self.ref, "weight": self.weight}
        for key in ("name", "format", "config", "split", "limit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _default_tasks() -> tuple[TaskSpec, ...]:
    from darwin_core.fitness.demo_tasks import DEMO_SKILLS

    return tuple(TaskSpec(source="demo", ref=name) for name in DEMO_SKILLS)


@dataclass(frozen=True)
class EvolutionConfig:
    """Everything that decides a run's result. Saved as the run's config.yaml; the same YAML runs it again.

    father / mother: Hub ids (optionally `@revision`) or local folders (local mode only).
    genome: a genome space name (darwin-v6, per-layer, per-layer-ffn, per-block-role); method: the merge method
    the genome's recipes use (None = dare_ties for darwin-v6, linear otherwise); base: the parents' common
    ancestor for task-vector methods (None = the father is the base). population / sigma0 / generations / seed: CMA-ES budget.
    proxy_items: search items per task scored for every candidate (Phase 1); topk_full: candidates per
    generation then scored on the whole search set (Phase 2). patience: stop when the best has not improved
    for this many generations (0 = never). split_seed: decides each task's search / held-out split; kept apart
    from `seed` so runs with different CMA-ES seeds are judged on the same held-out items.
    mri: None, "auto" (scan the parents with the tasks' probe texts before the search) or a saved scan file.
    """

    father: str
    mother: str
    tasks: tuple[TaskSpec, ...] = field(default_factory=_default_tasks)
    genome: str = "darwin-v6"
    method: str | None = None
    base: str | None = None
    population: int = 8
    sigma0: float = 0.2
    generations: int = 10
    seed: int = 0
    split_seed: int = 0
    proxy_items: int = 16
    topk_full: int = 2
    patience: int = 0
    device: str = "auto"
    dtype: str = "auto"
    frozen_layers: tuple[int, ...] = ()
    heldout: bool = True
    mri: str | None = None
    batch_size: int = 64
    local_mode: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(TaskSpec.parse(t) for t in self.tasks))
        object.__setattr__(self, "frozen_layers", tuple(int(x) for x in self.frozen_layers))
        self.validate()

    def validate(self) -> None:
        def whole(name: str, low: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DarwinError(f"{name} must be a whole number of at least {low}, not {value!r}.")

        for key in ("father", "mother"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise DarwinError(f"The config needs a {key} (a Hub id or a local folder).")
        whole("population", 2)
        whole("generations", 1)
        whole("proxy_items", 1)
        whole("topk_full", 1)
        whole("patience", 0)
        whole("batch_size", 1)
        for name in ("seed", "split_seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise DarwinError(f"{name} must be a whole number.")
        if self.topk_full > self.population:
            raise DarwinError(f"topk_full ({self.topk_full}) cannot exceed the population ({self.population}).")
        if not isinstance(self.sigma0, (int, float)) or not 0 < float(self.sigma0) <= 1:
            raise DarwinError(f"sigma0 must be a number in (0, 1], not {self.sigma0!r}.")
        if not self.tasks:
            raise DarwinError("The config needs at least one fitness task.")
        if sum(t.weight for t in self.tasks) <= 0:
            raise DarwinError("The task weights add up to zero; give at least one task a positive weight.")
        if any(layer < 0 for layer in self.frozen_layers):
            raise DarwinError("Frozen layers are layer indices (0 or more).")

    # ---------------------------------------------------------------- YAML

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tasks":
                value = [t.to_yaml() for t in value]
            elif f.name == "frozen_layers":
                value = list(value)
            out[f.name] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvolutionConfig":
        if not isinstance(data, Mapping):
            raise DarwinError("An evolution config must be a YAML mapping of settings.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DarwinError(f"Unknown evolution setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}.")
        if "father" not in data or "mother" not in data:
            raise DarwinError("The config needs both a father and a mother.")
        kwargs = dict(data)
        if "tasks" in kwargs:
            tasks = kwargs["tasks"]
            if isinstance(tasks, Mapping):  # {reverse: 1.0, sort: 0.5} shorthand
                tasks = [{**TaskSpec._from_string(k).to_yaml(), "weight": w} for k, w in tasks.items()]
            if not isinstance(tasks, (list, tuple)):
                raise DarwinError("tasks must be a list of task names or mappings.")
            kwargs["tasks"] = tuple(tasks)
        if kwargs.get("frozen_layers") is None:
            kwargs["frozen_layers"] = ()
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise DarwinError(f"The evolution config is not valid: {error}.") from None

    @classmethod
    def from_yaml(cls, text: str) -> "EvolutionConfig":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise DarwinError(f"The evolution config is not valid YAML: {str(error).splitlines()[0]}.") from None
        return cls.from_dict(data or {})

    @classmethod
    def load(cls, path: Path | str) -> "EvolutionConfig":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DarwinError(f"The config file {path} does not exist.") from None
        return cls.from_yaml(text)

    def digest(self) -> str:
        """A stable hash of every setting: a checkpoint only resumes the config that wrote it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
