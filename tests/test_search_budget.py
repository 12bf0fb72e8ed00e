"""Search that uses its budget: successive halving's rungs, CMA-ES's own stops, the MRI start, the cost estimate."""

from __future__ import annotations

import pytest

from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig
from darwin_core.evolution.cost import CostEstimate, MeasuredSpeed, estimate_cost
from darwin_core.evolution.search import SearchSettings, run_search
from darwin_core.evolution.start import mri_start_genome
from darwin_core.genome.spaces import get_space
from tests.test_evolve import SyntheticProblem, _folder, _settings, tiny_config, write_choice_task


class CountingProblem(SyntheticProblem):
    """The synthetic problem, remembering how many items per task each measurement scored."""

    def __init__(self) -> None:
        super().__init__()
        self.measured: list[tuple[object, tuple[int, ...]]] = []

    def measure(self, candidate, tasks):
        self.measured.append((candidate, tuple(len(t.search) for t in tasks)))
        return super().measure(candidate, tasks)


def test_successive_halving_scores_each_rung_on_its_new_items_for_the_best_of_the_rung_before(tmp_path):
    folder = _folder(tmp_path, "halving")
    problem = CountingProblem()
    outcome = run_search(folder, problem, _settings(population=8, proxy_items=5, generations=2, selection="halving"))
    per_generation = [sizes for candidate, sizes in problem.measured if not isinstance(candidate, str)]
    # 40 search items per task: rung 0 = 8 candidates × 5 items, rung 1 = 4 × 5 new, rung 2 = 2 × 10 new,
    # last rung = 1 × the remaining 20 (the whole search split)
    expected = [(5, 5)] * 8 + [(5, 5)] * 4 + [(10, 10)] * 2 + [(20, 20)]
    assert per_generation == expected * 2
    evaluations = [e for e in folder.evaluations() if e["kind"] == "candidate" and e["generation"] == 1]
    assert [e["phase"] for e in evaluations] == ["proxy"] * 8 + ["rung1"] * 4 + ["rung2"] * 2 + ["full"]
    rung1 = {e["index"] for e in evaluations if e["phase"] == "rung1"}
    proxy = {e["index"]: e["fitness"] for e in evaluations if e["phase"] == "proxy"}
    assert rung1 == set(sorted(proxy, key=lambda i: (-proxy[i], i))[:4]), "the best half by proxy climbs"
    full = next(e for e in evaluations if e["phase"] == "full")
    assert set(full["scores"]) == {"alpha", "beta"} and outcome.best is not None
    assert outcome.best["generation"] in (1, 2)


def test_halving_is_deterministic_and_resumes_like_top_k(tmp_path):
    a, b = _folder(tmp_path, "a"), _folder(tmp_path, "b")
    run_search(a, SyntheticProblem(), _settings(selection="halving", halving_rate=3))
    run_search(b, SyntheticProblem(), _settings(selection="halving", halving_rate=3))
    assert a.file("evaluations.jsonl").read_bytes() == b.file("evaluations.jsonl").read_bytes()


def test_cma_es_own_stop_condition_ends_the_run_with_its_reason_recorded(tmp_path):
    folder = _folder(tmp_path, "tolx")
    outcome = run_search(folder, SyntheticProblem(), _settings(generations=30, sigma0=1e-13))
    assert outcome.stopped_early and outcome.generation < 30
    assert outcome.stop_reason.startswith("cma-es: ") and "tolx" in outcome.stop_reason
    stops = [e for e in folder.events() if e["event"] == "early_stop"]
    assert len(stops) == 1 and stops[0]["reason"] == outcome.stop_reason
    assert folder.read_checkpoint()["stop_reason"] == outcome.stop_reason
    ignored = run_search(_folder(tmp_path, "off"), SyntheticProblem(), _settings(generations=3, sigma0=1e-13, cma_stop=False))
    assert not ignored.stopped_early and ignored.generation == 3


def test_the_mri_start_genome_follows_the_prescription_in_every_space():
    prescription = {"model.layers.0.mlp.up_proj.weight": 0.2, "model.layers.0.self_attn.q_proj.weight": 0.4,
                    "model.layers.1.mlp.up_proj.weight": 0.9}
    v6 = get_space("darwin-v6")
    genome = dict(zip(v6.names, mri_start_genome(v6, prescription, 2)))
    assert genome["mri_trust"] == 1.0 and genome["global_ratio"] == 0.5
    assert mri_start_genome(get_space("per-layer", layer_count=2), prescription, 2) == pytest.approx([0.3, 0.9])
    assert mri_start_genome(get_space("per-layer-ffn", layer_count=2), prescription, 2) == pytest.approx([0.2, 0.9])


def test_start_mri_needs_a_scan_and_enters_the_checkpoint_digest():
    base = dict(father="demo:father", mother="demo:mother")
    with pytest.raises(DarwinError, match="start: mri needs"):
        EvolutionConfig(**base, start="mri")
    neutral, mri = EvolutionConfig(**base, mri="auto"), EvolutionConfig(**base, mri="auto", start="mri")
    assert SearchSettings.from_config(neutral).digest != SearchSettings.from_config(mri).digest
    # settings at their defaults leave the digest of older configs alone (their checkpoints still resume)
    assert EvolutionConfig(**base).digest() == EvolutionConfig(**base, selection="topk", halving_rate=2, cma_stop=True).digest()
    with pytest.raises(DarwinError, match="selection"):
        EvolutionConfig(**base, selection="random")


@pytest.mark.slow
def test_an_mri_start_moves_the_first_generation_and_is_recorded_in_the_checkpoint(fixture_pair, tmp_path):
    import numpy as np

    from darwin_core.runs import queue as jobs

    father, mother = fixture_pair("llama")
    task = write_choice_task(tmp_path / "mc.jsonl")
    means, digests = {}, {}
    for start in ("neutral", "mri"):
        config = tiny_config(father, mother, task, genome="per-layer", mri="auto", start=start, generations=1, population=4)
        folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id=start)
        assert jobs.execute(folder.path) == "finished"
        genomes = [e["genome"] for e in folder.evaluations() if e.get("phase") == "proxy"]
        means[start] = np.mean(genomes, axis=0)
        digests[start] = folder.read_checkpoint()["digest"]
        assert digests[start] == config.digest()
    assert not np.allclose(means["neutral"], means["mri"])
    assert digests["neutral"] != digests["mri"]


def test_the_preflight_report_gives_candidates_items_and_minutes_from_a_previous_runs_speed(fixture_pair, tmp_path):
    from darwin_core.evolution.preflight import preflight_report
    from darwin_core.runs import queue as jobs

    father, mother = fixture_pair("llama")
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl"), generations=1, population=3)
    runs = tmp_path / "runs"
    before = preflight_report(config, runs)
    # 20 search items: 3 baselines (no MRI) × 20, then 3 candidates × 6 proxy items and the top 1 × 14 other items
    assert before.startswith("Cost estimate: 3 candidates, 7 evaluations, 92 item scorings")
    assert "no measured speed" in before
    assert before.splitlines()[1].startswith("The parents (") and "candidates merge on the CPU" in before  # placement
    assert jobs.execute(jobs.prepare_foreground(config, runs, run_id="first").path) == "finished"
    after = preflight_report(config, runs)
    assert "min at the speed measured in run first" in after
    estimate = estimate_cost(config, runs)
    assert estimate.minutes is not None and estimate.minutes > 0


def test_a_cost_estimate_is_items_times_seconds_per_item_plus_a_merge_per_evaluation():
    estimate = CostEstimate(candidates=10, evaluations=12, items=600, items_known=True,
                            speed=MeasuredSpeed(seconds_per_item=0.1, merge_seconds=0.5, source="r"))
    assert estimate.minutes == pytest.approx((600 * 0.1 + 12 * 0.5) / 60)
