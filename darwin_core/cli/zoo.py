"""`python -m darwin_core zoo`: the command line of `darwin_core.zoo.build`."""

from __future__ import annotations

import argparse
from pathlib import Path

from darwin_core.parents.demo import DEFAULT_ZOO_DIR
from darwin_core.zoo.build import build_zoo, check_rebuild


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="the embedded demo parents (tiny models trained on string puzzles)")
    actions = parser.add_subparsers(dest="zoo_command", required=True)
    build = actions.add_parser("build", help="train base, father and mother deterministically and write them")
    build.add_argument("--out", type=Path, default=DEFAULT_ZOO_DIR, help="zoo folder (default: assets/zoo)")
    build.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare sha256 with OUT/zoo.json; exit 1 on mismatch")
    build.set_defaults(func=_cli_build)


def _cli_build(args: argparse.Namespace) -> int:
    if not args.check:
        manifest = build_zoo(args.out)
        print(f"wrote {args.out} in {manifest['build_seconds']:.0f} s")
        return 0
    mismatched, fresh = check_rebuild(args.out)
    if mismatched:
        print(f"MISMATCH: a rebuild gives different bytes for {', '.join(mismatched)}")
        return 1
    print(f"OK: a rebuild gives byte-identical weights ({len(fresh['sha256'])} files, {fresh['build_seconds']:.0f} s)")
    return 0
