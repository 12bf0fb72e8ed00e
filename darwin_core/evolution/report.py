"""The final judgement of a run: which recipe becomes the child, and how it fares on the held-out split.

Held-out gold labels are read only here, after the search has ended: the child (loaded back from disk, as
published), the parents and the reference merges are scored on items the search never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from darwin_core.evolution.problem import ModelProblem
from darwin_core.evolution.records import BASELINE_GENERATION
from darwin_core.evolution.search import task_scores
from darwin_core.fitness.evaluate import EvalResult, normalize_weights

HELDOUT_RESULTS = "heldout-results.json"
SIGNIFICANCE = 0.05


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
        "models": {name: {"scores": task_scores(r), "composite": r.composite(weights)} for name, r in results.items()},
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

