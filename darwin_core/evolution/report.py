"""The final judgement of a run: which recipe becomes the child, and how it fares on the held-out split.

Held-out gold labels are read only here, after the search has ended: the child (loaded back from disk, as
published), the parents and the reference merges are scored on items the search never saw.

The evidence a card and the Health tab show (`evidence_rows`, `headline`) is read from report.json alone: the
manual-vs-evolution table (father, mother, 50/50 blend, the best uniform ratio, the MRI prescription, the child),
each with the child's paired interval and McNemar p against it. The best uniform ratio is chosen on the search
split (`uniform_grid`, the same grid as scripts/evolution_table.py) and only then scored on held-out items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from darwin_core.evolution.problem import ModelProblem
from darwin_core.evolution.records import BASELINE_GENERATION
from darwin_core.evolution.search import task_scores
from darwin_core.fitness.evaluate import EvalResult, normalize_weights

HELDOUT_RESULTS = "heldout-results.json"
SIGNIFICANCE = 0.05
UNIFORM_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # share of the mother
BEST_UNIFORM = "best-uniform"
# Grid points whose recipe is already measured under another name: ratio 0 is the father, 1 the mother.
MEASURED_UNIFORM = {0.0: "father", 0.5: "uniform-50", 1.0: "mother"}
EVIDENCE_ORDER = ("father", "mother", "uniform-50", BEST_UNIFORM, "mri", "child")


def heldout_report(problem: ModelProblem, best: dict[str, Any], child_dir: Path, *, log: Callable[[str], None],
                   grid: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parents, baselines, the best uniform ratio of `grid` (`uniform_grid`) and the child (loaded back from
    disk, as published) on the held-out split.

    Returns (report, per-item results). Comparisons: paired bootstrap 95% interval of the accuracy difference
    and exact McNemar p of the child against each parent and reference, per task and for the weighted composite.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from darwin_core.fitness.evaluate import evaluate
    from darwin_core.fitness.stats import compare_results

    config = problem.config
    results: dict[str, EvalResult] = {}
    for name in problem.baseline_names():
        log(f"held-out: {name}")
        results[name] = problem.measure(name, problem.tasks, split="heldout")
    if grid is not None:
        results[BEST_UNIFORM] = _best_uniform_heldout(problem, grid["best"], results, log)
    log("held-out: child (from disk)")
    model = AutoModelForCausalLM.from_pretrained(child_dir, dtype=problem.child.model.dtype).to(problem.child.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(child_dir)
    results["child"] = evaluate(model, tokenizer, problem.tasks, split="heldout", batch_size=config.batch_size, seed=config.seed)
    del model

    weights = normalize_weights(problem.weights, [t.name for t in problem.tasks])
    comparisons = {  # the child against each parent, and against the baselines it should also beat
        other: {k: v.to_dict() for k, v in compare_results(results["child"], results[other], weights=weights, seed=config.seed).items()}
        for other in results if other != "child"
    }
    beats = {
        parent: comparisons[parent]["composite"]["diff"] > 0 and comparisons[parent]["composite"]["p_value"] < SIGNIFICANCE
        for parent in ("father", "mother")
    }
    report = {
        "split": "heldout",
        "weights": weights,
        "items": {t.name: len(t.heldout) for t in problem.tasks},
        # the recipes a run breeds or names; the best uniform ratio is a measured reference kept in uniform_grid
        "models": {name: {"scores": task_scores(r), "composite": r.composite(weights)} for name, r in results.items()
                   if name != BEST_UNIFORM},
        "comparisons": comparisons,
        "significance": SIGNIFICANCE,
        "beats_father": beats["father"],
        "beats_mother": beats["mother"],
        "beats_both_parents": beats["father"] and beats["mother"],
    }
    if grid is not None:
        best_uniform = results[BEST_UNIFORM]
        report["uniform_grid"] = {**grid, "heldout": {"scores": task_scores(best_uniform),
                                                     "composite": best_uniform.composite(weights)}}
    report["evidence"] = evidence_rows(report)
    report["headline"] = headline(report)
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



# --------------------------------------------------------------------------------------------------------------
# The best uniform ratio: what a careful human would try before any search
# --------------------------------------------------------------------------------------------------------------


def uniform_recipe(problem: ModelProblem, ratio: float):
    """A linear blend with one share of the mother for every tensor (the 50/50 reference at 0.5)."""
    from darwin_core.merge.methods.registry import Method
    from darwin_core.recipe import Recipe, ratio_table

    return problem.speaking(Recipe(father=problem.father_ref, mother=problem.mother_ref, method=Method.LINEAR.value,
                                   ratios=ratio_table(ratio), frozen_layers=problem.config.frozen_layers,
                                   dtype=problem.dtype, seed=problem.config.seed))


def uniform_grid(problem: ModelProblem, baselines_search: Mapping[str, float], *, log: Callable[[str], None],
                 ratios: Sequence[float] = UNIFORM_GRID) -> dict[str, Any]:
    """Every uniform linear ratio's fitness on the whole search split and the best of them (ties: the ratio
    nearer an even blend), chosen without looking at held-out data. Ratios whose recipe the run already measured
    (the parents, the 50/50 blend) take that measurement instead of a new one."""
    search: dict[str, float] = {}
    for ratio in ratios:
        known = MEASURED_UNIFORM.get(ratio)
        if known is not None and known in baselines_search:
            search[f"{ratio:.1f}"] = float(baselines_search[known])
            continue
        problem.child.load_recipe(uniform_recipe(problem, ratio))
        search[f"{ratio:.1f}"] = problem.measure_loaded(problem.tasks, split="search").composite(problem.weights)
        log(f"uniform ratio {ratio:.1f}: search fitness {search[f'{ratio:.1f}']:.4f}")
    best = max(ratios, key=lambda r: (search[f"{r:.1f}"], -abs(r - 0.5)))
    return {"split": "search", "search": search, "best": best}


def _best_uniform_heldout(problem: ModelProblem, ratio: float, measured: Mapping[str, EvalResult],
                          log: Callable[[str], None]) -> EvalResult:
    known = MEASURED_UNIFORM.get(ratio)
    if known in measured:
        return measured[known]
    log(f"held-out: best uniform ratio {ratio:.1f}")
    problem.child.load_recipe(uniform_recipe(problem, ratio))
    return problem.measure_loaded(problem.tasks, split="heldout")


# --------------------------------------------------------------------------------------------------------------
# The evidence, read from report.json alone (the card and the Health tab)
# --------------------------------------------------------------------------------------------------------------


def row_label(name: str, heldout: Mapping[str, Any]) -> str:
    """How a row of the manual-vs-evolution table is called on a page."""
    if name == BEST_UNIFORM:
        best = (heldout.get("uniform_grid") or {}).get("best")
        return "best uniform ratio" + (f" ({float(best):.1f} mother)" if best is not None else "")
    return {"uniform-50": "50/50 blend", "mri": "MRI prescription", "child": "child"}.get(name, name)


def evidence_rows(heldout: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manual-vs-evolution table from a report's `heldout` section: per row its held-out composite and
    task scores, and the child's composite difference against it (95% interval, McNemar p); the child's own
    row has none. Rows the run did not measure (no MRI, no grid) are left out."""
    models, comparisons = dict(heldout.get("models") or {}), heldout.get("comparisons") or {}
    if (heldout.get("uniform_grid") or {}).get("heldout"):
        models[BEST_UNIFORM] = heldout["uniform_grid"]["heldout"]
    rows = []
    for name in EVIDENCE_ORDER:
        if name not in models:
            continue
        row: dict[str, Any] = {"name": name, "label": row_label(name, heldout),
                               "composite": models[name]["composite"], "scores": dict(models[name]["scores"])}
        composite = (comparisons.get(name) or {}).get("composite")
        if composite is not None:
            row["child_minus_row"] = {k: composite[k] for k in ("diff", "ci_low", "ci_high", "p_value")}
        rows.append(row)
    return rows


def _points(comparison: Mapping[str, Any]) -> str:
    return (f"Δ {100 * comparison['diff']:+.1f} points [{100 * comparison['ci_low']:+.1f}, "
            f"{100 * comparison['ci_high']:+.1f}], p = {comparison['p_value']:.2g}")


def headline(heldout: Mapping[str, Any]) -> str:
    """The card's first-paragraph sentence: "beats both parents on held-out data (p …)", or which parent the
    child does not beat and on what (the composite, and the tasks where it is significantly worse)."""
    comparisons = heldout.get("comparisons") or {}
    alpha = float(heldout.get("significance", SIGNIFICANCE))
    if not all(parent in comparisons for parent in ("father", "mother")):
        return "No held-out comparison with the parents was recorded for this child."
    if heldout.get("beats_both_parents"):
        parts = [f"the {parent} ({_points(comparisons[parent]['composite'])})" for parent in ("father", "mother")]
        sentence = "The child beats both parents on held-out data: " + " and ".join(parts) + " on the composite."
    else:
        misses = []
        for parent in ("father", "mother"):
            if heldout.get(f"beats_{parent}"):
                continue
            worse = [task for task, c in comparisons[parent].items()
                     if task != "composite" and c["diff"] < 0 and c["p_value"] < alpha]
            where = "the held-out composite" + (f" (and is worse on {', '.join(worse)})" if worse else "")
            misses.append(f"does not beat the {parent} on {where}: {_points(comparisons[parent]['composite'])}")
        sentence = "The child " + "; it ".join(misses) + "."
    references = [f"the {row_label(name, heldout)} ({_points(comparisons[name]['composite'])})"
                  for name in ("uniform-50", BEST_UNIFORM, "mri") if name in comparisons]
    if references:
        sentence += " Against " + ", ".join(references) + "."
    return sentence
