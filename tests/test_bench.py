"""bench/candidate_loop.py end to end at toy size: Darwin's loop, the disk loop and mergekit-evolve's own steps
(mergekit run_merge + lm-eval simple_evaluate) score every candidate the same, for choice and generative tasks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mergekit", reason="mergekit is a test extra (requirements-test.txt)")
pytest.importorskip("lm_eval", reason="lm-eval is a test extra (requirements-test.txt)")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "candidate_loop.py"


def run_bench(argv: list[str]) -> dict:
    spec = importlib.util.spec_from_file_location("candidate_loop_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = Path(argv[argv.index("--workdir") + 1]) / "report.json"
        assert module.main([*argv, "--json", str(out)]) == 0
        return json.loads(out.read_text())
    finally:
        sys.modules.pop(spec.name, None)


def check(report: dict, candidates: int) -> None:
    assert report["candidates"] == report["disk_candidates"] == report["mergekit_evolve_candidates"] == candidates
    assert report["fitness_match"]  # the script exits if the disk loop ever disagrees
    assert report["mergekit_evolve_agreeing"] == candidates  # lm-eval's score is Darwin's fitness
    for loop in ("in_memory", "disk", "mergekit_evolve"):
        assert report[loop]["total_s"] > 0


def test_choice_task_on_a_fixture_pair(tmp_path, monkeypatch):
    from darwin_core.testing.fixtures import write_pair

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    father, mother = write_pair("qwen3", tmp_path / "parents")
    report = run_bench([
        "--father", str(father), "--mother", str(mother), "--mergekit-evolve", "--candidates", "2",
        "--items", "4", "--prompt-chars", "30", "--workdir", str(tmp_path / "work"),
    ])
    check(report, 2)
    assert report["tasks"] == {"bench": 4}


def test_generative_demo_tasks_on_the_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    report = run_bench(["--mergekit-evolve", "--candidates", "1", "--items", "6", "--workdir", str(tmp_path / "work")])
    check(report, 1)
    assert report["source"].startswith("demo zoo") and set(report["tasks"]) == {"reverse", "uppercase", "translate", "sort"}
