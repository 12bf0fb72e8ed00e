"""Skill retention: does the child keep, task by task, what the better of its two parents could do?

Layer-level checks (interference, function loss) see a merge that broke a layer; they do not see a child that is
healthy in every layer and simply forgot the father's skill. Retention compares the child with each task's
better parent (the one with the higher held-out score) on the same held-out items: the paired bootstrap interval
of the difference and the exact McNemar p (darwin_core.fitness.stats). A task where the child is worse at
p < SIGNIFICANCE is a *skill lost*, a finding that names its task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from darwin_core.evolution.report import SIGNIFICANCE
from darwin_core.fitness.evaluate import EvalResult
from darwin_core.fitness.stats import compare_results

PARENTS = ("father", "mother")


def retention(child: EvalResult, father: EvalResult, mother: EvalResult, *, seed: int = 0,
              significance: float = SIGNIFICANCE) -> dict[str, Any]:
    """Per task: both parents' and the child's held-out scores, the better parent, the child minus that parent
    (interval, p) and whether the skill is lost; `lost` lists the lost tasks in task order."""
    parents = {"father": father, "mother": mother}
    versus = {name: compare_results(child, result, seed=seed) for name, result in parents.items()}
    tasks: dict[str, dict[str, Any]] = {}
    for task in child.tasks:
        scores = {name: float(result.tasks[task].score) for name, result in parents.items()}
        better = max(PARENTS, key=lambda name: scores[name])  # a tie keeps the father: either is the better one
        comparison = versus[better][task]
        tasks[task] = {
            "child": comparison.child, **scores, "better_parent": better, "n": comparison.n,
            "vs_better": {k: getattr(comparison, k) for k in ("diff", "ci_low", "ci_high", "p_value")},
            "lost": comparison.diff < 0 and comparison.p_value < significance,
        }
    return {"split": child.split, "significance": significance, "tasks": tasks,
            "lost": [task for task, row in tasks.items() if row["lost"]]}


def retention_from_results(per_item: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any] | None:
    """Retention from a run's held-out per-item results (heldout-results.json: model name → EvalResult dict),
    the very items the report measured; None when the child or a parent is missing from them."""
    if not all(name in per_item for name in ("child", *PARENTS)):
        return None
    child, father, mother = (EvalResult.from_dict(per_item[name]) for name in ("child", *PARENTS))
    return retention(child, father, mother, seed=seed)


def skill_findings(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One warning per lost skill, its message starting "skill lost: <task>"."""
    findings = []
    for task in report.get("lost", []):
        row = report["tasks"][task]
        c = row["vs_better"]
        findings.append({
            "kind": "skill_lost", "severity": "warning", "layers": [], "task": task,
            "message": (f"skill lost: {task} — the child scores {100 * row['child']:.1f}% against the "
                        f"{row['better_parent']}'s {100 * row[row['better_parent']]:.1f}% on {row['n']} held-out items "
                        f"(Δ {100 * c['diff']:+.1f} points [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}], "
                        f"McNemar p = {c['p_value']:.2g})."),
        })
    return findings
