"""What a run will cost, said before it starts: candidates, items scored and minutes on this device.

Counts are exact from the config and the tasks' item counts (the same proxy split and halving rungs the loop
uses). Minutes come from measured speed, never from a guess: the timings (`merge_seconds`, `scoring_seconds`,
`items` of each "evaluated" event) of the latest earlier run in the same runs folder that bred the same parents
on the same device setting and dtype. Without one, the estimate says so and gives counts only (the first run
records the speed the next estimate uses). A stopped run (patience, CMA-ES's own stops) costs less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darwin_core.evolution.config import EvolutionConfig
from darwin_core.fitness.tasks import Task


@dataclass(frozen=True)
class MeasuredSpeed:
    """Speed measured by an earlier run: scoring seconds per item and merge seconds per candidate."""

    seconds_per_item: float
    merge_seconds: float
    source: str  # the run it was measured in


@dataclass(frozen=True)
class CostEstimate:
    candidates: int
    evaluations: int
    items: int
    items_known: bool  # False when a Hub / lm-eval task's size is only known once it is loaded
    speed: MeasuredSpeed | None

    @property
    def minutes(self) -> float | None:
        if self.speed is None:
            return None
        seconds = self.items * self.speed.seconds_per_item + self.evaluations * self.speed.merge_seconds
        return seconds / 60.0

    def sentence(self) -> str:
        """One line for the pre-flight output and the Evolve tab."""
        items = f"{self.items:,} item scorings" + ("" if self.items_known else " (plus the Hub / lm-eval tasks')")
        head = f"Cost estimate: {self.candidates:,} candidates, {self.evaluations:,} evaluations, {items}"
        if self.speed is None:
            return head + "; no measured speed for these parents on this device yet (this run records it)."
        return (head + f"; about {self.minutes:.1f} min at the speed measured in run {self.speed.source} "
                f"({1000 * self.speed.seconds_per_item:.1f} ms per item, {self.speed.merge_seconds:.2f} s per merge).")


def plan_counts(config: EvolutionConfig, tasks: Sequence[Task], baselines: int) -> tuple[int, int, int]:
    """(candidates, evaluations, items) the config's search spends on `tasks` at most (no early stop)."""
    from darwin_core.evolution.halving import halving_rungs, planned_items
    from darwin_core.evolution.search import proxy_split

    full_items = sum(len(task.search) for task in tasks)
    proxy, rest = proxy_split(tasks, config.proxy_items, config.seed)
    proxy_items = sum(len(task.search) for task in proxy)
    if not rest:
        per_generation, per_items = config.population, config.population * proxy_items
    elif config.selection == "halving":
        rungs = halving_rungs(tasks, proxy, population=config.population, proxy_items=config.proxy_items,
                              rate=config.halving_rate, seed=config.seed)
        per_generation = config.population + sum(rung.keep for rung in rungs)
        per_items = planned_items(tasks, proxy, rungs, config.population)
    else:
        per_generation = config.population + config.topk_full
        per_items = config.population * proxy_items + config.topk_full * (full_items - proxy_items)
    candidates = config.population * config.generations
    return candidates, baselines + per_generation * config.generations, baselines * full_items + per_items * config.generations


def _same_breeding(config: EvolutionConfig, other: Mapping[str, Any]) -> bool:
    return all(other.get(key) == getattr(config, key) for key in ("father", "mother", "device", "dtype", "base"))


def measured_speed(config: EvolutionConfig, runs_dir: Path | None, *, exclude: str | None = None) -> MeasuredSpeed | None:
    """The speed of the latest earlier run of the same parents, device and dtype that recorded timings (not the
    run `exclude`: a run's own estimate is the one it had at launch)."""
    import yaml

    from darwin_core.evolution.timing import EvalTiming
    from darwin_core.io.runfolder import run_folders

    if runs_dir is None or not Path(runs_dir).is_dir():
        return None
    for folder in reversed(run_folders(runs_dir)):
        if folder.run_id == exclude:
            continue
        try:
            other = yaml.safe_load(folder.config_text()) or {}
        except Exception:  # an unreadable or foreign folder has nothing to say about speed
            continue
        if not isinstance(other, Mapping) or not _same_breeding(config, other):
            continue
        timed = [(e, EvalTiming.from_event(e)) for e in folder.events() if e.get("event") == "evaluated" and e.get("items")]
        timed = [(e, t) for e, t in timed if t is not None]
        if timed:
            items = sum(int(e["items"]) for e, _ in timed)
            scoring = sum(t.scoring_seconds for _, t in timed)
            merge = sum(t.merge_seconds for _, t in timed) / len(timed)
            return MeasuredSpeed(seconds_per_item=scoring / items, merge_seconds=merge, source=folder.run_id)
    return None


def estimate_cost(config: EvolutionConfig, runs_dir: Path | None = None, *, exclude: str | None = None) -> CostEstimate:
    """The run's cost from its config, the tasks that load without the network, and measured speed."""
    from darwin_core.evolution.tasks import load_spec

    tasks: list[Task] = []
    known = True
    for spec in config.tasks:
        if spec.source in ("demo", "file"):
            tasks.extend(load_spec(spec, split_seed=config.split_seed))
        else:
            known = False
    baselines = 3 + (1 if config.mri else 0)  # father, mother, uniform-50 (+ the MRI prescription)
    if tasks:
        candidates, evaluations, items = plan_counts(config, tasks, baselines)
    else:  # item counts wait for the network; the evaluations do not depend on them under top-k
        per_generation = config.population + (config.topk_full if config.selection == "topk" else 0)
        candidates, evaluations, items = config.population * config.generations, baselines + per_generation * config.generations, 0
    return CostEstimate(candidates=candidates, evaluations=evaluations, items=items, items_known=known,
                        speed=measured_speed(config, runs_dir, exclude=exclude))


def estimate_run_cost(run_dir: Path | str) -> CostEstimate:
    """A queued or running run's estimate as it stood at launch: its config, and the speed of the runs before it."""
    from darwin_core.io.runfolder import RunFolder

    folder = RunFolder(run_dir)
    config = EvolutionConfig.from_yaml(folder.config_text(), source=f"The config of run {folder.run_id}")
    return estimate_cost(config, folder.path.parent, exclude=folder.run_id)
