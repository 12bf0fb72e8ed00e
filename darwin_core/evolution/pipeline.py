"""The search: CMA-ES over a genome space, candidates bred in memory and scored on the search split.

Shape (pycma's ask/tell): the optimiser only proposes genomes; this loop owns scheduling and persistence.

    baselines (father, mother, uniform 50%, MRI prescription alone) on the full search set   [generation 0]
    for each generation g = 1..G:
        X = es.ask()
        Phase 1: every candidate on the proxy subset (a fixed, seeded sample of the search items)
        Phase 2: the top-k candidates by proxy score on the rest of the search set (full = proxy ∪ rest)
        es.tell(X, −proxy fitness)          (CMA-ES minimises; all candidates ranked on the same measure)
        best = highest full-search fitness seen so far (only Phase 2 results can become best)
        checkpoint                          (atomic; see below)
    child = the best candidate, or a merge baseline that beat it on the full search set (choose_child)
    child merged to disk → held-out report (bootstrap intervals, exact McNemar vs each parent)

Gold labels of the held-out split never enter the loop; Phase 2 picks its candidates by their proxy score
(fitness on search items), never by anything held out.

Exact resume. Everything a generation does is a pure function of (config, CMA-ES state): the proxy subset is
seeded by (seed, task), candidates are written into the resident child by the deterministic merge path, and
evaluation is greedy/log-likelihood scoring. The only state is the CMA-ES object, and it owns its random
numbers: it is built with `randn` bound to a private `numpy.random.RandomState`, so pickling the object
pickles its RNG state with it (pycma's default would draw from numpy's global RNG, which a pickle does not
capture). numpy's global RNG is also swapped for a private one around ask/tell and checkpointed, in case a
pycma code path draws from it. After every generation the loop writes, atomically, the pickled CMA-ES object,
the generation number, the best so far, the patience counter and the byte length of evaluations.jsonl. A
resumed run truncates evaluations.jsonl to that length (dropping the measurements of the generation that was
in flight) and continues; since every step is a pure function of that state, it re-measures the same
candidates with the same results, and ends with a byte-identical evaluations.jsonl and the same best recipe
as a run that was never interrupted. events.jsonl is the wall-clock log and keeps everything (it records
the interruption and the resume).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from darwin_core.errors import DarwinError
from darwin_core.fitness.evaluate import EvalResult, TaskResult, normalize_weights
from darwin_core.fitness.tasks import Task, seeded_rng
from darwin_core.io.runfolder import BEST_RECIPE, CHILD, MRI_SCAN, REPORT, RunFolder, atomic_write_text

CHECKPOINT_FORMAT = 1
BASELINE_GENERATION = 0
HELDOUT_RESULTS = "heldout-results.json"
SIGNIFICANCE = 0.05

# --------------------------------------------------------------------------------------------- config


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


# --------------------------------------------------------------------------------------------- the problem


Candidate = str | Sequence[float]  # a baseline name, or a genome vector


class Problem(Protocol):
    """What the loop needs from the thing being optimised (real: the resident child; tests: a synthetic one)."""

    tasks: Sequence[Task]
    weights: Mapping[str, float]
    lower: Sequence[float]
    upper: Sequence[float]
    x0: Sequence[float]

    def baseline_names(self) -> list[str]: ...

    def describe(self, vector: Sequence[float]) -> dict[str, Any]:
        """Deterministic facts about a genome worth recording (e.g. its recipe hash)."""
        ...

    def measure(self, candidate: Candidate, tasks: Sequence[Task]) -> EvalResult:
        """Score the candidate on the *search* split of `tasks` (subsets of the problem's tasks)."""
        ...


@dataclass(frozen=True)
class SearchSettings:
    population: int
    sigma0: float
    generations: int
    seed: int
    proxy_items: int
    topk_full: int
    patience: int = 0
    digest: str = ""

    @classmethod
    def from_config(cls, config: EvolutionConfig) -> "SearchSettings":
        return cls(
            population=config.population, sigma0=float(config.sigma0), generations=config.generations,
            seed=config.seed, proxy_items=config.proxy_items, topk_full=config.topk_full,
            patience=config.patience, digest=config.digest(),
        )


class Cancelled(Exception):
    """The user asked the run to stop; what was measured stays in the run folder."""


@dataclass
class SearchOutcome:
    state: str  # "finished" | "cancelled"
    best: dict[str, Any] | None
    generation: int
    stopped_early: bool = False


def proxy_split(tasks: Sequence[Task], per_task: int, seed: int) -> tuple[list[Task], list[Task]]:
    """(proxy tasks, rest tasks): a seeded sample of `per_task` search items per task and the remaining items.

    The sample depends only on (seed, task name, item ids), not on time or on what was measured, and keeps
    the search split's order, so every generation (and a resumed run) scores the same proxy items.
    """
    proxy, rest = [], []
    for task in tasks:
        items = list(task.search)
        if per_task >= len(items):
            chosen = set(range(len(items)))
        else:
            chosen = set(seeded_rng(seed, "proxy", task.name).sample(range(len(items)), per_task))
        proxy.append(replace(task, search=tuple(i for k, i in enumerate(items) if k in chosen)))
        rest_items = tuple(i for k, i in enumerate(items) if k not in chosen)
        if rest_items:
            rest.append(replace(task, search=rest_items))
    return proxy, rest


def combine(tasks: Sequence[Task], *parts: EvalResult) -> EvalResult:
    """One EvalResult over the tasks' whole search split from results on disjoint parts of it."""
    by_task: dict[str, dict[str, Any]] = {}
    metrics: dict[str, TaskResult] = {}
    for part in parts:
        for name, result in part.tasks.items():
            by_task.setdefault(name, {}).update({i.id: i for i in result.items})
            metrics.setdefault(name, result)
    combined = {}
    for task in tasks:
        items = by_task.get(task.name, {})
        missing = [i.id for i in task.search if i.id not in items]
        if missing:
            raise AssertionError(f"task {task.name}: no result for {missing[:3]}")
        first = metrics[task.name]
        combined[task.name] = TaskResult(
            name=task.name, kind=first.kind, metric=first.metric, items=tuple(items[i.id] for i in task.search),
            seconds=sum(p.tasks[task.name].seconds for p in parts if task.name in p.tasks),
        )
    return EvalResult(split="search", tasks=combined, seconds=sum(p.seconds for p in parts))


def _scores(result: EvalResult) -> dict[str, float]:
    return {name: float(r.score) for name, r in result.tasks.items()}


@contextlib.contextmanager
def _private_global_rng(holder: dict[str, Any]):
    """Run a block with numpy's global RNG set to `holder["state"]`, then store its new state and restore the
    caller's: whatever else in the process draws from np.random cannot shift the search, and vice versa."""
    outside = np.random.get_state()
    np.random.set_state(holder["state"])
    try:
        yield
    finally:
        holder["state"] = np.random.get_state()
        np.random.set_state(outside)


def _new_es(problem: Problem, settings: SearchSettings):
    import warnings

    with warnings.catch_warnings():  # pycma warns that matplotlib is missing; we never plot with it
        warnings.simplefilter("ignore")
        import cma

    rng = np.random.RandomState(settings.seed % 2**32)
    options = {
        "bounds": [list(map(float, problem.lower)), list(map(float, problem.upper))],
        "popsize": settings.population,
        "seed": float("nan"),  # the seed lives in `randn`'s own RandomState
        "randn": rng.randn,
        "verbose": -9,
        "verb_log": 0,
        "verb_disp": 0,
    }
    x0 = np.clip(np.asarray(problem.x0, dtype=float), options["bounds"][0], options["bounds"][1])
    return cma.CMAEvolutionStrategy(list(map(float, x0)), settings.sigma0, options)


def run_search(
    folder: RunFolder,
    problem: Problem,
    settings: SearchSettings,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """The CMA-ES loop with per-generation checkpoints; resumes from the folder's checkpoint when there is one."""
    should_stop = should_stop or (lambda: False)
    log = log or (lambda message: None)
    weights = normalize_weights(dict(problem.weights), [t.name for t in problem.tasks])
    proxy_tasks, rest_tasks = proxy_split(problem.tasks, settings.proxy_items, settings.seed)
    proxy_is_full = not rest_tasks

    def check_stop() -> None:
        if should_stop():
            raise Cancelled()

    def record(entry: dict[str, Any], seconds: float) -> None:
        folder.append_evaluation(entry)
        folder.append_event("evaluated", name=entry["name"], phase=entry["phase"], fitness=entry["fitness"], seconds=round(seconds, 3))

    state = folder.read_checkpoint()
    if state is not None:
        if state.get("format") != CHECKPOINT_FORMAT or state.get("digest") != settings.digest:
            raise DarwinError("The run's checkpoint was written by a different config; start a new run instead of resuming this one.")
        folder.truncate_evaluations(state["evaluations_bytes"])
        folder.append_event("resumed", generation=state["generation"])
        log(f"resumed after generation {state['generation']}")
    else:
        folder.truncate_evaluations(0)  # no checkpoint: whatever was measured before belongs to no generation
        check_stop()
        es = _new_es(problem, settings)
        holder = {"state": np.random.RandomState(settings.seed % 2**32).get_state()}
        folder.append_event("baselines_started", names=problem.baseline_names())
        baselines: dict[str, float] = {}
        for name in problem.baseline_names():
            check_stop()
            t0 = time.perf_counter()
            full = problem.measure(name, problem.tasks)
            proxy = combine(proxy_tasks, _restrict(full, proxy_tasks))
            entry = {
                "kind": "baseline", "name": name, "generation": BASELINE_GENERATION, "phase": "full",
                "fitness": full.composite(weights), "scores": _scores(full),
                "proxy_fitness": proxy.composite(weights), "proxy_scores": _scores(proxy),
            }
            record(entry, time.perf_counter() - t0)
            baselines[name] = entry["fitness"]
            log(f"baseline {name}: {entry['fitness']:.4f}")
        state = {
            "format": CHECKPOINT_FORMAT, "digest": settings.digest, "generation": 0, "es": es,
            "global_rng": holder["state"], "best": None, "stale": 0, "done": False, "stopped_early": False,
            "baselines": baselines,
        }
        _checkpoint(folder, state)

    es = state["es"]
    holder = {"state": state["global_rng"]}
    while not state["done"]:
        generation = state["generation"] + 1
        t_gen = time.perf_counter()
        check_stop()
        with _private_global_rng(holder):
            solutions = es.ask()
        genomes = [[float(v) for v in x] for x in solutions]
        proxy_fitness: list[float] = []
        proxy_results: list[EvalResult] = []
        for index, genome in enumerate(genomes):
            check_stop()
            t0 = time.perf_counter()
            result = problem.measure(genome, proxy_tasks)
            fitness = result.composite(weights)
            proxy_fitness.append(fitness)
            proxy_results.append(result)
            record({
                "kind": "candidate", "name": f"g{generation}c{index}", "generation": generation, "index": index,
                "phase": "full" if proxy_is_full else "proxy", "genome": genome, **problem.describe(genome),
                "fitness": fitness, "scores": _scores(result),
            }, time.perf_counter() - t0)

        # Phase 2: the top-k by proxy fitness (ties: lower index first) on the rest of the search set.
        ranked = sorted(range(len(genomes)), key=lambda i: (-proxy_fitness[i], i))
        if proxy_is_full:
            full_fitness = {i: proxy_fitness[i] for i in range(len(genomes))}
        else:
            full_fitness = {}
            for index in ranked[: settings.topk_full]:
                check_stop()
                t0 = time.perf_counter()
                rest = problem.measure(genomes[index], rest_tasks)
                full = combine(problem.tasks, proxy_results[index], rest)
                full_fitness[index] = full.composite(weights)
                record({
                    "kind": "candidate", "name": f"g{generation}c{index}", "generation": generation, "index": index,
                    "phase": "full", "genome": genomes[index], **problem.describe(genomes[index]), "fitness": full_fitness[index],
                    "scores": _scores(full), "proxy_fitness": proxy_fitness[index],
                }, time.perf_counter() - t0)

        with _private_global_rng(holder):
            es.tell(solutions, [-f for f in proxy_fitness])

        # Only Phase 2 (full search set) scores can make a best; ties go to the lower index, then to the older best.
        improved = False
        if full_fitness:
            index = min(full_fitness, key=lambda i: (-full_fitness[i], i))
            if state["best"] is None or full_fitness[index] > state["best"]["fitness"]:
                state["best"] = {
                    "name": f"g{generation}c{index}", "generation": generation, "index": index,
                    "genome": genomes[index], "fitness": full_fitness[index], "proxy_fitness": proxy_fitness[index],
                    **problem.describe(genomes[index]),
                }
                improved = True
        state["stale"] = 0 if improved else state["stale"] + 1
        state["generation"] = generation
        stop_early = settings.patience > 0 and state["stale"] >= settings.patience
        state["done"] = generation >= settings.generations or stop_early
        state["stopped_early"] = stop_early
        state["es"], state["global_rng"] = es, holder["state"]
        _checkpoint(folder, state)
        folder.append_event(
            "generation", generation=generation, sigma=float(es.sigma), best_proxy=max(proxy_fitness),
            mean_proxy=float(np.mean(proxy_fitness)), best_full=max(full_fitness.values()) if full_fitness else None,
            best_so_far=state["best"]["fitness"] if state["best"] else None, seconds=round(time.perf_counter() - t_gen, 3),
        )
        extras = problem.status_extras() if hasattr(problem, "status_extras") else {}
        folder.update_status(generation=generation, best_fitness=state["best"]["fitness"] if state["best"] else None, **extras)
        log(f"generation {generation}/{settings.generations}: best proxy {max(proxy_fitness):.4f}, best so far {state['best']['fitness'] if state['best'] else float('nan'):.4f}, sigma {es.sigma:.3f}")
        if stop_early:
            folder.append_event("early_stop", generation=generation, patience=settings.patience)
            log(f"stopped early: no improvement for {settings.patience} generations")
    return SearchOutcome(state="finished", best=state["best"], generation=state["generation"], stopped_early=state["stopped_early"])


def _restrict(result: EvalResult, tasks: Sequence[Task]) -> EvalResult:
    """The part of a full-search result that falls on the given (proxy) tasks' items."""
    out = {}
    for task in tasks:
        wanted = {i.id for i in task.search}
        full = result.tasks[task.name]
        out[task.name] = replace(full, items=tuple(i for i in full.items if i.id in wanted))
    return EvalResult(split=result.split, tasks=out, seconds=result.seconds)


def _checkpoint(folder: RunFolder, state: dict[str, Any]) -> None:
    state["evaluations_bytes"] = folder.evaluations_size()
    folder.write_checkpoint(state)


# --------------------------------------------------------------------------------------------- the real problem


def resolve_parent(ref: str, *, local_mode: bool, runs_dir: str | Path | None = None):
    """(ParentRef for the recipe, local folder) of a parent named any way darwin_core.parents knows (demo:, run:,
    a Hub id, a folder in local mode), downloaded (weights, config, tokenizer only) when not cached.

    A run's parents were checked when it was submitted (the visitor's access to a gated commit, their right to a
    `run:` child), so the worker reads a pinned cached commit without asking the Hub again.
    """
    from darwin_core.parents import hub
    from darwin_core.parents import resolve_parent_name
    from darwin_core.recipe import ParentRef

    resolved = resolve_parent_name(ref, local_mode=local_mode, runs_dir=runs_dir, check_access=False)
    if resolved.folder is None:
        resolved = hub.download(resolved)
    folder = Path(resolved.folder)
    if resolved.local:
        return ParentRef.of(folder), folder
    return ParentRef(id=resolved.id, revision=resolved.commit or resolved.revision, path=str(folder)), folder


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
        return [replace(t, name=spec.name) for t in loaded] if spec.name else loaded
    if spec.source == "file":
        return [sources.load_task(spec.ref, format=spec.format or "user", name=spec.name, seed=split_seed, limit=spec.limit)]
    if spec.source == "hub":
        return [sources.load_hub_task(spec.ref, format=spec.format, config=spec.config, split=spec.split, name=spec.name,
                                      seed=split_seed, limit=spec.limit, token=hub_token)]
    if spec.source == "lm_eval":
        return sources.tasks_from_lm_eval([spec.ref], seed=split_seed, limit=spec.limit)
    raise DarwinError(f"Unknown task source {spec.source!r}.")


DEFAULT_METHODS = {"darwin-v6": "dare_ties"}  # seed 002's engine; the other spaces default to linear


class ModelProblem:
    """The real problem: genomes become recipes, recipes are written into the resident child, the child is scored."""

    def __init__(self, config: EvolutionConfig, *, log: Callable[[str], None] | None = None,
                 runs_dir: str | Path | None = None):
        from darwin_core.parents import anatomy
        from darwin_core.evolution.child import ResidentChild
        from darwin_core.genome.spaces import get_space
        from darwin_core.merge.methods.registry import get_method

        self.config = config
        self.log = log or (lambda message: None)
        self.method = config.method or DEFAULT_METHODS.get(config.genome, "linear")
        get_method(self.method)  # unknown method: one sentence now, not after loading the models
        self.father_ref, self.father_dir = resolve_parent(config.father, local_mode=config.local_mode, runs_dir=runs_dir)
        self.mother_ref, self.mother_dir = resolve_parent(config.mother, local_mode=config.local_mode, runs_dir=runs_dir)
        self.base_ref, self.base_dir = ("father", None)
        if config.base:
            self.base_ref, self.base_dir = resolve_parent(config.base, local_mode=config.local_mode, runs_dir=runs_dir)
        self.tasks, self.weights = load_tasks(config, runs_dir=runs_dir)
        self.layer_count = anatomy.layer_count(json.loads((self.father_dir / "config.json").read_text(encoding="utf-8")))
        self.space = get_space(config.genome, layer_count=self.layer_count)
        self.dtype = None if config.dtype == "auto" else config.dtype
        self.log("loading the parents and the resident child")
        self.child = ResidentChild(self.father_dir, self.mother_dir, base=self.base_dir, device=config.device, dtype=config.dtype)
        self.mri_ratios = self._prescription()
        self.lower, self.upper = self.space.bounds
        self.x0 = list(self.space.default())
        self._baselines = self._baseline_recipes()

    # ---------------------------------------------------------------- genome ↔ recipe

    def _prescription(self) -> dict[str, float] | None:
        """Per-tensor MRI ratios (share of the mother), from a saved pair scan or a scan made now."""
        self.scan: dict[str, Any] | None = None
        if not self.config.mri:
            return None
        from darwin_core.mri import scan as mri
        from darwin_core.fitness.probes import probes_from_tasks

        if self.config.mri == "auto":
            self.log("scanning the parents (MRI) for the prescription")
            try:
                probes = probes_from_tasks(self.tasks)
            except DarwinError:
                probes = None  # tasks without probe texts: the built-in probe set
            scan = mri.scan_pair(self.father_dir, self.mother_dir, probes=probes, device=str(self.child.device))
        else:
            scan = mri.load_scan(self.config.mri)
        if "prescription" not in scan:
            raise DarwinError(f"The MRI file {self.config.mri} is a scan of one model; the prescription needs a scan of both parents.")
        self.scan = scan
        return {str(k): float(v) for k, v in scan["prescription"].items()}

    def _recipe_args(self) -> dict[str, Any]:
        return dict(
            father=self.father_ref, mother=self.mother_ref, layer_count=self.layer_count, method=self.method,
            mri_ratios=self.mri_ratios, frozen_layers=self.config.frozen_layers, seed=self.config.seed,
            base=self.base_ref, dtype=self.dtype,
        )

    def recipe(self, vector: Sequence[float]):
        return self.space.to_recipe(list(vector), **self._recipe_args())

    def _baseline_recipes(self) -> dict[str, Any]:
        """Reference lines: a uniform 50/50 linear merge, and the MRI prescription with no search at all
        (darwin-v6's neutral genome with mri_trust = 1, so every tensor takes its MRI ratio)."""
        from darwin_core.genome.spaces import DarwinV6Space
        from darwin_core.recipe import Recipe, ratio_table

        recipes = {
            "uniform-50": Recipe(
                father=self.father_ref, mother=self.mother_ref, method="linear", ratios=ratio_table(0.5),
                frozen_layers=self.config.frozen_layers, dtype=self.dtype, seed=self.config.seed,
            )
        }
        if self.mri_ratios is not None:
            v6 = DarwinV6Space()
            genome = [1.0 if name == "mri_trust" else value for name, value in zip(v6.names, v6.default())]
            recipes["mri"] = v6.to_recipe(genome, **self._recipe_args())
        return recipes

    def baseline_names(self) -> list[str]:
        return ["father", "mother", *self._baselines]

    def baseline_recipe(self, name: str):
        return self._baselines.get(name)

    def describe(self, vector: Sequence[float]) -> dict[str, Any]:
        return {"recipe_hash": self.recipe(vector).recipe_hash}

    def status_extras(self) -> dict[str, Any]:
        """Progress facts for status.json: peak accelerator memory so far (what the UI shows beside the curve)."""
        import torch

        if self.child.device.type == "cuda":
            return {"device_memory_bytes": int(torch.cuda.max_memory_allocated(self.child.device))}
        return {}

    # ---------------------------------------------------------------- measuring

    def load(self, candidate: Candidate) -> None:
        if isinstance(candidate, str):
            if candidate in ("father", "mother"):
                self.child.load_parent(candidate)
            else:
                self.child.load_recipe(self._baselines[candidate])
        else:
            self.child.load_recipe(self.recipe(candidate))

    def measure(self, candidate: Candidate, tasks: Sequence[Task], split: str = "search") -> EvalResult:
        self.load(candidate)
        return self.measure_loaded(tasks, split)

    def measure_loaded(self, tasks: Sequence[Task], split: str = "search") -> EvalResult:
        """Score the weights the resident child holds now (after `load`, or `child.load_recipe` of any recipe)."""
        from darwin_core.fitness.evaluate import evaluate

        return evaluate(self.child.model, self.child.tokenizer, list(tasks), split=split, batch_size=self.config.batch_size, seed=self.config.seed)


# --------------------------------------------------------------------------------------------- final stage


def heldout_report(problem: ModelProblem, best: dict[str, Any], child_dir: Path, *, log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parents, baselines and the child (loaded back from disk, as published) on the held-out split.

    Returns (report, per-item results). Comparisons: paired bootstrap 95% interval of the accuracy difference
    and exact McNemar p of the child against each parent, per task and for the weighted composite.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from darwin_core.fitness.evaluate import evaluate
    from darwin_core.fitness.stats import compare_results

    config = problem.config
    results: dict[str, EvalResult] = {}
    for name in problem.baseline_names():
        log(f"held-out: {name}")
        results[name] = problem.measure(name, problem.tasks, split="heldout")
    log("held-out: child (from disk)")
    model = AutoModelForCausalLM.from_pretrained(child_dir, dtype=problem.child.model.dtype).to(problem.child.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(child_dir)
    results["child"] = evaluate(model, tokenizer, problem.tasks, split="heldout", batch_size=config.batch_size, seed=config.seed)
    del model

    weights = normalize_weights(problem.weights, [t.name for t in problem.tasks])
    comparisons = {  # the child against each parent, and against the baselines it should also beat
        other: {k: v.to_dict() for k, v in compare_results(results["child"], results[other], weights=weights, seed=config.seed).items()}
        for other in problem.baseline_names()
    }
    beats = {
        parent: comparisons[parent]["composite"]["diff"] > 0 and comparisons[parent]["composite"]["p_value"] < SIGNIFICANCE
        for parent in ("father", "mother")
    }
    report = {
        "split": "heldout",
        "weights": weights,
        "items": {t.name: len(t.heldout) for t in problem.tasks},
        "models": {name: {"scores": _scores(r), "composite": r.composite(weights)} for name, r in results.items()},
        "comparisons": comparisons,
        "significance": SIGNIFICANCE,
        "beats_father": beats["father"],
        "beats_mother": beats["mother"],
        "beats_both_parents": beats["father"] and beats["mother"],
    }
    return report, {name: r.to_dict() for name, r in results.items()}


def choose_child(best_candidate: dict[str, Any], baselines_search: Mapping[str, float], problem: ModelProblem) -> dict[str, Any]:
    """The recipe the run publishes: the best candidate, unless a merge reference line (50/50 blend, MRI
    prescription) scored higher on the same full search set — a search never hands back a child worse than a
    recipe it measured on the same items. Parents are not eligible: the run breeds a child. Ties keep the candidate.
    """
    child = {**best_candidate, "kind": "candidate"}
    for name in problem.baseline_names():
        if name in ("father", "mother") or name not in baselines_search:
            continue
        if baselines_search[name] > child["fitness"]:
            child = {"kind": "baseline", "name": name, "generation": BASELINE_GENERATION, "fitness": baselines_search[name]}
    return child


def run_evolution(
    config: EvolutionConfig,
    run_dir: Path | str,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Run (or resume) the evolution in `run_dir`; returns "finished" or "cancelled".

    Writes evaluations.jsonl, events.jsonl and a checkpoint after every generation, then best-recipe.yaml,
    child/ and report.json. The caller (jobs.execute) owns status.json's state; a DarwinError is the user's
    sentence, anything else a bug.
    """
    folder = RunFolder(run_dir)
    log = log or (lambda message: None)
    from darwin_core.parents.names import parent_label  # events are shown on pages: parents by public name, no path

    folder.append_event("loading", father=parent_label(config.father), mother=parent_label(config.mother))
    folder.update_status(phase="loading")
    problem = ModelProblem(config, log=log, runs_dir=folder.path.parent)
    if problem.scan is not None:
        from darwin_core.mri.scan import save_json

        save_json(problem.scan, folder.file(MRI_SCAN))  # the card's MRI picture and the prescription's evidence
    folder.update_status(phase="search", generations=config.generations)
    try:
        outcome = run_search(folder, problem, SearchSettings.from_config(config), should_stop=should_stop, log=log)
    except Cancelled:
        return "cancelled"  # jobs.execute records the state and the event
    if outcome.best is None:
        raise DarwinError("The search ended without a candidate scored on the full search set; raise topk_full above 0.")

    folder.update_status(phase="final")
    baselines_search = {e["name"]: e["fitness"] for e in folder.evaluations() if e["kind"] == "baseline"}
    best = choose_child(outcome.best, baselines_search, problem)
    recipe = problem.recipe(best["genome"]) if best["kind"] == "candidate" else problem.baseline_recipe(best["name"])
    best["recipe_hash"] = recipe.recipe_hash
    atomic_write_text(folder.file(BEST_RECIPE), recipe.to_yaml())
    folder.append_event("best_recipe", name=best["name"], fitness=best["fitness"], recipe_hash=recipe.recipe_hash)
    if best["kind"] == "baseline":
        log(f"no candidate beat the {best['name']} reference on the full search set "
            f"({outcome.best['fitness']:.4f} vs {best['fitness']:.4f}); the child is that recipe")
    log(f"best: {best['name']} (search fitness {best['fitness']:.4f}); merging the child to disk")

    from darwin_core.merge.disk import merge_to_disk

    if should_stop and should_stop():
        return "cancelled"
    child_dir = merge_to_disk(recipe, folder.file(CHILD), device=str(problem.child.device), overwrite=True)
    folder.append_event("child_written", path=CHILD)


    report: dict[str, Any] = {
        "run_id": folder.run_id,
        "father": parent_label(config.father),
        "mother": parent_label(config.mother),
        "best": best,
        "best_candidate": {**outcome.best, "kind": "candidate"},
        "generations_run": outcome.generation,
        "stopped_early": outcome.stopped_early,
        "baselines_search": baselines_search,
    }
    if config.heldout:
        heldout, per_item = heldout_report(problem, best, Path(child_dir), log=log)
        report["heldout"] = heldout
        atomic_write_text(folder.file(HELDOUT_RESULTS), json.dumps(per_item, sort_keys=True) + "\n")
    atomic_write_text(folder.file(REPORT), json.dumps(report, indent=1, sort_keys=True) + "\n")
    folder.append_event("report_written")
    return "finished"
