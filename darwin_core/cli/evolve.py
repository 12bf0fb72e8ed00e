"""`python -m darwin_core evolve`: the command line of `darwin_core.evolution.pipeline`.

The config file is read with its relative paths joined to its folder (`EvolutionConfig.load`), and everything the
run needs is checked before its run folder exists (`darwin_core.evolution.preflight`, through the queue's
`prepare_foreground` / `submit`): bad input ends with one sentence and exit code 2, and leaves no failed run.

Under torchrun (`torchrun --nproc-per-node N -m darwin_core evolve breed.yaml`, WORLD_SIZE > 1) every process
builds the same problem; rank 0 prepares the run folder and runs the pipeline with its measurements spread
over the ranks, the others serve measurements until it is done (`darwin_core.evolution.distributed`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import RunFolder
from darwin_core.evolution.pipeline import EvolutionConfig


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "evolve", help="breed a child: CMA-ES search over merge recipes, then merge and report",
        description="Run an evolution from a config YAML into a run folder (the same folder the UI shows). "
        "Running it again with the same --run-id resumes an interrupted run.",
    )
    parser.add_argument("config", help="evolution config YAML")
    parser.add_argument("--runs-dir", default=None, help="runs folder (default: $DARWIN_RUNS_DIR or ./runs)")
    parser.add_argument("--run-id", default=None, help="name of the run folder (default: time + random suffix)")
    parser.add_argument("--queue", action="store_true", help="submit to the background worker instead of running here")
    parser.set_defaults(func=_cli_evolve)

    # `runs list|show|cancel|resume|worker` (the queue the UI shows) is registered by darwin_core.runs.queue itself.


def _cli_evolve(args: argparse.Namespace) -> int:
    from darwin_core.api import estimate_cost, placement_sentence
    from darwin_core.evolution.distributed import TorchrunEnvironment
    from darwin_core.runs import queue as jobs

    config = EvolutionConfig.load(args.config)
    runs_dir = jobs.runs_dir_default(args.runs_dir)
    environment = TorchrunEnvironment.detect()
    if environment is not None:
        if args.queue:
            raise DarwinError("--queue hands the run to the background worker; run it without torchrun.")
        return _evolve_distributed(args, config, environment)
    if args.queue:
        run_id = jobs.submit(_pinned(config, runs_dir, hub_token()), runs_dir, run_id=args.run_id)
        print(f"queued run {run_id} in {runs_dir}")
        print(estimate_cost(config, runs_dir, exclude=run_id).sentence(), flush=True)
        return 0
    token = hub_token()
    folder = _prepare(config, runs_dir, args.run_id, token)
    print(f"run {folder.run_id} in {folder.path}", flush=True)
    print(estimate_cost(config, runs_dir, exclude=folder.run_id).sentence(), flush=True)  # checked, not yet started
    placement = placement_sentence(config, runs_dir)
    if placement:
        print(f"Placement: {placement}", flush=True)
    state = jobs.execute(folder.path, log=lambda message: print(message, flush=True), token=token)
    return _report_state(folder, state)


def _prepare(config: EvolutionConfig, runs_dir: Path, run_id: str | None, token: str | None) -> RunFolder:
    """`prepare_foreground`; a refusal inside a Job is also written to the run the Space is showing."""
    from darwin_core.runs import hfjobs, queue

    try:
        return queue.prepare_foreground(config, runs_dir, run_id=run_id, token=token)
    except DarwinError as error:
        hfjobs.record_refusal_in_job(runs_dir, run_id, str(error))
        raise


def _pinned(config: EvolutionConfig, runs_dir: Path, token: str | None) -> EvolutionConfig:
    """The config for the background worker, which asks the Hub with no token: a gated or private parent is
    downloaded now with the user's and named by its cached commit (`parent_for_job`, as the page does)."""
    import dataclasses

    from darwin_core.api import parent_for_job

    if token is None:
        return config
    names = {role: parent_for_job(getattr(config, role), local_mode=config.local_mode, token=token, runs_dir=runs_dir)[0]
             for role in ("father", "mother")}
    return dataclasses.replace(config, **names)


def hub_token() -> str | None:
    """The user's own Hub token for the parents this run downloads (gated or private ones): HF_TOKEN, as the
    rest of the CLI reads it; a Job gets the visitor's as its HF_TOKEN secret. Passed on, never written."""
    return os.environ.get("HF_TOKEN") or None


def _report_state(folder, state: str) -> int:
    """Print how the run ended; the exit code: 0 finished, 1 failed, 3 cancelled or interrupted."""
    status = folder.read_status()
    if state == "failed":
        print(f"error: {status.get('error')}", file=sys.stderr)
        return 1
    print(f"{state}: {folder.path}")
    return 0 if state == "finished" else 3


def _evolve_distributed(args: argparse.Namespace, config: EvolutionConfig, environment) -> int:
    """One torchrun process: rank 0 prepares the folder and runs the pipeline, the others measure for it."""
    import torch.distributed as dist

    from darwin_core.evolution import distributed
    from darwin_core.runs import queue as jobs

    runs_dir = jobs.runs_dir_default(args.runs_dir)
    token = hub_token()
    group = distributed.init_group(environment, config.device)
    try:
        if environment.rank != 0:
            prepared = distributed.receive_from_leader(group)
            if prepared is None:
                return 2  # rank 0 printed the sentence
            distributed.serve(lambda: distributed.build_local_problem(config, runs_dir, token=token), group)
            return 0
        try:
            folder = _prepare(config, runs_dir, args.run_id, token)
        except DarwinError:
            distributed.tell_workers(None, group, environment.world_size)
            raise
        distributed.tell_workers(folder.run_id, group, environment.world_size)
        print(f"run {folder.run_id} in {folder.path} on {environment.world_size} processes", flush=True)
        state = _execute_on_ranks(folder, group, environment.world_size, log=lambda message: print(message, flush=True),
                                  token=token)
        return _report_state(folder, state)
    finally:
        dist.destroy_process_group()


def _execute_on_ranks(folder, group, world_size: int, *, log, token: str | None = None) -> str:
    """jobs.execute on rank 0 with the pipeline's problem spread over the ranks; the workers are released at the
    end however the run ended (after a lost rank the group is broken and nobody is waited for)."""
    from darwin_core.evolution.distributed import DistributedProblem, release_workers
    from darwin_core.runs import queue as jobs

    def on_rank_lost(rank: int, error: str) -> None:
        folder.append_event("rank_lost", rank=rank, world_size=world_size, error=error)

    def on_batch(counts: list[int], seconds: list[float]) -> None:
        folder.append_event("batch_spread", candidates_per_rank=counts, seconds_per_rank=seconds)

    wrapped: list[DistributedProblem] = []

    def wrap(problem) -> DistributedProblem:
        folder.append_event("distributed", world_size=world_size)
        wrapped.append(DistributedProblem(problem, group, world_size, on_rank_lost=on_rank_lost, on_batch=on_batch))
        return wrapped[-1]

    try:
        return jobs.execute(folder.path, log=log, wrap_problem=wrap, token=token)
    finally:
        if wrapped:
            wrapped[-1].close()
        else:
            release_workers(group, world_size)
