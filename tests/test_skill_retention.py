"""Health that sees skills: the child against the better parent, task by task, on held-out items."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from darwin_core.fitness.evaluate import EvalResult, TaskResult
from darwin_core.fitness.scoring import ItemResult
from darwin_core.health import checkup as health
from darwin_core.health.retention import retention, retention_from_results

ZOO = Path(__file__).resolve().parent.parent / "assets" / "zoo"
N = 40


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest's `one_thread`)."""


def result(**correct_per_task: list[bool]) -> EvalResult:
    """Held-out results with the given per-item correctness (item ids shared across models, so pairs match)."""
    return EvalResult(split="heldout", tasks={
        task: TaskResult(name=task, kind="generate", metric="exact_match",
                         items=tuple(ItemResult(id=f"{task}-{k}", correct=c, chosen="") for k, c in enumerate(vector)))
        for task, vector in correct_per_task.items()
    })


def pattern(right: int) -> list[bool]:
    return [k < right for k in range(N)]


LAYERS = {"importance": [0.1, 0.2, 0.1], "perplexity": 10.0, "repetition": 0.0, "nonfinite_outputs": False}


def test_a_child_that_is_the_mother_except_for_one_lost_skill_gets_a_skill_lost_finding_and_no_healthy_verdict():
    father = result(reverse=[k % 4 != 0 for k in range(N)], sort=pattern(10))
    mother = result(reverse=pattern(30), sort=pattern(37))
    child = result(reverse=pattern(30), sort=pattern(8))  # the mother on reverse; sort forgotten
    skills = retention(child, father, mother)
    assert skills["lost"] == ["sort"]
    assert skills["tasks"]["sort"]["better_parent"] == "mother" and skills["tasks"]["sort"]["vs_better"]["p_value"] < 0.05
    assert not skills["tasks"]["reverse"]["lost"]  # 30 of 40 like the father, on other items: no skill lost
    report = health.assess(LAYERS, LAYERS, LAYERS, skills=skills)
    lost = [f for f in report["findings"] if f["kind"] == "skill_lost"]
    assert [f["message"].split(" — ")[0] for f in lost] == ["skill lost: sort"]
    assert report["verdict"] != "healthy" and "skill lost: sort" in report["summary"]


def test_a_child_that_keeps_every_skill_stays_healthy_and_says_skills_were_checked():
    parent = result(reverse=pattern(30), sort=pattern(30))
    report = health.assess(LAYERS, LAYERS, LAYERS, skills=retention(parent, parent, parent))
    assert report["verdict"] == "healthy" and "every skill kept (2 tasks" in report["summary"]
    assert "skills not checked" in health.assess(LAYERS, LAYERS, LAYERS)["summary"]


def test_retention_reads_a_runs_heldout_results_file():
    per_item = {name: r.to_dict() for name, r in (("child", result(t=pattern(5))), ("father", result(t=pattern(30))),
                                                  ("mother", result(t=pattern(20))))}
    assert retention_from_results(per_item)["lost"] == ["t"]
    assert retention_from_results({"child": per_item["child"]}) is None


@pytest.mark.skipif(not (ZOO / "mother" / "config.json").is_file(), reason="the demo zoo is not built")
def test_the_mother_as_child_of_the_demo_zoo_has_lost_the_fathers_skill_though_every_layer_looks_healthy(tmp_path):
    from darwin_core.fitness.demo_tasks import demo_task

    child = Path(shutil.copytree(ZOO / "mother", tmp_path / "child"))
    tasks = [demo_task("reverse", 0, limit=120), demo_task("translate", 0, limit=120)]
    probes = {t.name: list(t.probe_prompts[:2]) for t in tasks}
    report = health.check_health(child, ZOO / "father", ZOO / "mother", probes=probes, tasks=tasks, generation_tokens=8)
    kinds = {f["kind"] for f in report["findings"]}
    assert kinds == {"skill_lost"}, report["summary"]  # layer by layer the child is its mother: nothing to see
    assert report["skills"]["lost"] == ["reverse"]
    assert report["findings"][0]["message"].startswith("skill lost: reverse")
    assert report["verdict"] == "warning"
    assert "heldout" not in report["models"]["child"]  # the per-item results are not kept twice
