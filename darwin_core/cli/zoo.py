"""`python -m darwin_core zoo`: the command line of `darwin_core.zoo` (the zoo and the rivals family)."""

from __future__ import annotations

import argparse
from pathlib import Path

from darwin_core.parents.demo import DEFAULT_RIVALS_DIR, DEFAULT_ZOO_DIR
from darwin_core.zoo.build import build_zoo, check_rebuild
from darwin_core.zoo.rivals import build_rivals, check_rivals_rebuild


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="the embedded demo parents (tiny models trained on string puzzles)")
    actions = parser.add_subparsers(dest="zoo_command", required=True)
    build = actions.add_parser("build", help="train a demo family deterministically and write it")
    build.add_argument("--family", choices=("zoo", "rivals"), default="zoo",
                       help="zoo: base, father and mother (assets/zoo); rivals: two interfering specialists "
                            "fine-tuned from the zoo's base (assets/rivals)")
    build.add_argument("--out", type=Path, default=None, help="family folder (default: assets/zoo or assets/rivals)")
    build.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare sha256 with OUT/zoo.json; exit 1 on mismatch")
    build.set_defaults(func=_cli_build)


def _cli_build(args: argparse.Namespace) -> int:
    rivals = args.family == "rivals"
    out = args.out or (DEFAULT_RIVALS_DIR if rivals else DEFAULT_ZOO_DIR)
    if not args.check:
        manifest = build_rivals(out) if rivals else build_zoo(out)
        print(f"wrote {out} in {manifest['build_seconds']:.0f} s")
        return 0
    mismatched, fresh = check_rivals_rebuild(out) if rivals else check_rebuild(out)
    if mismatched:
        print(f"MISMATCH: a rebuild gives different bytes for {', '.join(mismatched)}")
        return 1
    print(f"OK: a rebuild gives byte-identical weights ({len(fresh['sha256'])} files, {fresh['build_seconds']:.0f} s)")
    return 0
