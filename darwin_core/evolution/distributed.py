"""One generation's candidates spread over the ranks of a torchrun job; rank 0 keeps the search, the others measure.

    torchrun --nproc-per-node N -m darwin_core evolve breed.yaml

Every rank builds the same ModelProblem (the parents and a resident child). Rank 0 runs the ordinary pipeline
with its problem wrapped in a DistributedProblem: each `measure_many` batch (the baselines, Phase 1, Phase 2)
is cut into one share per rank by longest-processing-time assignment (the costliest candidate first, to the
rank that would finish it earliest; a candidate's expected seconds on a rank are that rank's measured merge time,
unless the candidate is a parent, plus the batch's scoring work over the rank's measured scoring rate), every
share is measured where it was sent, and the per-candidate results come back to rank 0 in the batch's index
order. The other ranks run `serve` until rank 0 says it is done. Rank 0 alone owns CMA-ES, the run folder and
the checkpoint, so the run folder is written exactly as a single process writes it.

Why the result is the single-process result, byte for byte: a candidate's EvalResult is a pure function of
(its recipe, the tasks) — the resident child is written by the deterministic merge path, and scoring is
greedy / log-likelihood with the config's seed — so which rank measured it changes nothing, and the loop on
rank 0 receives the same list in the same order. (Ranks must compute alike: the same device type and
kernels, and on CPU the same thread count, which torchrun pins with OMP_NUM_THREADS.)

A rank that dies (killed, out of memory, its machine gone) breaks its socket; rank 0 notices it on the
next exchange, records a `rank_lost` event with the error, and fails the run with a sentence that says to
resume it. Resuming (`evolve` on the same run id, with any number of ranks) restarts from the last
checkpointed generation, which the existing exact resume makes indistinguishable from an uninterrupted run.

Messages are pickled Python objects on a gloo group (on CUDA the default group is NCCL and a gloo group is
made for these control messages: they are small and CPU-side, and the weights never travel).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.evolution.search import Candidate
from darwin_core.evolution.timing import EvalTiming
from darwin_core.fitness.evaluate import EvalResult
from darwin_core.fitness.tasks import Task

# A worker waits for rank 0's next request while rank 0 merges the child and writes the held-out report, which
# can take long for a big pair; a dead peer is noticed at once through its closed socket, not through this.
CONTROL_TIMEOUT = timedelta(days=2)
PARENTS = ("father", "mother")  # baselines the child takes by copying a parent: no merge to pay for


@dataclass(frozen=True)
class TorchrunEnvironment:
    """What torchrun tells each process about itself (WORLD_SIZE, RANK, LOCAL_RANK)."""

    world_size: int
    rank: int
    local_rank: int

    @classmethod
    def detect(cls, environ: dict[str, str] | None = None) -> "TorchrunEnvironment | None":
        """The torchrun environment, or None in a plain process (or a torchrun of one process)."""
        environ = dict(os.environ if environ is None else environ)
        if "WORLD_SIZE" not in environ or "RANK" not in environ:
            return None
        world_size = int(environ["WORLD_SIZE"])
        if world_size <= 1:
            return None
        return cls(world_size=world_size, rank=int(environ["RANK"]), local_rank=int(environ.get("LOCAL_RANK", "0")))


def init_group(environment: TorchrunEnvironment, device: str) -> Any:
    """Join the job's process group (NCCL on CUDA, gloo on CPU); returns the gloo group control messages use."""
    import torch
    import torch.distributed as dist

    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_cuda:
        torch.cuda.set_device(environment.local_rank)
        dist.init_process_group(backend="nccl", timeout=CONTROL_TIMEOUT)
        return dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    dist.init_process_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return dist.group.WORLD


def scoring_units(tasks: Sequence[Task]) -> float:
    """The expected scoring work of one candidate on `tasks`: the characters the model reads (prompt and each
    choice, or prompt and answer budget). Only ratios matter; a rank's measured scoring rate turns it into seconds."""
    characters = 0.0
    for task in tasks:
        for item in task.search:
            if item.choices:
                characters += sum(len(item.prompt) + len(choice) for choice in item.choices)
            else:
                characters += len(item.prompt) + task.max_new_tokens
    return characters


def needs_merge(candidate: Candidate) -> bool:
    """Whether measuring the candidate starts by merging a recipe into the child (all but the parents themselves)."""
    return not (isinstance(candidate, str) and candidate in PARENTS)


def assign_shares(expected: Sequence[Sequence[float]]) -> list[list[int]]:
    """Longest-processing-time assignment: candidate indices per rank so that the last rank finishes early.

    `expected[c][r]` is candidate c's expected seconds on rank r. Candidates go costliest first (ties: lower
    index first) to the rank where they would finish earliest (ties: lower rank). A pure function of its input,
    so the same expectations always give the same shares; each share keeps the batch's index order.
    """
    ranks = len(expected[0]) if expected else 0
    finish = [0.0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for index in sorted(range(len(expected)), key=lambda i: (-min(expected[i]), i)):
        rank = min(range(ranks), key=lambda r: (finish[r] + expected[index][r], r))
        finish[rank] += expected[index][rank]
        shares[rank].append(index)
    return [sorted(share) for share in shares]


@dataclass
class RankRate:
    """What one rank was measured to cost: seconds to merge a candidate and scoring units per second (blended
    over batches; before any measurement every rank is alike, so the first batch is split by scoring units)."""

    merge_seconds: float = 0.0
    units_per_second: float = 1.0
    measured: bool = False

    def expected(self, candidate: Candidate, units: float) -> float:
        return (self.merge_seconds if needs_merge(candidate) else 0.0) + units / self.units_per_second

    def learn(self, candidates: Sequence[Candidate], units: float, timings: Sequence[EvalTiming]) -> None:
        merges = [t.merge_seconds for c, t in zip(candidates, timings) if needs_merge(c)]
        scoring = sum(t.scoring_seconds for t in timings)
        if not timings or scoring <= 0:
            return
        merge, rate = (sum(merges) / len(merges) if merges else self.merge_seconds), units * len(timings) / scoring
        if self.measured:
            merge, rate = 0.5 * (self.merge_seconds + merge), 0.5 * (self.units_per_second + rate)
        self.merge_seconds, self.units_per_second, self.measured = merge, rate, True


@dataclass(frozen=True)
class _Share:
    """One rank's part of a batch: candidates by batch index, and the tasks (or the key of tasks sent before)."""

    indices: tuple[int, ...]
    candidates: tuple[Candidate, ...]
    tasks_key: str
    tasks: tuple[Task, ...] | None


@dataclass(frozen=True)
class _Answer:
    """What a rank sends back: a result and a timing per candidate of its share and the seconds it took, or its
    error."""

    results: tuple[EvalResult, ...] = ()
    timings: tuple[EvalTiming, ...] = ()
    seconds: float = 0.0
    error: str | None = None


def measure_timed(problem: Any, candidate: Candidate, tasks: Sequence[Task]) -> tuple[EvalResult, EvalTiming]:
    """The result and its timing: the problem's own `last_timing` when it reports one, else the wall clock."""
    started = time.perf_counter()
    result = problem.measure(candidate, tasks)
    timing = getattr(problem, "last_timing", None)
    if not isinstance(timing, EvalTiming):
        timing = EvalTiming(merge_seconds=0.0, scoring_seconds=time.perf_counter() - started)
    return result, timing


DONE = "done"


def _tasks_key(tasks: Sequence[Task]) -> str:
    """A name for a task list (its tasks and search items), so each rank receives a task list only once."""
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(task.name.encode() + b"\0" + "\0".join(item.id for item in task.search).encode() + b"\1")
    return digest.hexdigest()


def _send(message: Any, rank: int, group: Any) -> None:
    import torch.distributed as dist

    dist.send_object_list([message], dst=rank, group=group)


def _receive(rank: int, group: Any) -> Any:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.recv_object_list(box, src=rank, group=group)
    return box[0]


class DistributedProblem:
    """The rank-0 problem the search loop sees: the local ModelProblem, with each batch spread over the ranks.

    Everything but measuring (tasks, bounds, recipes, describe, the resident child) is the local problem's.
    """

    def __init__(self, local: Any, group: Any, world_size: int, *, on_rank_lost: Callable[[int, str], None] | None = None,
                 on_batch: Callable[[list[int], list[float]], None] | None = None):
        self.local, self.group, self.world_size = local, group, world_size
        self.on_rank_lost = on_rank_lost or (lambda rank, error: None)
        self.on_batch = on_batch or (lambda counts, seconds: None)  # candidates and seconds per rank, for events.jsonl
        self.rates = [RankRate() for _ in range(world_size)]  # measured as batches come back
        self._tasks_sent: list[set[str]] = [set() for _ in range(world_size)]
        self._closed = False
        self.last_timings: list[EvalTiming] = []

    def __getattr__(self, name: str) -> Any:
        if name == "local":  # not set yet (a half-built object): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.local, name)

    def measure(self, candidate: Candidate, tasks: Sequence[Task], split: str = "search") -> EvalResult:
        """One candidate, here: a batch of one has nothing to spread (the held-out report measures this way)."""
        return self.local.measure(candidate, tasks, split=split)

    def measure_many(self, candidates: Sequence[Candidate], tasks: Sequence[Task]) -> list[EvalResult]:
        """Each candidate's result on `tasks`, in the batch's order, measured on the rank its share went to."""
        candidates = list(candidates)
        units = scoring_units(tasks)
        shares = assign_shares([[rate.expected(candidate, units) for rate in self.rates] for candidate in candidates])
        key = _tasks_key(tasks)
        for rank in range(1, self.world_size):
            if shares[rank]:
                first = key not in self._tasks_sent[rank]
                self._exchange(rank, lambda: _send(_Share(tuple(shares[rank]), tuple(candidates[i] for i in shares[rank]), key,
                                                          tuple(tasks) if first else None), rank, self.group))
                self._tasks_sent[rank].add(key)
        results: dict[int, EvalResult] = {}
        timings: dict[int, EvalTiming] = {}
        seconds = [0.0] * self.world_size
        started = time.perf_counter()
        for index in shares[0]:
            results[index], timings[index] = measure_timed(self.local, candidates[index], tasks)
        seconds[0] = time.perf_counter() - started
        for rank in range(1, self.world_size):
            if shares[rank]:
                answer: _Answer = self._exchange(rank, lambda: _receive(rank, self.group))
                if answer.error is not None:
                    self._lost(rank, answer.error)
                results.update(zip(shares[rank], answer.results))
                timings.update(zip(shares[rank], answer.timings))
                seconds[rank] = answer.seconds
        for rank, share in enumerate(shares):
            self.rates[rank].learn([candidates[i] for i in share], units, [timings[i] for i in share])
        self.on_batch([len(share) for share in shares], [round(s, 3) for s in seconds])
        self.last_timings = [timings[index] for index in range(len(candidates))]  # read by search.measure_all_timed
        return [results[index] for index in range(len(candidates))]

    def _exchange(self, rank: int, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (RuntimeError, ConnectionError, OSError) as error:  # gloo: "Connection closed by peer", a timeout
            self._lost(rank, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)

    def _lost(self, rank: int, error: str) -> None:
        self._closed = True  # the group is broken: no goodbye can reach the others
        self.on_rank_lost(rank, error)
        raise DarwinError(f"Rank {rank} of {self.world_size} stopped ({error}); resume the run to continue "
                          "from its last finished generation, with any number of processes.")

    def close(self) -> None:
        """Tell every other rank the run is over (they leave `serve`); after a lost rank, nobody is told."""
        if self._closed:
            return
        self._closed = True
        for rank in range(1, self.world_size):
            try:
                _send(DONE, rank, self.group)
            except (RuntimeError, ConnectionError, OSError):
                pass  # that rank is gone already


def serve(build_problem: Callable[[], Any], group: Any, log: Callable[[str], None] | None = None) -> int:
    """A worker rank: build the problem, then measure every share rank 0 sends until it says done.

    Returns the number of candidates measured. A problem that fails to build (or a measurement that raises)
    is answered as an error, so rank 0 records it and stops the run instead of waiting forever.
    """
    log = log or (lambda message: None)
    problem, failure = None, None
    try:
        problem = build_problem()
    except Exception as error:  # noqa: BLE001 — sent to rank 0, which fails the run with it
        failure = f"{type(error).__name__}: {error}"
    tasks_by_key: dict[str, tuple[Task, ...]] = {}
    measured = 0
    while True:
        message = _receive(0, group)
        if message == DONE:
            return measured
        share: _Share = message
        if share.tasks is not None:
            tasks_by_key[share.tasks_key] = share.tasks
        if failure is not None:
            _send(_Answer(error=failure), 0, group)
            continue
        started = time.perf_counter()
        try:
            timed = [measure_timed(problem, candidate, tasks_by_key[share.tasks_key]) for candidate in share.candidates]
        except Exception as error:  # noqa: BLE001
            _send(_Answer(error=f"{type(error).__name__}: {error}"), 0, group)
            continue
        measured += len(timed)
        _send(_Answer(results=tuple(r for r, _ in timed), timings=tuple(t for _, t in timed),
                      seconds=time.perf_counter() - started), 0, group)


def tell_workers(run_id: str | None, group: Any, world_size: int) -> None:
    """Rank 0, before the run: the run id every worker serves, or None (the config was refused: they exit)."""
    for rank in range(1, world_size):
        _send(run_id, rank, group)


def receive_from_leader(group: Any) -> str | None:
    """A worker, before the run: the run id rank 0 prepared, or None when it refused the config."""
    return _receive(0, group)


def release_workers(group: Any, world_size: int) -> None:
    """Rank 0, when the run ended before it ever measured through the ranks (a parent failed to load)."""
    DistributedProblem(None, group, world_size).close()


def build_local_problem(config: Any, runs_dir: Any, *, token: str | None = None) -> Any:
    """A worker's own copy of rank 0's problem: the same config, parents, tasks and resident child (`token`: the
    user's Hub token for parents this machine has not cached)."""
    from darwin_core.evolution.problem import ModelProblem

    return ModelProblem(config, runs_dir=runs_dir, token=token)
