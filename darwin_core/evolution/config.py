"""What decides a run's result: the evolution config (saved as config.yaml) and its fitness tasks, validated.

A config is the one source of truth for a run: the same YAML runs it again, and its digest keys the checkpoint
so a run only resumes under the config that wrote it.

Every field carries its meaning in its metadata (`doc`): docs/reference.md is generated from them by
scripts/reference.py, and tests/test_reference.py fails when a field has none, so the reference cannot fall
behind the code. Whatever can be checked without the machine (types, ranges, names of spaces, methods and
dtypes) is checked here, when the config is built; what needs the machine (folders, task files, devices) is
checked by `darwin_core.evolution.preflight` before a run folder is created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from darwin_core.errors import DarwinError

MAX_NEW_TOKENS_LIMIT = 4096  # a generative task's answer budget; more is a typo, not an answer
MAX_LAYER_INDEX = 100_000  # no model has this many layers; a larger frozen range is a typo that would fill memory
_LAYER_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TASK_FILE_SUFFIXES = (".jsonl", ".json", ".csv")
START_POINTS = ("neutral", "mri")
SELECTIONS = ("topk", "halving")
TOKENIZER_SOURCES = ("father", "mother", "union")  # darwin_core.parents.tokenizers.TokenizerSource
_LATER_SETTINGS = ("start", "selection", "halving_rate", "cma_stop", "probes", "tokenizer_source")  # in a digest only when not the default


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose meaning travels with it (read by the generated reference)."""
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class TaskSpec:
    """One fitness task and its weight in the composite (an entry of `tasks` in breed.yaml)."""

    source: str = doc("Where the items come from: `demo` (a built-in skill), `file` (a JSONL/JSON/CSV file), "
                      "`hub` (a Hub dataset id) or `lm_eval` (an lm-evaluation-harness task or group). In YAML "
                      "it is the key: `{file: my.jsonl}`.")
    ref: str | tuple[str, ...] = doc("What the source names: the skill, the file path (or a list of paths and glob "
                                    "patterns, read as one task; relative paths are read from the config file's "
                                    "folder), the dataset id or the lm-eval task name.")
    weight: float = doc("The task's share of the composite fitness (weights need not add up to 1; an lm-eval "
                        "group shares its weight among its subtasks).", default=1.0)
    name: str | None = doc("The task's name in reports and curves (default: the skill, the file's stem or the "
                           "dataset's name).", default=None)
    format: str | None = doc("The file or dataset schema, one of the formats listed under Task files (files "
                             "default to user; the known Hub datasets bring theirs).", default=None)
    config: str | None = doc("The Hub dataset's configuration (e.g. `ARC-Challenge`).", default=None)
    split: str | None = doc("The Hub dataset's split (default: the known dataset's, else every split).", default=None)
    limit: int | None = doc("Keep only the first items (at least 2: one to search, one held out).", default=None)
    max_new_tokens: int | None = doc(
        "Generative tasks only: how many tokens an answer may take (default 256 for files and datasets, the "
        "skill's own for demo tasks). Multiple-choice tasks generate nothing.", default=None)
    include_path: str | None = doc("lm_eval tasks only, and only in local mode: a folder of your own lm-eval task "
                                   "YAMLs to look the task up in (relative to the config file's folder).", default=None)

    SOURCES = ("demo", "file", "hub", "lm_eval")
    OPTIONS = ("weight", "name", "format", "config", "split", "limit", "max_new_tokens", "include_path")

    @classmethod
    def parse(cls, value: Any) -> "TaskSpec":
        """A task from YAML: a string (demo skill name, `hub:id`, `lm_eval:name`, or a file path) or a mapping
        with exactly one of demo/file/hub/lm_eval plus any of OPTIONS."""
        if isinstance(value, TaskSpec):
            return value
        if isinstance(value, str):
            return cls._from_string(value)
        if not isinstance(value, Mapping):
            raise DarwinError(f"A task must be a name or a mapping, not {_short(value)}.")
        keys = [k for k in cls.SOURCES if k in value]
        if len(keys) != 1:
            raise DarwinError(f"A task needs exactly one of {', '.join(cls.SOURCES)}; got {sorted(map(str, value))}.")
        extra = sorted(map(str, set(value) - set(cls.SOURCES) - set(cls.OPTIONS)))
        if extra:
            raise DarwinError(f"Unknown task setting {extra[0]!r}; a task takes {', '.join(cls.OPTIONS)}.")
        source, ref = keys[0], value[keys[0]]
        if source == "file" and isinstance(ref, (list, tuple)):
            if not ref or not all(isinstance(p, str) and p.strip() for p in ref):
                raise DarwinError("A task's file list must name at least one path, each as text.")
            ref = tuple(ref)
        elif not isinstance(ref, str) or not ref.strip():
            raise DarwinError(f"The {source} of a task must be one name or path as text, not {_short(ref)}.")
        include_path = value.get("include_path")
        if include_path is not None and (source != "lm_eval" or not isinstance(include_path, str)):
            raise DarwinError("include_path is a setting of lm_eval tasks only: the folder of your task YAMLs, as text.")
        weight = value.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0 or not math.isfinite(weight):
            raise DarwinError(f"The weight of task {ref!r} must be a non-negative number.")
        for key in ("name", "format", "config", "split"):
            if value.get(key) is not None and not isinstance(value[key], str):
                raise DarwinError(f"The {key} of task {ref!r} must be text, not {_short(value[key])}.")
        limit = value.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 2):
            raise DarwinError("A task's limit must be a whole number of at least 2 items.")
        tokens = value.get("max_new_tokens")
        if tokens is not None:
            if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= MAX_NEW_TOKENS_LIMIT:
                raise DarwinError(f"The max_new_tokens of task {ref!r} must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT}.")
            if source == "lm_eval":
                raise DarwinError(f"Task {ref!r} is an lm-eval multiple-choice task; max_new_tokens has no effect on it.")
        return cls(source=source, ref=ref, weight=float(weight), name=value.get("name"), format=value.get("format"),
                   config=value.get("config"), split=value.get("split"), limit=limit, max_new_tokens=tokens,
                   include_path=include_path)

    @classmethod
    def _from_string(cls, text: str) -> "TaskSpec":
        from darwin_core.fitness.demo_tasks import SKILLS

        text = text.strip()
        for prefix in ("hub:", "lm_eval:", "file:", "demo:"):
            if text.startswith(prefix):
                return cls(source=prefix[:-1], ref=text[len(prefix):])
        if text in SKILLS:
            return cls(source="demo", ref=text)
        if Path(text).suffix.lower() in TASK_FILE_SUFFIXES:
            return cls(source="file", ref=text)
        raise DarwinError(f"Task {text[:200]!r} is not a demo skill or a .jsonl/.json/.csv file; write hub:<id> or lm_eval:<name> for those sources.")

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.source: list(self.ref) if isinstance(self.ref, tuple) else self.ref,
                               "weight": self.weight}
        for key in ("name", "format", "config", "split", "limit", "max_new_tokens", "include_path"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _short(value: Any) -> str:
    """A value as a sentence may quote it: its repr, cut (a pasted blob must not become a screenful)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _default_tasks() -> tuple[TaskSpec, ...]:
    from darwin_core.fitness.demo_tasks import DEMO_SKILLS

    return tuple(TaskSpec(source="demo", ref=name) for name in DEMO_SKILLS)


def parse_layer_list(value: Any, layer_count: int | None = None) -> tuple[int, ...]:
    """frozen_layers as written: a list of indices, or text like "0-3, 7" (the grammar of the page's box).

    With `layer_count` (the father's), every index is checked against it before a range is expanded."""
    if value is None:
        return ()
    if isinstance(value, bool):
        raise DarwinError(f"frozen_layers must be layer numbers like [0, 3] or '0-3, 7', not {value!r}.")
    parts = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else [value] if isinstance(value, int) else value
    if not isinstance(parts, (list, tuple)):
        raise DarwinError(f"frozen_layers must be layer numbers like [0, 3] or '0-3, 7', not {_short(value)}.")
    layers: list[int] = []  # in the order written: a config's digest must not change when it is read back
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            low = high = part
        else:
            match = _LAYER_PART.fullmatch(str(part).strip()) if isinstance(part, str) else None
            if not part or match is None:
                if isinstance(part, str) and not part.strip():
                    continue
                raise DarwinError(f"frozen_layers are layer numbers like [0, 3] or '0-3, 7'; {_short(part)} is not one.")
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if low < 0:
            raise DarwinError("Frozen layers are layer indices (0 or more).")
        if high < low:
            raise DarwinError(f"The frozen-layer range {part!r} runs backwards.")
        if layer_count is not None and high >= layer_count:
            raise DarwinError(f"Frozen layer {high} does not exist: the father has {layer_count} layers (0–{layer_count - 1}).")
        if high > MAX_LAYER_INDEX:
            raise DarwinError(f"Frozen layer {high} is beyond any model's layers.")
        layers.extend(range(low, high + 1))
    return tuple(layers)


@dataclass(frozen=True)
class EvolutionConfig:
    """Everything that decides a run's result. Saved as the run's config.yaml; the same YAML runs it again."""

    father: str = doc("The first parent, and the default base of task-vector methods: a Hub id (`org/name`, "
                      "optionally `@revision`), `demo:<name>`, `run:<id>` (an earlier run's child) or, locally, a "
                      "folder (relative to the config file's folder).")
    mother: str = doc("The second parent, named like the father.")
    tasks: tuple[TaskSpec, ...] = doc("The fitness tasks and their weights (see Task entries below); a mapping "
                                      "`{reverse: 0.6, sort: 0.4}` is a shorthand.", default_factory=_default_tasks)
    genome: str = doc("The genome space CMA-ES searches: darwin-v6, per-layer, per-layer-ffn or per-block-role.",
                      default="darwin-v6")
    method: str | None = doc("The merge method of the genome's recipes (None: the space's default, dare_ties for "
                             "darwin-v6, linear otherwise).", default=None)
    base: str | None = doc("The parents' common ancestor for task-vector methods, named like a parent (None: the "
                           "father is the base, and DARE-TIES then ignores the father's density).", default=None)
    population: int = doc("Candidates per CMA-ES generation (at least 2).", default=8)
    sigma0: float = doc("CMA-ES's initial step size, in (0, 1] (genes live in [0, 1]).", default=0.2)
    generations: int = doc("How many generations the search runs at most.", default=10)
    seed: int = doc("CMA-ES's seed (and the DARE masks' through the recipes).", default=0)
    split_seed: int = doc("Decides each task's search / held-out split; apart from `seed`, so runs with different "
                          "CMA-ES seeds are judged on the same held-out items.", default=0)
    proxy_items: int = doc("Phase 1: search items per task scored for every candidate.", default=16)
    topk_full: int = doc("Phase 2: candidates per generation then scored on the whole search split (at most the "
                         "population).", default=2)
    patience: int = doc("Stop when the best has not improved for this many generations (0: never).", default=0)
    start: str = doc("Where CMA-ES starts: `neutral` (the genome space's neutral point) or `mri` (the genome that "
                     "reproduces the MRI prescription: darwin-v6 with mri_trust = 1, a per-layer space at each "
                     "layer's mean prescribed ratio; needs `mri`).", default="neutral")
    selection: str = doc("Which candidates reach the whole search split: `topk` (Phase 2 scores the `topk_full` "
                         "best by proxy fitness) or `halving` (successive halving: rung 0 is the proxy subset for "
                         "every candidate; each next rung keeps the best 1/`halving_rate` of the previous one and "
                         "scores `halving_rate` times as many items per task, the last rung being the whole search "
                         "split; the rungs are documented in darwin_core/evolution/halving.py).", default="topk")
    halving_rate: int = doc("Successive halving's rate η (at least 2): each rung keeps ⌈n/η⌉ candidates and η× "
                            "the items of the rung before.", default=2)
    cma_stop: bool = doc("End the search when CMA-ES's own stop conditions on its distribution fire (es.stop(): "
                         "tolx, tolupsigma, conditioncov, noeffectaxis, noeffectcoord, tolstagnation, maxiter); the "
                         "fitness-value ones (tolfun, tolflatfitness) are left out, since accuracies on a few dozen "
                         "items tie from the first generation. The reason is logged and recorded in events.jsonl "
                         "(`early_stop`) and the checkpoint.", default=True)
    device: str = doc("Where the merges and evaluations run: auto (the first CUDA device, else the CPU), cpu, "
                      "cuda, cuda:N or mps; checked against what torch sees before the run starts.", default="auto")
    dtype: str = doc("The dtype candidates are bred and evaluated in: auto (the father's), float32, bfloat16 or "
                     "float16.", default="auto")
    frozen_layers: tuple[int, ...] = doc("Layers kept as the father's, untouched: a list `[0, 1]` or text "
                                         "`'0-3, 7'`.", default=())
    heldout: bool = doc("Score the child, both parents and the baselines on the held-out items at the end "
                        "(report.json).", default=True)
    mri: str | None = doc("None (no scan), `auto` (scan the parents with the tasks' probe texts before the "
                          "search) or a saved scan file (relative to the config file's folder).", default=None)
    probes: str | None = doc("A YAML file of MRI probe texts (category: [texts]) for the prescription scan. Default: "
                             "texts drawn from the tasks' search split (never held-out), one category per task; the "
                             "five generic categories only when no task brings any text.", default=None)
    tokenizer_source: str = doc("Parents with different vocabularies: whose vocabulary every candidate and the "
                                "child speak — `father`, `mother` or `union` (mergekit's tokenizer_source: embedding "
                                "and LM-head rows aligned by token). An FFN-only pair keeps the father's.",
                                default="father")
    batch_size: int = doc("Items per forward pass in the evaluations.", default=64)
    local_mode: bool = doc("True where the user owns the machine (the CLI): local folders and files are "
                           "accepted. A public Space writes False, which refuses every path.", default=True)

    def __post_init__(self) -> None:
        tasks = self.tasks
        if isinstance(tasks, (str, Mapping)) or not isinstance(tasks, (list, tuple)):
            raise DarwinError("tasks must be a list of task names or mappings.")
        object.__setattr__(self, "tasks", tuple(TaskSpec.parse(t) for t in tasks))
        object.__setattr__(self, "frozen_layers", parse_layer_list(self.frozen_layers))
        self.validate()

    def validate(self) -> None:
        """One sentence for the first setting that is not valid, naming it."""
        for key in ("father", "mother"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise DarwinError(f"The config needs a {key} (a Hub id or a local folder).")
        for name, low in (("population", 2), ("generations", 1), ("proxy_items", 1), ("topk_full", 1),
                          ("patience", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DarwinError(f"{name} must be a whole number of at least {low}, not {_short(value)}.")
        for name in ("seed", "split_seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise DarwinError(f"{name} must be a whole number.")
        if self.start not in START_POINTS:
            raise DarwinError(f"start must be one of {', '.join(START_POINTS)}, not {_short(self.start)}.")
        if self.start == "mri" and not self.mri:
            raise DarwinError("start: mri needs the MRI prescription; set mri to auto or a saved scan of both parents.")
        if self.probes and self.mri != "auto":
            raise DarwinError("probes are the texts of the scan made for the run; set mri to auto to use them.")
        if self.tokenizer_source not in TOKENIZER_SOURCES:
            raise DarwinError(f"tokenizer_source must be one of {', '.join(TOKENIZER_SOURCES)}, not "
                              f"{_short(self.tokenizer_source)}.")
        if self.selection not in SELECTIONS:
            raise DarwinError(f"selection must be one of {', '.join(SELECTIONS)}, not {_short(self.selection)}.")
        if not isinstance(self.halving_rate, int) or isinstance(self.halving_rate, bool) or self.halving_rate < 2:
            raise DarwinError(f"halving_rate must be a whole number of at least 2, not {_short(self.halving_rate)}.")
        if self.topk_full > self.population:
            raise DarwinError(f"topk_full ({self.topk_full}) cannot exceed the population ({self.population}).")
        if isinstance(self.sigma0, bool) or not isinstance(self.sigma0, (int, float)) or not 0 < float(self.sigma0) <= 1:
            raise DarwinError(f"sigma0 must be a number in (0, 1], not {_short(self.sigma0)}.")
        for name in ("heldout", "local_mode", "cma_stop"):
            if not isinstance(getattr(self, name), bool):
                raise DarwinError(f"{name} must be true or false, not {_short(getattr(self, name))}.")
        for name in ("genome", "device", "dtype", "method", "base", "mri", "probes"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str) or value == "" and name in ("genome", "device", "dtype"):
                raise DarwinError(f"{name} must be text, not {_short(value)}.")
        if not self.tasks:
            raise DarwinError("The config needs at least one fitness task.")
        if sum(t.weight for t in self.tasks) <= 0:
            raise DarwinError("The task weights add up to zero; give at least one task a positive weight.")
        self._validate_names()

    def _validate_names(self) -> None:
        """Genome space, merge method (and whether it takes a base), dtype and device spelling."""
        from darwin_core.genome.spaces import default_method
        from darwin_core.io.dtypes import dtype_from_name
        from darwin_core.merge.methods.registry import get_method

        method = get_method(self.method) if self.method else None
        method = method or get_method(default_method(self.genome))
        if self.method:
            default_method(self.genome)  # an unknown space is refused whichever method is named
        if self.base and self.base != "father" and not method.delta:
            raise DarwinError(f"The method {method.name} does not use a base model; remove base from the config.")
        if self.dtype != "auto":
            dtype_from_name(self.dtype)
        if not _DEVICE.fullmatch(self.device.strip()):  # a misspelt device: the sentence names what torch sees
            from darwin_core.merge.disk import check_device

            check_device(self.device, allow_auto=True)
            raise DarwinError(f"device must be auto, cpu, cuda, cuda:N or mps, not {_short(self.device)}.")

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
        unknown = sorted(str(key) for key in set(data) - known)
        if unknown:
            raise DarwinError(f"Unknown evolution setting {unknown[0][:60]!r}; known settings: {', '.join(sorted(known))}.")
        if "father" not in data or "mother" not in data:
            raise DarwinError("The config needs both a father and a mother.")
        kwargs = dict(data)
        if "tasks" in kwargs:
            tasks = kwargs["tasks"]
            if isinstance(tasks, Mapping):  # {reverse: 1.0, sort: 0.5} shorthand
                tasks = [{**TaskSpec._from_string(str(k)).to_yaml(), "weight": w} for k, w in tasks.items()]
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
    def from_yaml(cls, text: str, *, source: str = "The evolution config") -> "EvolutionConfig":
        """The config a YAML text describes; `source` names it in a syntax error (with the line)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise DarwinError(f"{source} is not valid YAML{where}: {problem}.") from None
        return cls.from_dict(data or {})

    @classmethod
    def load(cls, path: Path | str) -> "EvolutionConfig":
        """The config in a file, with relative paths in it (local parents, task files, a scan file) read from the
        file's folder, so a config means the same from wherever it is run."""
        from darwin_core.io.textfile import read_user_text

        path = Path(path)
        text = read_user_text(path, "config file")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return cls.from_yaml(text, source=f"The config file {path}")
        if not isinstance(data, Mapping):
            raise DarwinError(f"The config file {path} must be a YAML mapping of settings.")
        return cls.from_dict(resolve_relative_paths(data, path.parent))

    def digest(self) -> str:
        """A stable hash of every setting: a checkpoint only resumes the config that wrote it. Settings added after
        checkpoints existed count only when they differ from their default, so older runs still resume."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in _LATER_SETTINGS}
        settings = {k: v for k, v in self.to_dict().items() if k not in defaults or v != defaults[k]}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ relative paths


def _looks_like_path(text: str, folder: Path) -> bool:
    """A parent name that means a folder: written like a path, or a folder beside the config."""
    if text.startswith(("demo:", "run:", "/", "~")) or os.path.isabs(text):
        return False
    if text.startswith(("./", "../")) or text in (".", "..") or text.partition("@")[0].count("/") >= 2:
        return True
    try:
        return (folder / text).is_dir()
    except OSError:  # a name too long for the file system is no folder
        return False


def _joined(folder: Path, text: str) -> str:
    return os.path.normpath(os.path.join(folder.resolve(), os.path.expanduser(text)))


def resolve_relative_paths(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The settings with relative local paths joined to `folder` (absolute, so they mean the same in the run
    folder's copy). Nothing changes when `folder` is the working directory: paths then already mean that."""
    out = dict(data)
    try:
        if folder.resolve() == Path.cwd().resolve():
            return out
    except OSError:
        return out
    for key in ("father", "mother", "base"):
        value = out.get(key)
        if isinstance(value, str) and _looks_like_path(value.strip(), folder):
            out[key] = _joined(folder, value.strip())
    mri = out.get("mri")
    if isinstance(mri, str) and mri not in ("", "auto") and not os.path.isabs(os.path.expanduser(mri)):
        out["mri"] = _joined(folder, mri)
    probes = out.get("probes")
    if isinstance(probes, str) and probes and not os.path.isabs(os.path.expanduser(probes)):
        out["probes"] = _joined(folder, probes)
    tasks = out.get("tasks")
    if isinstance(tasks, (list, tuple)):
        out["tasks"] = [_task_joined(task, folder) for task in tasks]
    return out


def _task_joined(task: Any, folder: Path) -> Any:
    """A task entry with its relative file path joined to `folder`."""
    if isinstance(task, Mapping):
        out = dict(task)
        for key in ("file", "include_path"):
            value = out.get(key)
            if isinstance(value, str) and not os.path.isabs(os.path.expanduser(value)):
                out[key] = _joined(folder, value)
            elif key == "file" and isinstance(value, (list, tuple)):
                out[key] = [_joined(folder, p) if isinstance(p, str) and not os.path.isabs(os.path.expanduser(p)) else p
                            for p in value]
        return out
    if isinstance(task, str):
        text = task.strip()
        is_file = text.startswith("file:") or (not text.startswith(("hub:", "lm_eval:", "demo:"))
                                              and Path(text).suffix.lower() in TASK_FILE_SUFFIXES)
        ref = text.removeprefix("file:")
        if is_file and not os.path.isabs(os.path.expanduser(ref)):
            return {"file": _joined(folder, ref)}
    return task
