"""`python -m darwin_core card`: the command line of `darwin_core.publishing.cardgen`.

`card RUN > README.md` must give a valid card, so stdout carries the card and nothing else; the license
warnings (and the `--write` confirmation) go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import RunFolder, check_run_id, runs_dir_default
from darwin_core.publishing.cardgen import card_text, write_card


def run_folder(run: str, runs_dir: str | None) -> Path:
    """The run folder `run` names: a run id in the runs folder (always so with --runs-dir), else a folder path.

    Without --runs-dir a path that is a run folder wins, so `card runs/<id>` keeps working.
    """
    if runs_dir is None and RunFolder(run).exists():
        return Path(run)
    root = runs_dir_default(runs_dir)
    try:
        folder = root / check_run_id(run)
    except DarwinError:
        folder = None
    if folder is None or not RunFolder(folder).exists():
        shown = f" (and {run} is not a run folder)" if runs_dir is None else ""
        raise DarwinError(f"There is no run {run!r} in {root}{shown}; give a run id or a run folder.")
    return folder


def _cli_card(args: argparse.Namespace) -> int:
    run_dir = run_folder(args.run, args.runs_dir)
    text, warnings = card_text(run_dir, repo_id=args.repo_id)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.write:
        print(f"wrote {write_card(run_dir, text)}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "card", help="the model card of a finished run's child, from what the run measured",
        description="Prints the card alone on stdout (`card RUN > README.md` is a valid card); warnings go to stderr.")
    parser.add_argument("run", help="a run id (in --runs-dir) or a run folder (runs/<id>)")
    parser.add_argument("--runs-dir", default=None, help="runs folder (default: $DARWIN_RUNS_DIR or ./runs)")
    parser.add_argument("--repo-id", default=None, help="the repo the child will be published as (for the usage snippet)")
    parser.add_argument("--write", action="store_true", help="save it as child/README.md instead of printing it")
    parser.set_defaults(func=_cli_card)
