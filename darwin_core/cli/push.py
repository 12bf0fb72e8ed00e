"""`python -m darwin_core push`: the command line of `darwin_core.publishing.push`."""

from __future__ import annotations

import argparse
import os

from darwin_core.publishing.push import push_to_hub


def _cli_push(args: argparse.Namespace) -> int:
    url = push_to_hub(args.child, args.repo, token=os.environ.get("HF_TOKEN"), private=args.private)
    print(url)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("push", help="upload a child folder to the Hub (token from HF_TOKEN)")
    parser.add_argument("child", help="the child model folder (e.g. runs/<id>/child)")
    parser.add_argument("--repo", required=True, help="target repo id, e.g. user/my-child")
    parser.add_argument("--private", action="store_true")
    parser.set_defaults(func=_cli_push)
