"""Batched measuring and time in every record: how a batch is computed changes no byte of evaluations.jsonl, and
every evaluation's merge seconds, scoring seconds and tokens scored are in events.jsonl (never in evaluations)."""

from __future__ import annotations

from collections.abc import Sequence

from darwin_core.evolution.search import measure_all, measure_all_timed, run_search
from darwin_core.evolution.timing import EvalTiming, throughput
from darwin_core.fitness.evaluate import EvalResult
from darwin_core.fitness.tasks import Task
from darwin_core.io.runfolder import EVALUATIONS
from tests.test_evolve import SyntheticProblem, _folder, _settings, tiny_config, write_choice_task


class BatchingProblem(SyntheticProblem):
    """The synthetic problem with a `measure_many` that computes its batch backwards (as another process might, in
    any order) and reports a timing per candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def measure_many(self, candidates: Sequence, tasks: Sequence[Task]) -> list[EvalResult]:
        self.batches.append(len(candidates))
        backwards = {index: self.measure(candidates[index], tasks) for index in reversed(range(len(candidates)))}
        self.last_timings = [EvalTiming(merge_seconds=0.5, scoring_seconds=1.5, tokens_scored=100 + i) for i in range(len(candidates))]
        return [backwards[index] for index in range(len(candidates))]


def test_a_batching_problem_writes_evaluations_byte_identical_to_one_measured_candidate_by_candidate(tmp_path):
    one_by_one, batched = _folder(tmp_path, "single"), _folder(tmp_path, "batched")
    reference = run_search(one_by_one, SyntheticProblem(), _settings())
    problem = BatchingProblem()
    outcome = run_search(batched, problem, _settings())
    assert batched.file(EVALUATIONS).read_bytes() == one_by_one.file(EVALUATIONS).read_bytes()
    assert outcome.best == reference.best
    # baselines, then per generation one Phase 1 batch of the population and one Phase 2 batch of the top-k
    assert problem.batches == [3] + [6, 2] * 4


def test_measure_all_returns_results_in_the_batch_order_with_the_problems_own_timings():
    problem = BatchingProblem()
    genomes = [[0.1 * k] * SyntheticProblem.DIM for k in range(5)]
    results, timings = measure_all_timed(problem, genomes, problem.tasks)
    assert results == [SyntheticProblem().measure(g, problem.tasks) for g in genomes]
    assert [t.tokens_scored for t in timings] == [100, 101, 102, 103, 104]
    assert measure_all(SyntheticProblem(), genomes, problem.tasks) == results  # the one-by-one fallback agrees


def test_every_evaluated_event_carries_merge_and_scoring_seconds_and_tokens_and_evaluations_carry_none(tmp_path):
    folder = _folder(tmp_path, "timed")
    run_search(folder, BatchingProblem(), _settings(generations=2))
    events = [e for e in folder.events() if e["event"] == "evaluated"]
    evaluations = folder.evaluations()
    assert [e["name"] for e in events] == [e["name"] for e in evaluations]
    for event in events:
        assert event["merge_seconds"] == 0.5 and event["scoring_seconds"] == 1.5 and event["tokens_scored"] >= 100
        assert event["items"] > 0 and event["seconds"] == 2.0
    assert not any(key in e for e in evaluations for key in ("merge_seconds", "scoring_seconds", "tokens_scored", "seconds"))
    speed = throughput(folder.events())
    assert speed is not None and speed.per_minute == 30.0 and speed.merge_share == 0.25


def test_the_model_problem_times_the_merge_and_the_scoring_and_counts_scored_tokens(fixture_pair, tmp_path):
    from darwin_core.runs import queue as jobs

    father, mother = fixture_pair("llama")
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl"), generations=1, population=3)
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="timed")
    assert jobs.execute(folder.path) == "finished"
    events = [e for e in folder.events() if e["event"] == "evaluated"]
    assert len(events) == len(folder.evaluations()) == 3 + 3 + 1  # baselines, proxies, top-1
    for event in events:
        assert event["scoring_seconds"] > 0 and event["merge_seconds"] >= 0 and event["tokens_scored"] > event["items"]
    proxies = [e for e in events if e["phase"] == "proxy"]
    assert len({e["tokens_scored"] for e in proxies}) == 1, "the same proxy items cost the same tokens for every candidate"


def test_the_evolve_tab_shows_the_launch_estimate_and_the_measured_speed_of_a_run(fixture_pair, tmp_path):
    from darwin_core.runs import queue as jobs
    from ui.tabs.evolve import budget_markdown

    father, mother = fixture_pair("llama")
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl"), generations=2, population=3)
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="shown")
    assert "Cost estimate: 6 candidates" in budget_markdown(folder.path) and "Measured" not in budget_markdown(folder.path)
    assert jobs.execute(folder.path) == "finished"
    shown = budget_markdown(folder.path)
    assert "no measured speed" in shown, "the estimate is the one made at launch, before this run measured anything"
    assert "s** per evaluation" in shown and "candidate evaluations per minute" in shown


def test_the_eta_is_what_a_finished_generation_cost_times_the_generations_left_less_what_the_current_one_spent():
    from darwin_core.evolution.timing import timed_eta_seconds

    def evaluated(name: str, seconds: float) -> dict:
        return {"event": "evaluated", "name": name, "phase": "proxy", "merge_seconds": 1.0, "scoring_seconds": seconds - 1.0}

    events = [evaluated("father", 50.0), evaluated("g1c0", 6.0), evaluated("g1c1", 4.0), {"event": "generation", "generation": 1},
              evaluated("g2c0", 4.0)]
    assert timed_eta_seconds(events, 3) == 6.0 + 10.0  # the rest of generation 2, then all of generation 3
    assert timed_eta_seconds(events[:3], 3) is None  # no generation finished yet: no measure of one
    assert timed_eta_seconds(events + [{"event": "early_stop", "generation": 2}], 3) == 0.0
