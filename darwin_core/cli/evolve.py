"""`python -m darwin_core evolve`: the command line of `darwin_core.evolution.pipeline`.

The config file is read with its relative paths joined to its folder (`EvolutionConfig.load`), and everything the
run needs is checked before its run folder exists (`darwin_core.evolution.preflight`, through the queue's
`prepare_foreground` / `submit`): bad input ends with one sentence and exit code 2, and leaves no failed run.
"""

from __future__ import annotations

import argparse
import sys

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
    from darwin_core.runs import queue as jobs

    config = EvolutionConfig.load(args.config)
    runs_dir = jobs.runs_dir_default(args.runs_dir)
    if args.queue:
        run_id = jobs.submit(config, runs_dir, run_id=args.run_id)
        print(f"queued run {run_id} in {runs_dir}")
        return 0
    folder = jobs.prepare_foreground(config, runs_dir, run_id=args.run_id)
    print(f"run {folder.run_id} in {folder.path}", flush=True)
    state = jobs.execute(folder.path, log=lambda message: print(message, flush=True))
    status = folder.read_status()
    if state == "failed":
        print(f"error: {status.get('error')}", file=sys.stderr)
        return 1
    print(f"{state}: {folder.path}")
    return 0 if state == "finished" else 3
