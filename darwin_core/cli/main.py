"""`python -m darwin_core <command>`: the same functions the UI calls, for a terminal or a cluster job.

Each command has its own module, `darwin_core/cli/<command>.py`, which defines
`register_cli(subparsers)`, which adds its sub-parser and sets `func(args) -> int`. Only the module
of the command being run is imported (torch and transformers make every import cost seconds);
`--help` without a command imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from darwin_core.errors import DarwinError

COMMANDS: dict[str, str] = {name: f"darwin_core.cli.{name}" for name in
                           ("zoo", "merge", "scan", "health", "chat", "evolve", "runs", "card", "push")}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """A parser holding one command's sub-parser, or every command's when `command` is None or unknown."""
    parser = argparse.ArgumentParser(prog="python -m darwin_core", description="Darwin: breed language models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module_name in modules:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DarwinError as error:  # bad input: one line on stderr, exit code 2 (argparse's code for bad usage)
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
