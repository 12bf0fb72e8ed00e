"""`python -m darwin_core <command>`: the same functions the UI calls, for a terminal or a cluster job.

Each command lives beside the logic it drives: a module in COMMAND_MODULES defines
`register_cli(subparsers)`, which adds its sub-parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from darwin_core.errors import DarwinError

COMMAND_MODULES = (
    "darwin_core.zoo",
    "darwin_core.merge.disk",
    "darwin_core.mri",
    "darwin_core.health",
    "darwin_core.evolve",
    "darwin_core.card",
    "darwin_core.publish",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m darwin_core", description="Darwin: breed language models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, "register_cli"):
            module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DarwinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
