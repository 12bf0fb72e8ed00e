"""The search: CMA-ES over a genome space, every candidate scored on the search split, checkpointed each generation.

Shape (pycma's ask/tell): the optimiser only proposes genomes; this loop owns scheduling and persistence.

    baselines (father, mother, uniform 50%, MRI prescription alone) on the full search set   [generation 0]
    for each generation g = 1..G:
        X = es.ask()
        Phase 1: every candidate on the proxy subset (a fixed, seeded sample of the search items)
        Phase 2: the top-k candidates by proxy score on the rest of the search set (full = proxy ∪ rest),
                 or (selection: halving) successive halving's rungs up to the full set (halving.py)
        es.tell(X, −proxy fitness)          (CMA-ES minimises; all candidates ranked on the same measure)
        best = highest full-search fitness seen so far (only Phase 2 results can become best)
        stop when patience runs out or CMA-ES's own es.stop() fires (reason in events and checkpoint)
        checkpoint                          (atomic; see below)

Each phase is one batch (`iter_measured`: `problem.measure_many` when the problem has it, e.g. spread over
torchrun ranks; else candidate by candidate, with stop requests honoured between candidates). Records are
appended in the batch's order after it, so evaluations.jsonl does not depend on how a batch was computed; the
wall-clock cost of each evaluation (EvalTiming: merge and scoring seconds, tokens) goes to events.jsonl only.

Gold labels of the held-out split never enter the loop; Phase 2 picks its candidates by their proxy score
(fitness on search items), never by anything held out.

Exact resume. Everything a generation does is a pure function of (config, CMA-ES state): the proxy subset is
seeded by (seed, task), candidates are written into the resident child by the deterministic merge path, and
evaluation is greedy/log-likelihood scoring. The only state is the CMA-ES object, and it owns its random
numbers: it is built with `randn` bound to a private `numpy.random.RandomState`, so pickling the object
pickles its RNG state with it (pycma's default would draw from numpy's global RNG, which a pickle does not
capture). numpy's global RNG is also swapped for a private one around ask/tell and checkpointed, in case a
pycma code path draws from it. After every generation the loop writes, atomically, a SearchState: the
pickled CMA-ES object, the generation number, the best so far, the patience counter and the byte length of
evaluations.jsonl. A resumed run truncates evaluations.jsonl to that length (dropping the measurements of
the generation that was in flight) and continues; since every step is a pure function of that state, it
re-measures the same candidates with the same results, and ends with a byte-identical evaluations.jsonl and
the same best recipe as a run that was never interrupted. events.jsonl is the wall-clock log and keeps
everything (it records the interruption and the resume).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from darwin_core.evolution.config import EvolutionConfig
from darwin_core.evolution.halving import Rung, halving_rungs, rung_phase
from darwin_core.evolution.records import BASELINE_GENERATION, EvaluationRecord, SearchState, candidate_name
from darwin_core.evolution.timing import EvalTiming, untimed
from darwin_core.fitness.evaluate import EvalResult, TaskResult, normalize_weights
from darwin_core.fitness.tasks import Task, seeded_rng
from darwin_core.io.runfolder import RunFolder


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

    # Optional (found with hasattr, so a Protocol member would wrongly make it required):
    #   measure_many(candidates: Sequence[Candidate], tasks: Sequence[Task]) -> list[EvalResult]
    #       every candidate's result on `tasks`, in the batch's order (e.g. spread over several processes);
    #   last_timing: EvalTiming set by `measure`, last_timings: list[EvalTiming] set by `measure_many`.


def iter_measured(problem: Problem, candidates: Sequence[Candidate], tasks: Sequence[Task],
                  check_stop: Callable[[], None] = lambda: None) -> Iterator[tuple[EvalResult, EvalTiming]]:
    """(result, timing) per candidate, in the batch's order: all at once after `problem.measure_many` when the
    problem has one, else one by one with `check_stop` before each (so a stop request lands between
    candidates there, between batches here). A result is a pure function of (candidate, tasks), so how the batch
    was computed changes no result; timings are the problem's own when it reports them, else the wall clock."""
    candidates = list(candidates)
    if hasattr(problem, "measure_many"):
        check_stop()
        t0 = time.perf_counter()
        results = list(problem.measure_many(candidates, tasks))
        if len(results) != len(candidates):
            raise AssertionError(f"measure_many returned {len(results)} results for {len(candidates)} candidates")
        timings = list(getattr(problem, "last_timings", None) or [])
        if len(timings) != len(candidates):
            timings = untimed(len(candidates), time.perf_counter() - t0)
        yield from zip(results, timings)
        return
    for candidate in candidates:
        check_stop()
        t0 = time.perf_counter()
        result = problem.measure(candidate, tasks)
        timing = getattr(problem, "last_timing", None)
        yield result, timing if isinstance(timing, EvalTiming) else untimed(1, time.perf_counter() - t0)[0]


def measure_all_timed(problem: Problem, candidates: Sequence[Candidate],
                      tasks: Sequence[Task]) -> tuple[list[EvalResult], list[EvalTiming]]:
    """(results, timings) of a whole batch, in the batch's order (see iter_measured)."""
    pairs = list(iter_measured(problem, candidates, tasks))
    return [r for r, _ in pairs], [t for _, t in pairs]


def measure_all(problem: Problem, candidates: Sequence[Candidate], tasks: Sequence[Task]) -> list[EvalResult]:
    """Every candidate's result on `tasks`, in the batch's order (`problem.measure_many` when it has one)."""
    return measure_all_timed(problem, candidates, tasks)[0]


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
    selection: str = "topk"  # or "halving" (darwin_core.evolution.halving)
    halving_rate: int = 2
    cma_stop: bool = True  # honour es.stop() (less IGNORED_CMA_STOPS)

    @classmethod
    def from_config(cls, config: EvolutionConfig) -> "SearchSettings":
        return cls(
            population=config.population, sigma0=float(config.sigma0), generations=config.generations,
            seed=config.seed, proxy_items=config.proxy_items, topk_full=config.topk_full,
            patience=config.patience, digest=config.digest(), selection=config.selection,
            halving_rate=config.halving_rate, cma_stop=config.cma_stop,
        )


# pycma's fitness-value stops (flat fitness, a fitness range below tolfun) fire whenever a generation's candidates
# tie, which accuracies on a few dozen items do from the first generation while the distribution still moves (pycma
# widens sigma itself then): item granularity, not convergence. The distribution's own stops are honoured (tolx,
# tolupsigma, conditioncov, noeffectaxis, noeffectcoord, tolstagnation, maxiter, …).
IGNORED_CMA_STOPS = frozenset({"tolflatfitness", "tolfun", "tolfunrel", "tolfunhist"})


class Cancelled(Exception):
    """The user asked the run to stop; what was measured stays in the run folder."""


@dataclass
class SearchOutcome:
    state: str  # "finished" | "cancelled"
    best: dict[str, Any] | None
    generation: int
    stopped_early: bool = False
    stop_reason: str | None = None


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


def task_scores(result: EvalResult) -> dict[str, float]:
    """Each task's score by name: the `scores` of an evaluation record and of the held-out report."""
    return {name: float(r.score) for name, r in result.tasks.items()}


@contextlib.contextmanager
def _private_global_rng(state: SearchState):
    """Run a block with numpy's global RNG set to `state.global_rng`, then store its new state and restore the
    caller's: whatever else in the process draws from np.random cannot shift the search, and vice versa."""
    outside = np.random.get_state()
    np.random.set_state(state.global_rng)
    try:
        yield
    finally:
        state.global_rng = np.random.get_state()
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

def _restrict(result: EvalResult, tasks: Sequence[Task]) -> EvalResult:
    """The part of a full-search result that falls on the given (proxy) tasks' items."""
    out = {}
    for task in tasks:
        wanted = {i.id for i in task.search}
        full = result.tasks[task.name]
        out[task.name] = replace(full, items=tuple(i for i in full.items if i.id in wanted))
    return EvalResult(split=result.split, tasks=out, seconds=result.seconds)



# --------------------------------------------------------------------------------------------- the loop


def run_search(
    folder: RunFolder,
    problem: Problem,
    settings: SearchSettings,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """The CMA-ES loop with per-generation checkpoints; resumes from the folder's checkpoint when there is one."""
    loop = _SearchLoop(folder, problem, settings, should_stop or (lambda: False), log or (lambda message: None))
    state = loop.resume()
    if state is None:
        state = loop.start()
    while not state.done:
        loop.run_generation(state)
    return SearchOutcome(state="finished", best=state.best, generation=state.generation, stopped_early=state.stopped_early,
                         stop_reason=state.stop_reason)


@dataclass
class _Generation:
    """What one generation measured: the genomes CMA-ES proposed, their proxy results and fitness, and the
    full-search fitness of those Phase 2 took (by index)."""

    number: int
    solutions: list[Any]
    genomes: list[list[float]]
    proxy_results: list[EvalResult]
    proxy_fitness: list[float]
    full_fitness: dict[int, float]


class _SearchLoop:
    """One call of run_search: the problem, the fixed proxy/rest split and the run folder it records into."""

    def __init__(self, folder: RunFolder, problem: Problem, settings: SearchSettings,
                 should_stop: Callable[[], bool], log: Callable[[str], None]):
        self.folder, self.problem, self.settings = folder, problem, settings
        self.should_stop, self.log = should_stop, log
        self.weights = normalize_weights(dict(problem.weights), [t.name for t in problem.tasks])
        self.proxy_tasks, self.rest_tasks = proxy_split(problem.tasks, settings.proxy_items, settings.seed)
        self.proxy_is_full = not self.rest_tasks
        self.rungs: list[Rung] = []
        if settings.selection == "halving":
            self.rungs = halving_rungs(problem.tasks, self.proxy_tasks, population=settings.population,
                                       proxy_items=settings.proxy_items, rate=settings.halving_rate, seed=settings.seed)

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled()

    def record(self, record: EvaluationRecord, timing: EvalTiming, tasks: Sequence[Task]) -> None:
        """The measurement into evaluations.jsonl (deterministic) and its timing into events.jsonl (wall clock),
        with the number of items this evaluation scored (`items`: what the next run's cost estimate divides by)."""
        self.folder.append_evaluation(record.to_json())
        self.folder.append_event("evaluated", name=record.name, phase=record.phase, fitness=record.fitness,
                                 seconds=round(timing.seconds, 3), items=sum(len(t.search) for t in tasks),
                                 **timing.to_event())

    def checkpoint(self, state: SearchState) -> None:
        state.evaluations_bytes = self.folder.evaluations_size()
        self.folder.write_checkpoint(state.to_checkpoint())

    # ---------------------------------------------------------------- start / resume

    def resume(self) -> SearchState | None:
        """The checkpointed state, with evaluations.jsonl cut back to it; None when the run has no checkpoint."""
        saved = self.folder.read_checkpoint()
        if saved is None:
            return None
        state = SearchState.from_checkpoint(saved, digest=self.settings.digest)
        self.folder.truncate_evaluations(state.evaluations_bytes)
        self.folder.append_event("resumed", generation=state.generation)
        self.log(f"resumed after generation {state.generation}")
        return state

    def start(self) -> SearchState:
        """A fresh CMA-ES and the reference lines measured on the full search set (generation 0), checkpointed."""
        self.folder.truncate_evaluations(0)  # no checkpoint: whatever was measured before belongs to no generation
        self.check_stop()
        es = _new_es(self.problem, self.settings)
        global_rng = np.random.RandomState(self.settings.seed % 2**32).get_state()
        self.folder.append_event("search_started", x0=[float(v) for v in es.mean], selection=self.settings.selection,
                                 rungs=[{"keep": r.keep, "items": sum(len(t.search) for t in r.cumulative)} for r in self.rungs])
        self.folder.append_event("baselines_started", names=self.problem.baseline_names())
        names = self.problem.baseline_names()
        baselines: dict[str, float] = {}
        for name, (full, timing) in zip(names, iter_measured(self.problem, names, self.problem.tasks, self.check_stop)):
            baselines[name] = self.record_baseline(name, full, timing).fitness
            self.log(f"baseline {name}: {baselines[name]:.4f}")
        state = SearchState(digest=self.settings.digest, es=es, global_rng=global_rng, baselines=baselines)
        self.checkpoint(state)
        return state

    def record_baseline(self, name: str, full: EvalResult, timing: EvalTiming) -> EvaluationRecord:
        proxy = combine(self.proxy_tasks, _restrict(full, self.proxy_tasks))
        record = EvaluationRecord(
            kind="baseline", name=name, generation=BASELINE_GENERATION, phase="full",
            fitness=full.composite(self.weights), scores=task_scores(full),
            proxy_fitness=proxy.composite(self.weights), proxy_scores=task_scores(proxy),
        )
        self.record(record, timing, self.problem.tasks)
        return record

    # ---------------------------------------------------------------- one generation

    def run_generation(self, state: SearchState) -> None:
        """Ask, Phase 1, Phase 2, tell, update the best, checkpoint: the state after it is the next checkpoint."""
        t_gen = time.perf_counter()
        self.check_stop()
        with _private_global_rng(state):
            solutions = state.es.ask()
        generation = _Generation(number=state.generation + 1, solutions=solutions,
                                 genomes=[[float(v) for v in x] for x in solutions],
                                 proxy_results=[], proxy_fitness=[], full_fitness={})
        self.measure_proxies(generation)
        if self.settings.selection == "halving":
            self.measure_rungs(generation)
        else:
            self.measure_top_k(generation)
        with _private_global_rng(state):
            state.es.tell(solutions, [-f for f in generation.proxy_fitness])
        self.advance(state, generation)
        self.checkpoint(state)
        self.report_generation(state, generation, time.perf_counter() - t_gen)

    def measure_proxies(self, generation: _Generation) -> None:
        """Phase 1: every candidate on the proxy subset (which is the whole search set when it covers it), as one
        batch; the records follow in index order."""
        phase = "full" if self.proxy_is_full else "proxy"
        measured = iter_measured(self.problem, generation.genomes, self.proxy_tasks, self.check_stop)
        for index, (genome, (result, timing)) in enumerate(zip(generation.genomes, measured)):
            fitness = result.composite(self.weights)
            generation.proxy_fitness.append(fitness)
            generation.proxy_results.append(result)
            self.record(self.candidate_record(generation.number, index, genome, phase, fitness, task_scores(result)),
                        timing, self.proxy_tasks)
        if self.proxy_is_full:
            generation.full_fitness = dict(enumerate(generation.proxy_fitness))

    def measure_top_k(self, generation: _Generation) -> None:
        """Phase 2: the top-k by proxy fitness (ties: lower index first) on the rest of the search set, one batch;
        the records follow in rank order, as they always did."""
        if self.proxy_is_full:
            return
        proxy_fitness = generation.proxy_fitness
        ranked = sorted(range(len(generation.genomes)), key=lambda i: (-proxy_fitness[i], i))[: self.settings.topk_full]
        measured = iter_measured(self.problem, [generation.genomes[i] for i in ranked], self.rest_tasks, self.check_stop)
        for index, (rest, timing) in zip(ranked, measured):
            genome = generation.genomes[index]
            full = combine(self.problem.tasks, generation.proxy_results[index], rest)
            generation.full_fitness[index] = full.composite(self.weights)
            self.record(self.candidate_record(generation.number, index, genome, "full", generation.full_fitness[index],
                                              task_scores(full), proxy_fitness=proxy_fitness[index]), timing, self.rest_tasks)

    def measure_rungs(self, generation: _Generation) -> None:
        """Successive halving after Phase 1 (rungs in darwin_core.evolution.halving): each rung one batch over the
        best of the rung before, scored on the rung's new items; the records follow in rank order."""
        parts = {index: [result] for index, result in enumerate(generation.proxy_results)}
        fitness = dict(enumerate(generation.proxy_fitness))
        for rung in self.rungs:
            ranked = sorted(fitness, key=lambda i: (-fitness[i], i))[: rung.keep]
            measured = iter_measured(self.problem, [generation.genomes[i] for i in ranked], rung.part, self.check_stop)
            fitness = {}
            for index, (result, timing) in zip(ranked, measured):
                parts[index].append(result)
                combined = combine(rung.cumulative, *parts[index])
                fitness[index] = combined.composite(self.weights)
                self.record(self.candidate_record(generation.number, index, generation.genomes[index], rung_phase(rung),
                                                  fitness[index], task_scores(combined),
                                                  proxy_fitness=generation.proxy_fitness[index]), timing, rung.part)
            if rung.last:
                generation.full_fitness = fitness

    def candidate_record(self, generation: int, index: int, genome: list[float], phase: str, fitness: float,
                         scores: dict[str, float], proxy_fitness: float | None = None) -> EvaluationRecord:
        return EvaluationRecord(
            kind="candidate", name=candidate_name(generation, index), generation=generation, index=index, phase=phase,
            genome=genome, facts=self.problem.describe(genome), fitness=fitness, scores=scores, proxy_fitness=proxy_fitness,
        )

    def advance(self, state: SearchState, generation: _Generation) -> None:
        """Only Phase 2 (full search set) scores can make a best; ties go to the lower index, then to the older best."""
        full_fitness, improved = generation.full_fitness, False
        if full_fitness:
            index = min(full_fitness, key=lambda i: (-full_fitness[i], i))
            if state.best is None or full_fitness[index] > state.best["fitness"]:
                genome = generation.genomes[index]
                state.best = {
                    "name": candidate_name(generation.number, index), "generation": generation.number, "index": index,
                    "genome": genome, "fitness": full_fitness[index], "proxy_fitness": generation.proxy_fitness[index],
                    **self.problem.describe(genome),
                }
                improved = True
        state.stale = 0 if improved else state.stale + 1
        state.generation = generation.number
        stop_early = self.settings.patience > 0 and state.stale >= self.settings.patience
        cma_reasons = self.cma_stop_reasons(state) if not stop_early else {}
        state.done = generation.number >= self.settings.generations or stop_early or bool(cma_reasons)
        state.stopped_early = stop_early or bool(cma_reasons)
        if cma_reasons and generation.number < self.settings.generations:
            state.stop_reason = "cma-es: " + ", ".join(f"{k}={v}" for k, v in sorted(cma_reasons.items()))
        elif stop_early:
            state.stop_reason = f"patience: no improvement for {self.settings.patience} generations"

    def cma_stop_reasons(self, state: SearchState) -> dict[str, Any]:
        """The stop conditions CMA-ES reports after this generation's tell (none when cma_stop is off)."""
        if not self.settings.cma_stop:
            return {}
        return {str(k): v for k, v in dict(state.es.stop()).items() if k not in IGNORED_CMA_STOPS}

    def report_generation(self, state: SearchState, generation: _Generation, seconds: float) -> None:
        """The generation's event, status.json's progress and the log line (after the checkpoint is safe)."""
        proxy_fitness, full_fitness, es = generation.proxy_fitness, generation.full_fitness, state.es
        best_so_far = state.best["fitness"] if state.best else None
        self.folder.append_event(
            "generation", generation=generation.number, sigma=float(es.sigma), best_proxy=max(proxy_fitness),
            mean_proxy=float(np.mean(proxy_fitness)), best_full=max(full_fitness.values()) if full_fitness else None,
            best_so_far=best_so_far, seconds=round(seconds, 3),
        )
        extras = self.problem.status_extras() if hasattr(self.problem, "status_extras") else {}
        self.folder.update_status(generation=generation.number, best_fitness=best_so_far, **extras)
        self.log(f"generation {generation.number}/{self.settings.generations}: best proxy {max(proxy_fitness):.4f}, "
                 f"best so far {best_so_far if best_so_far is not None else float('nan'):.4f}, sigma {es.sigma:.3f}")
        if state.stopped_early:
            self.folder.append_event("early_stop", generation=generation.number, patience=self.settings.patience,
                                     reason=state.stop_reason)
            self.log(f"stopped early: {state.stop_reason}")
