"""`python -m darwin_core card`: the command line of `darwin_core.publishing.cardgen`."""

from __future__ import annotations

import argparse

from darwin_core.publishing.cardgen import card_text, write_card


def _cli_card(args: argparse.Namespace) -> int:
    text, warnings = card_text(args.run_dir, repo_id=args.repo_id)
    for warning in warnings:
        print(f"warning: {warning}")
    if args.write:
        print(f"wrote {write_card(args.run_dir, text)}")
    else:
        print(text)
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("card", help="the model card of a finished run's child, from what the run measured")
    parser.add_argument("run_dir", help="the run folder (runs/<id>)")
    parser.add_argument("--repo-id", default=None, help="the repo the child will be published as (for the usage snippet)")
    parser.add_argument("--write", action="store_true", help="save it as child/README.md instead of printing it")
    parser.set_defaults(func=_cli_card)
