"""The evolution loop: CMA-ES checkpoints that resume exactly, proxy/full phases, and real runs on tiny models.

The pure loop tests use a synthetic fitness (a deterministic function of the genome, scored item by item) so
they isolate what the loop itself owns: ask/tell, checkpoints, resume, early stop. The run tests breed tiny
fixture models for real (resident child, merge kernels, evaluator) with tiny budgets.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from darwin_core.errors import DarwinError
from darwin_core.evolution.pipeline import (
    Cancelled,
    EvolutionConfig,
    SearchSettings,
    TaskSpec,
    proxy_split,
    run_search,
)
from darwin_core.fitness.evaluate import EvalResult, TaskResult
from darwin_core.fitness.scoring import ItemResult
from darwin_core.fitness.tasks import Item, Task
from darwin_core.io.runfolder import CHECKPOINT, EVALUATIONS, RunFolder

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- synthetic problem


def _uniform(*parts: object) -> float:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class SyntheticProblem:
    """Two tasks whose per-item success probability peaks at a different genome each; the optimum is between."""

    DIM = 4
    TARGETS = {"alpha": np.array([0.8, 0.2, 0.6, 0.4]), "beta": np.array([0.6, 0.4, 0.8, 0.2])}

    def __init__(self, n_search: int = 40):
        self.tasks = [
            Task(
                name=name, kind="generate",
                search=tuple(Item(id=f"{name}-s{k}", prompt="", answer="") for k in range(n_search)),
                heldout=tuple(Item(id=f"{name}-h{k}", prompt="", answer="") for k in range(10)),
            )
            for name in self.TARGETS
        ]
        self.weights = {"alpha": 1.0, "beta": 1.0}
        self.lower, self.upper = [0.0] * self.DIM, [1.0] * self.DIM
        self.x0 = [0.5] * self.DIM
        self.calls = 0

    def baseline_names(self) -> list[str]:
        return ["father", "mother", "uniform-50"]

    def describe(self, vector: Sequence[float]) -> dict:
        return {"recipe_hash": hashlib.sha256(np.asarray(vector, dtype=np.float64).tobytes()).hexdigest()[:12]}

    def measure(self, candidate, tasks: Sequence[Task]) -> EvalResult:
        self.calls += 1
        x = {"father": np.zeros(self.DIM), "mother": np.ones(self.DIM), "uniform-50": np.full(self.DIM, 0.5)}.get(
            candidate if isinstance(candidate, str) else "", None
        )
        if x is None:
            x = np.asarray(candidate, dtype=float)
        out = {}
        for task in tasks:
            p = 1.0 - float(np.sum((x - self.TARGETS[task.name]) ** 2)) / 2
            items = tuple(ItemResult(id=i.id, correct=_uniform(i.id) < p, chosen="") for i in task.search)
            out[task.name] = TaskResult(name=task.name, kind="generate", metric="exact_match", items=items)
        return EvalResult(split="search", tasks=out)


def _settings(**overrides) -> SearchSettings:
    values = dict(population=6, sigma0=0.3, generations=4, seed=3, proxy_items=10, topk_full=2, patience=0, digest="synthetic")
    values.update(overrides)
    return SearchSettings(**values)


def _folder(tmp_path: Path, name: str) -> RunFolder:
    return RunFolder.create(tmp_path, "synthetic: true\n", run_id=name)


# --------------------------------------------------------------------------------------------- pure loop tests


def test_cma_state_pickled_with_its_own_rng_proposes_the_same_next_generation():
    from darwin_core.evolution.search import _new_es

    problem = SyntheticProblem()
    es = _new_es(problem, _settings())
    X = es.ask()
    es.tell(X, [float(np.sum(x)) for x in X])
    clone = pickle.loads(pickle.dumps(es))
    np.random.seed(12345)  # noise in numpy's global RNG must not matter
    a = es.ask()
    np.random.seed(999)
    b = clone.ask()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert all(np.all(x >= 0) and np.all(x <= 1) for x in a), "candidates stay inside the genome's bounds"


def test_each_generation_scores_every_candidate_on_the_proxy_and_the_top_k_on_the_full_search_set(tmp_path):
    problem = SyntheticProblem()
    folder = _folder(tmp_path, "phases")
    outcome = run_search(folder, problem, _settings())
    evals = folder.evaluations()
    baselines = [e for e in evals if e["kind"] == "baseline"]
    assert [e["name"] for e in baselines] == ["father", "mother", "uniform-50"]
    assert evals[:3] == baselines, "the reference lines are measured before any candidate"
    for g in range(1, 5):
        proxy = [e for e in evals if e.get("generation") == g and e["phase"] == "proxy"]
        full = [e for e in evals if e.get("generation") == g and e["phase"] == "full"]
        assert len(proxy) == 6 and len(full) == 2
        top2 = sorted(proxy, key=lambda e: (-e["fitness"], e["index"]))[:2]
        assert [e["index"] for e in full] == [e["index"] for e in top2], "Phase 2 takes the best proxies, in rank order"
        for e in full:
            assert e["proxy_fitness"] == next(p["fitness"] for p in proxy if p["index"] == e["index"])
    best_full = max((e for e in evals if e["kind"] == "candidate" and e["phase"] == "full"), key=lambda e: e["fitness"])
    assert outcome.state == "finished" and outcome.generation == 4
    assert outcome.best["fitness"] == best_full["fitness"]
    assert outcome.best["genome"] == next(e["genome"] for e in evals if e["phase"] == "proxy" and e["name"] == best_full["name"])
    # the synthetic optimum is between the two targets: the search must beat both "parents"
    by_name = {e["name"]: e["fitness"] for e in baselines}
    assert outcome.best["fitness"] > max(by_name["father"], by_name["mother"])


def test_proxy_subset_is_seeded_fixed_and_disjoint_from_the_rest():
    tasks = SyntheticProblem().tasks
    proxy_a, rest_a = proxy_split(tasks, 10, seed=3)
    proxy_b, rest_b = proxy_split(tasks, 10, seed=3)
    proxy_c, _ = proxy_split(tasks, 10, seed=4)
    assert [t.search for t in proxy_a] == [t.search for t in proxy_b]
    assert [t.search for t in proxy_a] != [t.search for t in proxy_c]
    for p, r, t in zip(proxy_a, rest_a, tasks):
        assert len(p.search) == 10 and len(r.search) == 30
        assert {i.id for i in p.search} | {i.id for i in r.search} == {i.id for i in t.search}
        assert not {i.id for i in p.search} & {i.id for i in r.search}
        assert p.heldout == t.heldout  # held-out items are untouched (and never scored by the loop)
    proxy_all, rest_none = proxy_split(tasks, 100, seed=3)
    assert rest_none == [] and [t.search for t in proxy_all] == [t.search for t in tasks]


def test_a_run_stopped_mid_generation_and_resumed_ends_exactly_like_an_uninterrupted_one(tmp_path):
    straight = _folder(tmp_path, "straight")
    reference = run_search(straight, SyntheticProblem(), _settings())

    interrupted = _folder(tmp_path, "interrupted")
    problem = SyntheticProblem()
    stop_after = 3 + 8 + 4  # baselines, generation 1 (6 proxy + 2 full), then half of generation 2's proxies
    with pytest.raises(Cancelled):
        run_search(interrupted, problem, _settings(), should_stop=lambda: problem.calls >= stop_after)
    partial = interrupted.evaluations()
    assert [e["generation"] for e in partial].count(2) == 4, "what was measured in the stopped generation is kept"
    assert interrupted.read_checkpoint()["generation"] == 1

    resumed = run_search(interrupted, SyntheticProblem(), _settings())
    assert interrupted.file(EVALUATIONS).read_bytes() == straight.file(EVALUATIONS).read_bytes()
    assert resumed.best == reference.best
    assert [e["event"] for e in interrupted.events()].count("resumed") == 1


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    folder = _folder(tmp_path, "atomic")
    run_search(folder, SyntheticProblem(), _settings(generations=2))
    before = folder.file(CHECKPOINT).read_bytes()
    # a temp file left by a writer killed mid-write is not the checkpoint and does not disturb reading it
    (folder.path / f".{CHECKPOINT}.dead.tmp").write_bytes(before[: len(before) // 2])
    assert folder.read_checkpoint()["generation"] == 2
    assert folder.file(CHECKPOINT).read_bytes() == before


def test_resume_refuses_a_checkpoint_written_by_another_config(tmp_path):
    folder = _folder(tmp_path, "digest")
    run_search(folder, SyntheticProblem(), _settings(generations=1))
    with pytest.raises(DarwinError, match="different config"):
        run_search(folder, SyntheticProblem(), _settings(generations=1, digest="other"))


def test_patience_stops_the_search_when_the_best_stops_improving(tmp_path):
    folder = _folder(tmp_path, "patience")
    outcome = run_search(folder, SyntheticProblem(), _settings(generations=40, patience=2, sigma0=0.05))
    assert outcome.stopped_early and outcome.generation < 40
    events = [e["event"] for e in folder.events()]
    assert "early_stop" in events
    bests = [e["best_so_far"] for e in folder.events() if e["event"] == "generation"]
    assert bests[-1] == bests[-2] == bests[-3], "the last `patience` generations brought no improvement"


def test_a_proxy_that_covers_the_search_set_skips_phase_two(tmp_path):
    folder = _folder(tmp_path, "noproxy")
    run_search(folder, SyntheticProblem(n_search=8), _settings(proxy_items=50, generations=2))
    candidates = [e for e in folder.evaluations() if e["kind"] == "candidate"]
    assert len(candidates) == 12 and all(e["phase"] == "full" for e in candidates)


def test_every_line_of_evaluations_reads_back_as_the_record_the_loop_wrote_and_names_parse_to_generation_and_index(tmp_path):
    from darwin_core.evolution.pipeline import EvaluationRecord, candidate_name, parse_candidate_name

    folder = _folder(tmp_path, "records")
    run_search(folder, SyntheticProblem(), _settings(generations=2))
    for entry in folder.evaluations():
        assert EvaluationRecord.from_json(entry).to_json() == entry
        parsed = parse_candidate_name(entry["name"])
        if entry["kind"] == "baseline":
            assert parsed is None
        else:
            assert parsed == (entry["generation"], entry["index"]) and candidate_name(*parsed) == entry["name"]
    for not_a_candidate in ("father", "uniform-50", "child", "g01c2", "g1c", "g1c2\n", "xg1c2"):
        assert parse_candidate_name(not_a_candidate) is None


# --------------------------------------------------------------------------------------------- config


def test_config_round_trips_through_yaml_and_rejects_bad_settings():
    config = EvolutionConfig(father="a", mother="b", tasks=("reverse", {"file": "x.jsonl", "weight": 0.4}), frozen_layers=(1, 2))
    again = EvolutionConfig.from_yaml(config.to_yaml())
    assert again == config and again.digest() == config.digest()
    assert again.tasks[0] == TaskSpec(source="demo", ref="reverse") and again.tasks[1].weight == 0.4
    assert EvolutionConfig.from_yaml("father: a\nmother: b\ntasks: {reverse: 0.6, sort: 0.4}\n").tasks[1].weight == 0.4
    for bad, message in (
        ("father: a\nmother: b\npopulation: 1\n", "population"),
        ("father: a\nmother: b\ntopk_full: 99\n", "topk_full"),
        ("father: a\nmother: b\nsigma0: 3\n", "sigma0"),
        ("father: a\nmother: b\ncolour: red\n", "Unknown evolution setting"),
        ("father: a\n", "father and a mother"),
        ("father: a\nmother: b\ntasks: [nonsense]\n", "not a demo skill"),
        ("father: [a\n", "not valid YAML"),
    ):
        with pytest.raises(DarwinError, match=message):
            EvolutionConfig.from_yaml(bad)


# --------------------------------------------------------------------------------------------- real runs


def write_choice_task(path: Path, n: int = 40, seed: int = 0) -> Path:
    """A multiple-choice task (log-likelihood scoring) over the fixture tokenizer's alphabet."""
    import random

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for k in range(n):
            w = "".join(rng.choice("abcdef") for _ in range(4))
            handle.write(json.dumps({"id": f"q{k}", "prompt": f"{w} =", "choices": [w, w[::-1], "".join(sorted(w))], "answer": k % 3}) + "\n")
    return path


def tiny_config(father: Path, mother: Path, task_file: Path, **overrides) -> EvolutionConfig:
    values = dict(
        father=str(father), mother=str(mother), tasks=({"file": str(task_file), "name": "mc"},),
        genome="per-block-role", population=6, generations=3, proxy_items=6, topk_full=1, seed=5, device="cpu",
    )
    values.update(overrides)
    return EvolutionConfig(**values)


@pytest.mark.parametrize("arch,method", [("llama", "dare_ties"), ("qwen3_moe", "linear"), ("gemma4_text", "ties")])
def test_the_in_memory_child_is_bit_identical_to_the_child_merged_to_disk(fixture_pair, tmp_path, arch, method):
    import torch
    from transformers import AutoModelForCausalLM

    from darwin_core.evolution.child import ResidentChild
    from darwin_core.merge.disk import merge_to_disk
    from darwin_core.recipe import Recipe, density_table, ratio_table

    father, mother = fixture_pair(arch, related=True)
    child = ResidentChild(father, mother, device="cpu")
    recipe = Recipe(father=father, mother=mother, method=method, ratios=ratio_table(0.3, roles={"ffn": 0.7, "experts": 0.6}),
                    densities=density_table((0.9, 0.7)))
    child.load_recipe(recipe)
    on_disk = AutoModelForCausalLM.from_pretrained(merge_to_disk(recipe, tmp_path / "child")).state_dict()
    in_memory = child.model.state_dict()
    assert set(in_memory) == set(on_disk)
    assert [k for k in on_disk if not torch.equal(in_memory[k], on_disk[k])] == []
    # and the father's own weights come back exactly (the reference line of every curve)
    child.load_parent("father")
    original = AutoModelForCausalLM.from_pretrained(father).state_dict()
    assert all(torch.equal(child.model.state_dict()[k], original[k]) for k in original)


def _count_generation(folder: RunFolder, generation: int) -> int:
    return sum(1 for e in folder.evaluations() if e.get("generation") == generation)


def test_a_run_killed_mid_generation_and_resumed_ends_exactly_like_an_uninterrupted_one(fixture_pair, tmp_path):
    from darwin_core.runs import queue as jobs

    father, mother = fixture_pair("llama")
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl"))

    straight = jobs.prepare_foreground(config, tmp_path / "runs", run_id="straight")
    assert jobs.execute(straight.path) == "finished"

    killed = jobs.prepare_foreground(config, tmp_path / "runs", run_id="killed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "darwin_core", "runs", "run", str(killed.path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while _count_generation(killed, 2) < 3:  # half of generation 2's six candidates measured
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not reach generation 2 in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert 3 <= _count_generation(killed, 2) < 6 + 1, "killed in the middle of generation 2"
    assert killed.read_checkpoint()["generation"] == 1
    assert jobs.read_run("killed", tmp_path / "runs")["state"] == "interrupted"

    jobs.resume("killed", tmp_path / "runs", start_worker=False)
    assert jobs.execute(killed.path) == "finished"
    assert killed.file(EVALUATIONS).read_bytes() == straight.file(EVALUATIONS).read_bytes()
    assert killed.file("best-recipe.yaml").read_bytes() == straight.file("best-recipe.yaml").read_bytes()
    a, b = (json.loads(f.file("report.json").read_text()) for f in (straight, killed))
    assert a["best"] == b["best"] and a["heldout"]["models"] == b["heldout"]["models"]


def test_a_finished_run_folder_holds_the_recipe_the_child_and_a_heldout_report(fixture_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    from darwin_core.runs import queue as jobs
    from darwin_core.recipe import Recipe

    father, mother = fixture_pair("llama")
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl"), genome="darwin-v6", generations=2, population=4)
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="done")
    assert jobs.execute(folder.path) == "finished"
    status = folder.read_status()
    assert status["state"] == "finished" and status["generation"] == 2
    recipe = Recipe.load(folder.file("best-recipe.yaml"))
    report = json.loads(folder.file("report.json").read_text())
    assert recipe.recipe_hash == report["best"]["recipe_hash"] and recipe.method == "dare_ties"
    assert AutoModelForCausalLM.from_pretrained(folder.file("child")) is not None
    heldout = report["heldout"]
    assert set(heldout["models"]) == {"father", "mother", "uniform-50", "child"}
    for parent in ("father", "mother"):
        for key in ("mc", "composite"):
            c = heldout["comparisons"][parent][key]
            assert c["ci_low"] <= c["diff"] <= c["ci_high"] and 0 <= c["p_value"] <= 1 and c["n"] == 20
    assert heldout["beats_both_parents"] == (heldout["beats_father"] and heldout["beats_mother"])
    # the held-out items were never scored during the search
    searched = {e["name"] for e in folder.evaluations()}
    assert "child" not in searched and all(e.get("phase") in ("proxy", "full") for e in folder.evaluations())


@pytest.mark.slow
def test_on_the_demo_family_the_bred_child_beats_both_parents_on_the_heldout_composite(tmp_path):
    """The default budget on the demo zoo, CPU: hybrid vigour with p < 0.05 against each parent."""
    from darwin_core.runs import queue as jobs

    zoo = REPO / "assets" / "zoo"
    config = EvolutionConfig(father=str(zoo / "father"), mother=str(zoo / "mother"), device="cpu")
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="demo")
    assert jobs.execute(folder.path, log=print) == "finished", folder.read_status().get("error")
    heldout = json.loads(folder.file("report.json").read_text())["heldout"]
    for parent in ("father", "mother"):
        composite = heldout["comparisons"][parent]["composite"]
        assert composite["diff"] > 0 and composite["p_value"] < 0.05, (parent, composite)


def test_the_child_is_a_merge_baseline_only_when_it_beat_the_best_candidate_on_the_full_search_set():
    from darwin_core.evolution.pipeline import choose_child

    class Lines:
        def baseline_names(self):
            return ["father", "mother", "uniform-50", "mri"]

    candidate = {"name": "g3c1", "generation": 3, "index": 1, "genome": [0.5], "fitness": 0.80}
    assert choose_child(candidate, {"father": 0.9, "mother": 0.7, "uniform-50": 0.79, "mri": 0.80}, Lines())["name"] == "g3c1"
    chosen = choose_child(candidate, {"father": 0.95, "mother": 0.7, "uniform-50": 0.85, "mri": 0.83}, Lines())
    assert chosen == {"kind": "baseline", "name": "uniform-50", "generation": 0, "fitness": 0.85}  # never a parent
