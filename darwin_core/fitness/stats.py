"""Is the child really better than a parent? Paired tests on per-item correctness.

Child and parent answer the *same* questions, so the comparison is paired:

* `paired_bootstrap`: resample items with replacement (seeded numpy Generator,
  10,000 resamples by default) and take the percentile interval of
  mean(child) − mean(parent). For a weighted composite the items are resampled
  within each task (stratified), and the difference is Σ_t w_t·(Δ accuracy of t),
  which is exactly how the composite itself is built.
* `mcnemar_exact`: the exact McNemar test, a two-sided binomial test with p = ½ on
  the discordant items (b = child right & parent wrong, c = the reverse):
  p = min(1, 2·Σ_{i ≤ min(b,c)} C(b+c, i) / 2^(b+c)). For the composite it pools the
  discordant items of all tasks (each item counts once; the task weights enter the
  interval, not the test). Pure Python (math.comb, exact integers), so the runtime
  does not need scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from darwin_core.errors import DarwinError
from darwin_core.fitness.evaluate import normalize_weights  # one definition of the composite weights

RESAMPLES = 10_000
CONFIDENCE = 0.95
_DRAWS_PER_CHUNK = 2_000_000  # indices drawn at a time (16 MB), so memory stays flat for large tasks


@dataclass(frozen=True)
class PairedComparison:
    """Child vs parent on the same items: scores, the difference with its interval, McNemar's p."""

    n: int
    child: float
    parent: float
    diff: float
    ci_low: float
    ci_high: float
    child_only: int  # items the child gets right and the parent wrong
    parent_only: int  # items the parent gets right and the child wrong
    p_value: float
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(child_only: int, parent_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    if child_only < 0 or parent_only < 0:
        raise DarwinError("Discordant counts cannot be negative.")
    n = child_only + parent_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(child_only, parent_only) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int is correctly rounded even for huge n


def _as_vector(values: Sequence[bool] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise DarwinError(f"The {what} correctness must be a flat list of per-item results.")
    return array


def _check_pair(child: np.ndarray, parent: np.ndarray, task: str) -> None:
    if len(child) != len(parent):
        raise DarwinError(f"{task}: the child has {len(child)} item results and the parent {len(parent)}; they must answer the same items.")
    if len(child) == 0:
        raise DarwinError(f"{task}: there are no items to compare.")


def paired_bootstrap(
    child: Mapping[str, Sequence[bool]] | Sequence[bool],
    parent: Mapping[str, Sequence[bool]] | Sequence[bool],
    *,
    weights: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the (weighted) accuracy difference child − parent.

    Pass two vectors for one task, or two {task: vector} mappings (same items in the
    same order per task) plus normalised weights for the composite.
    """
    if resamples < 1:
        raise DarwinError("The bootstrap needs at least one resample.")
    if not 0 < confidence < 1:
        raise DarwinError("The confidence level must be between 0 and 1.")
    child_map, parent_map, w = _as_tasks(child, parent, weights)
    rng = np.random.default_rng(seed)
    diffs = np.zeros(resamples)
    for name in child_map:  # stratified: each task resampled on its own, fixed order of draws
        d = child_map[name] - parent_map[name]
        n = len(d)
        chunk = max(1, _DRAWS_PER_CHUNK // n)
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            idx = rng.integers(0, n, size=(size, n))
            diffs[start : start + size] += w[name] * d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(low), float(high)


def _as_tasks(child, parent, weights) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    if isinstance(child, Mapping) != isinstance(parent, Mapping):
        raise DarwinError("Child and parent results must both be per-task mappings or both be single vectors.")
    if not isinstance(child, Mapping):
        c, p = _as_vector(child, "child"), _as_vector(parent, "parent")
        _check_pair(c, p, "task")
        return {"task": c}, {"task": p}, {"task": 1.0}
    if set(child) != set(parent):
        raise DarwinError("The child and the parent were evaluated on different tasks.")
    names = list(child)
    w = normalize_weights(weights, names)
    c_map, p_map = {}, {}
    for name in names:
        c, p = _as_vector(child[name], "child"), _as_vector(parent[name], "parent")
        _check_pair(c, p, name)
        c_map[name], p_map[name] = c, p
    return c_map, p_map, w


def compare(
    child: Mapping[str, Sequence[bool]] | Sequence[bool],
    parent: Mapping[str, Sequence[bool]] | Sequence[bool],
    *,
    weights: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedComparison:
    """Scores, difference, bootstrap interval and exact McNemar p for one task or a weighted composite."""
    child_map, parent_map, w = _as_tasks(child, parent, weights)
    low, high = paired_bootstrap(child_map, parent_map, weights=w, resamples=resamples, confidence=confidence, seed=seed)
    child_score = sum(w[n] * child_map[n].mean() for n in child_map)
    parent_score = sum(w[n] * parent_map[n].mean() for n in parent_map)
    child_only = sum(int(((child_map[n] == 1) & (parent_map[n] == 0)).sum()) for n in child_map)
    parent_only = sum(int(((child_map[n] == 0) & (parent_map[n] == 1)).sum()) for n in child_map)
    return PairedComparison(
        n=sum(len(v) for v in child_map.values()),
        child=float(child_score),
        parent=float(parent_score),
        diff=float(child_score - parent_score),
        ci_low=low,
        ci_high=high,
        child_only=child_only,
        parent_only=parent_only,
        p_value=mcnemar_exact(child_only, parent_only),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )


def compare_results(
    child,
    parent,
    *,
    weights: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, PairedComparison]:
    """Child vs parent per task and for the composite ("composite" key), paired by item id.

    `child` and `parent` are `EvalResult`s of the same tasks on the same split; items
    are matched by id, so the order the two runs kept them in does not matter.
    """
    if set(child.tasks) != set(parent.tasks):
        raise DarwinError("The child and the parent were evaluated on different tasks.")
    if "composite" in child.tasks:
        raise DarwinError("A task may not be named 'composite'; that name is kept for the weighted composite.")
    if child.split != parent.split:
        raise DarwinError(f"The child was evaluated on the {child.split} split and the parent on the {parent.split} split.")
    child_vectors, parent_vectors = {}, {}
    for name, c_result in child.tasks.items():
        p_result = parent.tasks[name]
        if c_result.metric != p_result.metric:
            raise DarwinError(f"Task {name!r} was scored with {c_result.metric} for the child and {p_result.metric} for the parent.")
        if sorted(c_result.ids) != sorted(p_result.ids) or len(set(c_result.ids)) != len(c_result.ids):
            raise DarwinError(f"Task {name!r}: the child and the parent were evaluated on different items.")
        p_by_id = dict(zip(p_result.ids, p_result.correct))
        child_vectors[name] = list(c_result.correct)
        parent_vectors[name] = [p_by_id[i] for i in c_result.ids]
    out = {
        name: compare(child_vectors[name], parent_vectors[name], resamples=resamples, seed=seed)
        for name in child_vectors
    }
    out["composite"] = compare(child_vectors, parent_vectors, weights=weights, resamples=resamples, seed=seed)
    return out
