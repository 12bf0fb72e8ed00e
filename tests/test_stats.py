"""Paired statistics of child vs parent: exact McNemar and the paired bootstrap interval."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from darwin_core.errors import DarwinError
from darwin_core.fitness.evaluate import EvalResult, TaskResult
from darwin_core.fitness.scoring import ItemResult
from darwin_core.fitness.stats import compare, compare_results, mcnemar_exact, paired_bootstrap


# --- exact McNemar ---------------------------------------------------------------------------------


def test_mcnemar_hand_computed_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * (1/2)^5
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(4, 4) == 1.0
    assert mcnemar_exact(3, 4) == 1.0  # capped at 1


def test_mcnemar_is_symmetric_and_handles_thousands_of_discordant_items():
    assert mcnemar_exact(12, 30) == mcnemar_exact(30, 12)
    p = mcnemar_exact(1100, 1000)  # 2^2100 overflows a float; exact integers do not
    assert 0 < p < 1 and math.isfinite(p)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (1, 9), (5, 5), (7, 20), (40, 25), (0, 60), (300, 340), (1100, 1000)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    stats = pytest.importorskip("scipy.stats", reason="scipy is only the oracle here")
    expected = stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


# --- paired bootstrap ------------------------------------------------------------------------------


def vectors(n: int, p_child: float, p_parent: float, seed: int) -> tuple[list[bool], list[bool]]:
    rng = random.Random(seed)
    return [rng.random() < p_child for _ in range(n)], [rng.random() < p_parent for _ in range(n)]


def test_bootstrap_is_seeded_and_brackets_the_observed_difference():
    child, parent = vectors(300, 0.7, 0.6, seed=1)
    low, high = paired_bootstrap(child, parent, seed=3)
    assert (low, high) == paired_bootstrap(child, parent, seed=3)
    # With 10k resamples the quantiles sit on the same 1/300 grid step for any seed; with few they move.
    assert paired_bootstrap(child, parent, seed=3, resamples=101) != paired_bootstrap(child, parent, seed=4, resamples=101)
    observed = np.mean(child) - np.mean(parent)
    assert low < observed < high


def test_bootstrap_degenerate_cases():
    assert paired_bootstrap([True] * 20, [True] * 20) == (0.0, 0.0)
    assert paired_bootstrap([True] * 20, [False] * 20) == (1.0, 1.0)


def test_bootstrap_width_matches_the_normal_approximation_for_a_large_task():
    child, parent = vectors(4000, 0.6, 0.55, seed=2)
    d = np.asarray(child, float) - np.asarray(parent, float)
    half = 1.959964 * d.std(ddof=0) / math.sqrt(len(d))
    low, high = paired_bootstrap(child, parent, seed=0)
    assert (high - low) / 2 == pytest.approx(half, rel=0.05)
    assert (low + high) / 2 == pytest.approx(d.mean(), abs=0.003)


def test_composite_with_all_weight_on_one_task_equals_that_task_alone():
    a_child, a_parent = vectors(200, 0.8, 0.6, seed=5)
    b_child, b_parent = vectors(150, 0.3, 0.5, seed=6)
    child, parent = {"a": a_child, "b": b_child}, {"a": a_parent, "b": b_parent}
    assert paired_bootstrap(child, parent, weights={"a": 1.0, "b": 0.0}, seed=9) == paired_bootstrap(a_child, a_parent, seed=9)


def test_composite_comparison_weights_tasks_and_pools_discordant_items():
    a_child, a_parent = [True] * 8 + [False] * 2, [True] * 5 + [False] * 5  # +0.3
    b_child, b_parent = [True] * 2 + [False] * 3, [True] * 4 + [False] * 1  # -0.4
    result = compare({"click": a_child, "musr": b_child}, {"click": a_parent, "musr": b_parent}, weights={"click": 3, "musr": 2})
    assert result.child == pytest.approx(0.6 * 0.8 + 0.4 * 0.4)
    assert result.parent == pytest.approx(0.6 * 0.5 + 0.4 * 0.8)
    assert result.diff == pytest.approx(0.6 * 0.3 - 0.4 * 0.4)
    assert (result.child_only, result.parent_only) == (3, 2)
    assert result.p_value == mcnemar_exact(3, 2)
    assert result.ci_low <= result.diff <= result.ci_high
    assert result.n == 15


def test_mismatched_vectors_are_refused():
    with pytest.raises(DarwinError, match="same items"):
        compare([True, False], [True])
    with pytest.raises(DarwinError, match="different tasks"):
        compare({"a": [True]}, {"b": [True]})


# --- EvalResult pairing ----------------------------------------------------------------------------


def eval_result(correct: dict[str, list[tuple[str, bool]]]) -> EvalResult:
    tasks = {
        name: TaskResult(name=name, kind="generate", metric="exact_match",
                         items=tuple(ItemResult(id=i, correct=c, chosen="") for i, c in rows))
        for name, rows in correct.items()
    }
    return EvalResult(split="heldout", tasks=tasks)


def test_compare_results_pairs_items_by_id_whatever_their_order():
    child = eval_result({"t": [("a", True), ("b", True), ("c", False), ("d", True)]})
    parent = eval_result({"t": [("d", False), ("c", False), ("b", True), ("a", False)]})
    out = compare_results(child, parent, resamples=2000)
    assert set(out) == {"t", "composite"}
    assert (out["t"].child_only, out["t"].parent_only) == (2, 0)
    assert out["t"].diff == pytest.approx(0.5)
    assert out["composite"].diff == pytest.approx(0.5)


def test_compare_results_refuses_different_items():
    child = eval_result({"t": [("a", True), ("b", True)]})
    parent = eval_result({"t": [("a", True), ("z", True)]})
    with pytest.raises(DarwinError, match="different items"):
        compare_results(child, parent)
