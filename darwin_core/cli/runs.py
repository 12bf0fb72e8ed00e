"""`python -m darwin_core runs`: the command line of `darwin_core.runs.queue`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import CANCELLED
from darwin_core.io.runfolder import FINISHED
from darwin_core.runs.queue import IDLE_SECONDS, cancel, execute, list_runs, read_run, resume, submit, work


def _print_run(run: dict[str, Any]) -> None:
    best = run.get("best_fitness")
    shown = f"{best:.4f}" if isinstance(best, (int, float)) else "—"
    print(f"{run['run_id']}  {run.get('kind', 'evolve'):<7}  {run['state']:<11}  gen {run.get('generation') or 0}/{run.get('generations') or '?'}  best {shown}")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m darwin_core runs", description="Darwin's run queue.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("worker", help="execute queued runs one at a time, then exit when idle")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--idle", type=float, default=IDLE_SECONDS, help="seconds to wait for new work before exiting")
    p = sub.add_parser("run", help="execute (or resume) one run folder in this process")
    p.add_argument("run_dir")
    p = sub.add_parser("submit", help="queue a run from a config YAML")
    p.add_argument("config")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--run-id", default=None)
    for name, text in (("list", "list runs"), ("show", "show one run"), ("cancel", "cancel a run"), ("resume", "resume a run")):
        p = sub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("run_id")
        p.add_argument("--runs-dir", default=None)
    parser.set_defaults(func=_cli)
    return parser


def register_cli(subparsers) -> None:
    """`python -m darwin_core runs list|show|submit|cancel|resume|worker|run`."""
    build_parser(subparsers.add_parser("runs", help="list, cancel and resume runs; run the background worker"))


def _cli(args: argparse.Namespace) -> int:
    if args.action == "worker":
        work(args.runs_dir, idle_seconds=args.idle)
        return 0
    if args.action == "run":
        state = execute(args.run_dir, log=lambda message: print(message, flush=True))
        return 0 if state in (FINISHED, CANCELLED) else 1
    if args.action == "submit":
        run_id = submit(args.config, args.runs_dir, run_id=args.run_id)
        print(run_id)
        return 0
    if args.action == "list":
        for run in list_runs(args.runs_dir):
            _print_run(run)
        return 0
    if args.action == "show":
        run = read_run(args.run_id, args.runs_dir)
        shown = {k: v for k, v in run.items() if k not in ("curves", "events", "config_yaml")}
        print(json.dumps(shown, indent=1, default=str))
        return 0
    if args.action == "cancel":
        print(cancel(args.run_id, args.runs_dir))
        return 0
    if args.action == "resume":
        resume(args.run_id, args.runs_dir)
        print("queued")
        return 0
    raise AssertionError(args.action)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DarwinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

