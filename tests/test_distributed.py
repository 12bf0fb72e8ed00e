"""torchrun spreads a generation over processes and changes nothing in the result; a dead rank costs only a resume.

The run tests start real torchrun jobs (`python -m torch.distributed.run`, gloo on CPU) of the embedded demo
parents with a tiny config, and compare the run folder byte for byte with a single-process run of the same
config. Every process runs with one CPU thread (torchrun's default), so the processes compute alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darwin_core.evolution.distributed import RankRate, TorchrunEnvironment, assign_shares, scoring_units
from darwin_core.evolution.timing import EvalTiming
from darwin_core.fitness.tasks import Item, Task
from darwin_core.io.runfolder import BEST_RECIPE, CHILD, EVALUATIONS, RunFolder

REPO = Path(__file__).resolve().parent.parent
TINY_DEMO_BREEDING = """\
father: demo:father
mother: demo:mother
tasks:
  - {demo: reverse, weight: 0.6, limit: 24}
  - {demo: sort, weight: 0.4, limit: 24}
genome: per-block-role
population: 6
generations: 4
proxy_items: 4
topk_full: 1
seed: 3
device: cpu
"""


# --------------------------------------------------------------------------------------------- the shares


def test_longest_processing_time_gives_every_candidate_to_exactly_one_rank_and_evens_the_finish_times():
    costs = [5.0, 1.0, 4.0, 2.0, 3.0, 3.0, 2.0, 4.0]
    shares = assign_shares([[c, c] for c in costs])
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    assert [sum(costs[i] for i in share) for share in shares] == [12.0, 12.0]
    assert all(share == sorted(share) for share in shares), "each share keeps the batch's order"
    assert assign_shares([[c, c] for c in costs]) == shares, "the same expectations give the same shares"


def test_a_rank_measured_twice_as_fast_is_given_twice_the_work():
    assert [len(share) for share in assign_shares([[0.5, 1.0]] * 12)] == [8, 4]


def test_equal_candidates_on_more_ranks_than_candidates_leave_no_rank_with_two_while_another_has_none():
    assert [len(share) for share in assign_shares([[3.0] * 4] * 3)] == [1, 1, 1, 0]


def test_a_rank_learns_its_merge_and_scoring_rate_and_a_parent_costs_no_merge():
    rate = RankRate()
    rate.learn(["father", [0.5], [0.6]], units=100.0,
               timings=[EvalTiming(0.0, 1.0), EvalTiming(2.0, 1.0), EvalTiming(4.0, 1.0)])
    assert (rate.merge_seconds, rate.units_per_second) == (3.0, 100.0)
    assert rate.expected("mother", 100.0) == 1.0 and rate.expected([0.1], 200.0) == 5.0


def test_scoring_work_grows_with_the_items_read():
    items = tuple(Item(id=f"i{k}", prompt="abcd =", answer="0", choices=("abcd", "dcba")) for k in range(4))
    task = Task(name="mc", kind="choice", search=items, heldout=())
    half = Task(name="mc", kind="choice", search=items[:2], heldout=())
    assert scoring_units([task]) == 2 * scoring_units([half]) > 0


def test_torchrun_is_detected_only_with_more_than_one_process():
    assert TorchrunEnvironment.detect({}) is None
    assert TorchrunEnvironment.detect({"WORLD_SIZE": "1", "RANK": "0"}) is None
    found = TorchrunEnvironment.detect({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (found.world_size, found.rank, found.local_rank) == (4, 2, 0)


# --------------------------------------------------------------------------------------------- real torchrun runs


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _evolve(config: Path, runs: Path, run_id: str, processes: int = 1, **popen) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.Popen([*launcher, "-m", "darwin_core", "evolve", str(config), "--runs-dir", str(runs), "--run-id", run_id],
                            env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-3000:]
    return output


def _child_digests(folder: RunFolder) -> dict[str, str]:
    child = folder.file(CHILD)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(child.iterdir()) if p.is_file()}


def _same_run(a: RunFolder, b: RunFolder) -> None:
    assert a.file(EVALUATIONS).read_bytes() == b.file(EVALUATIONS).read_bytes()
    assert a.file(BEST_RECIPE).read_bytes() == b.file(BEST_RECIPE).read_bytes()
    assert _child_digests(a) == _child_digests(b) and _child_digests(a)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> tuple[Path, Path, RunFolder]:
    """(config, runs folder, the run of one plain process): what every torchrun run must reproduce."""
    root = tmp_path_factory.mktemp("distributed")
    config = root / "breed.yaml"
    config.write_text(TINY_DEMO_BREEDING, encoding="utf-8")
    _finished(_evolve(config, root / "runs", "single"))
    return config, root / "runs", RunFolder(root / "runs" / "single")


def test_torchrun_on_two_processes_writes_the_single_process_run_byte_for_byte(single_process_run):
    config, runs, single = single_process_run
    _finished(_evolve(config, runs, "two", processes=2))
    two = RunFolder(runs / "two")
    _same_run(single, two)
    spreads = [e for e in two.events() if e["event"] == "batch_spread"]
    assert spreads and all(len(e["candidates_per_rank"]) == 2 for e in spreads)
    assert sum(e["candidates_per_rank"][1] for e in spreads) > 0, "rank 1 measured part of the run"
    evaluated = [e for e in two.events() if e["event"] == "evaluated"]
    assert evaluated and all(e["scoring_seconds"] > 0 and e["tokens_scored"] > 0 and e["merge_seconds"] >= 0
                             for e in evaluated), "every evaluation's timing came back from the rank that measured it"
    assert two.read_status()["state"] == "finished"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _rank_pid(agent: int, rank: int) -> int | None:
    for pid in _children(agent):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_a_rank_killed_mid_generation_is_recorded_and_one_process_resumes_to_the_same_result(single_process_run):
    config, runs, single = single_process_run
    agent = _evolve(config, runs, "killed", processes=2)
    killed = RunFolder(runs / "killed")
    deadline = time.monotonic() + 180
    try:
        rank_1 = None
        while rank_1 is None:
            assert time.monotonic() < deadline, "torchrun did not start rank 1"
            rank_1 = _rank_pid(agent.pid, 1)
        while b'"event":"generation"' not in _bytes(killed.path / "events.jsonl"):  # generation 1 is checkpointed
            assert agent.poll() is None, "the run ended before a rank could be killed"
            assert time.monotonic() < deadline, "the run did not finish generation 1 in time"
            time.sleep(0.005)
        os.kill(rank_1, signal.SIGKILL)
        agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0
    lost = [e for e in killed.events() if e["event"] == "rank_lost"]
    assert lost and lost[0]["rank"] == 1 and lost[0]["error"]
    status = killed.read_status()
    assert status["state"] == "failed" and "resume" in status["error"]
    assert killed.read_checkpoint()["generation"] < 4, "killed before the last generation ended"

    output = _finished(_evolve(config, runs, "killed"))  # the same command, one process: resumes the run
    assert "resumed after generation" in output
    _same_run(single, killed)
    assert json.loads(killed.file("report.json").read_text())["best"] == json.loads(single.file("report.json").read_text())["best"]
