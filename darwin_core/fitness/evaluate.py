"""One model, a list of tasks, one split → per-task scores, per-item results and the composite fitness.

The evolution loop calls this on the *search* split for every candidate and the
final report calls it on the *held-out* split; both keep every item's result so
child and parents can be compared item by item (stats.py). Nothing here is
random except maj@k sampling, which is seeded per item, so the same model on the
same tasks gives the same result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from darwin_core.errors import DarwinError
from darwin_core.fitness.scoring import ItemResult, score_choices, score_generative, score_majority
from darwin_core.fitness.tasks import Item, Task

Split = Literal["search", "heldout"]
ChoiceMetric = Literal["acc", "acc_norm"]


@dataclass(frozen=True)
class TaskResult:
    """A task's per-item results on one split and the metric its score uses.

    metric: "acc" or "acc_norm" (multiple choice), "exact_match" or "maj@k" (generation).
    """

    name: str
    kind: str
    metric: str
    items: tuple[ItemResult, ...]
    seconds: float = 0.0

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.items)

    def correct_vector(self, metric: str | None = None) -> tuple[bool, ...]:
        """Per-item correctness under `metric` (default: the task's own), in item order."""
        metric = metric or self.metric
        if metric == "acc_norm":
            if self.kind != "choice":
                raise DarwinError(f"Task {self.name!r} is generative, so it has no acc_norm.")
            return tuple(bool(i.correct_norm) for i in self.items)
        return tuple(i.correct for i in self.items)

    @property
    def correct(self) -> tuple[bool, ...]:
        return self.correct_vector()

    @property
    def score(self) -> float:
        vector = self.correct
        return sum(vector) / len(vector) if vector else 0.0

    def accuracy(self, metric: str) -> float:
        vector = self.correct_vector(metric)
        return sum(vector) / len(vector) if vector else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "score": self.score,
            "seconds": self.seconds,
            "items": [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TaskResult:
        return cls(
            name=data["name"],
            kind=data["kind"],
            metric=data["metric"],
            items=tuple(ItemResult.from_dict(i) for i in data["items"]),
            seconds=float(data.get("seconds", 0.0)),
        )


def normalize_weights(weights: Mapping[str, float] | None, names: Sequence[str]) -> dict[str, float]:
    """Composite weights over `names`, summing to 1 (equal weights when none are given; unnamed tasks get 0)."""
    if not names:
        raise DarwinError("There are no task results to combine into a composite score.")
    if weights is None:
        return {n: 1.0 / len(names) for n in names}
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise DarwinError(f"The composite weights name {unknown[0]!r}, which is not one of the evaluated tasks ({', '.join(names)}).")
    if any(w < 0 for w in weights.values()):
        raise DarwinError("Composite weights must not be negative.")
    total = float(sum(weights.get(n, 0.0) for n in names))
    if total <= 0:
        raise DarwinError("The composite weights add up to zero; give at least one task a positive weight.")
    return {n: float(weights.get(n, 0.0)) / total for n in names}


@dataclass(frozen=True)
class EvalResult:
    """All tasks' results of one model on one split."""

    split: str
    tasks: Mapping[str, TaskResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def scores(self) -> dict[str, float]:
        return {name: result.score for name, result in self.tasks.items()}

    def composite(self, weights: Mapping[str, float] | None = None) -> float:
        """Weighted sum of task scores, weights normalised to sum to 1 (e.g. {"click": 0.6, "musr": 0.4})."""
        normalized = normalize_weights(weights, list(self.tasks))
        return sum(normalized[name] * result.score for name, result in self.tasks.items())

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "seconds": self.seconds,
            "scores": self.scores,
            "tasks": {name: result.to_dict() for name, result in self.tasks.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        return cls(
            split=data["split"],
            tasks={name: TaskResult.from_dict(t) for name, t in data["tasks"].items()},
            seconds=float(data.get("seconds", 0.0)),
        )


def split_of(task: Task, split: Split, limit: int | None = None) -> tuple[Item, ...]:
    """The items of one split (the first `limit` of them when a limit is given: a cheap proxy)."""
    if split not in ("search", "heldout"):
        raise DarwinError(f"The split must be 'search' or 'heldout', not {split!r}.")
    items = task.search if split == "search" else task.heldout
    if limit is not None:
        if limit < 1:
            raise DarwinError("The item limit must be at least 1.")
        items = items[:limit]
    return items


def _checked_items(
    tasks: Sequence[Task], split: Split, limit: int | None, metrics: Mapping[str, ChoiceMetric]
) -> dict[str, tuple[Item, ...]]:
    """Each task's items of `split`, after checking every task's kind and metric, so that a bad task fails
    before any model time is spent on the others."""
    by_task: dict[str, tuple[Item, ...]] = {}
    for task in tasks:
        by_task[task.name] = split_of(task, split, limit)
        if not by_task[task.name]:
            raise DarwinError(f"Task {task.name!r} has no items in its {split} split.")
        if task.kind == "choice":
            metric = metrics.get(task.name, "acc")
            if metric not in ("acc", "acc_norm"):
                raise DarwinError(f"Task {task.name!r}: the metric must be 'acc' or 'acc_norm', not {metric!r}.")
        elif task.kind == "generate":
            if task.name in metrics:
                raise DarwinError(f"Task {task.name!r} is generative; acc/acc_norm apply to multiple choice only.")
        else:
            raise DarwinError(f"Task {task.name!r} has an unknown kind {task.kind!r}.")
    return by_task


def evaluate(
    model,
    tokenizer,
    tasks: Sequence[Task],
    *,
    split: Split,
    limit: int | None = None,
    batch_size: int = 32,
    metrics: Mapping[str, ChoiceMetric] | None = None,
    samples: int = 1,
    temperature: float = 0.7,
    seed: int = 0,
    ignore_case: bool = False,
) -> EvalResult:
    """Score `model` on one split of every task.

    metrics: per multiple-choice task, "acc" (default) or "acc_norm" as its score.
    samples: 1 = greedy exact match for generative tasks, the items of all of them decoded in shared batches
    (each task's `seconds` is then its share of that time by item count); k > 1 = maj@k with seeded sampling.
    The model is put in eval mode for the call and given back in the mode it came in.
    """
    metrics = dict(metrics or {})
    if samples < 1:
        raise DarwinError("The number of samples per item must be at least 1.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise DarwinError("Two tasks have the same name; give each task a distinct name.")
    unknown = sorted(set(metrics) - set(names))
    if unknown:
        raise DarwinError(f"A metric is set for {unknown[0]!r}, which is not one of the tasks.")
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    results: dict[str, TaskResult] = {}
    try:
        by_task = _checked_items(tasks, split, limit, metrics)
        greedy = [t for t in tasks if t.kind == "generate" and samples == 1]
        if greedy:  # every greedy item of every task in shared batches, each with its task's token budget
            t0 = time.perf_counter()
            items = [i for t in greedy for i in by_task[t.name]]
            budgets = [t.max_new_tokens for t in greedy for _ in by_task[t.name]]
            scored = iter(score_generative(model, tokenizer, items, max_new_tokens=budgets, batch_size=batch_size, ignore_case=ignore_case))
            share = (time.perf_counter() - t0) / len(items)
            for task in greedy:
                n = len(by_task[task.name])
                results[task.name] = TaskResult(
                    name=task.name, kind=task.kind, metric="exact_match",
                    items=tuple(next(scored) for _ in range(n)), seconds=share * n,
                )
        for task in tasks:
            if task.name in results:
                continue
            items = by_task[task.name]
            t0 = time.perf_counter()
            if task.kind == "choice":
                metric = metrics.get(task.name, "acc")
                item_results = score_choices(model, tokenizer, items, batch_size=batch_size)
            else:
                metric = f"maj@{samples}"
                item_results = score_majority(
                    model, tokenizer, items, k=samples, max_new_tokens=task.max_new_tokens,
                    temperature=temperature, seed=seed, ignore_case=ignore_case,
                )
            results[task.name] = TaskResult(
                name=task.name, kind=task.kind, metric=metric, items=tuple(item_results),
                seconds=time.perf_counter() - t0,
            )
    finally:
        model.train(was_training)
    results = {t.name: results[t.name] for t in tasks}  # in the tasks' order
    return EvalResult(split=split, tasks=results, seconds=time.perf_counter() - started)


