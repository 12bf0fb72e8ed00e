"""`python -m darwin_core merge`: the command line of `darwin_core.merge.disk`."""

from __future__ import annotations

import argparse
import time

from darwin_core.merge.disk import merge_to_disk
from darwin_core.recipe import Recipe


def _run(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe)
    start = time.perf_counter()
    out = merge_to_disk(recipe, args.out, device=args.device, overwrite=args.overwrite,
                        max_shard_bytes=int(float(args.max_shard_gb) * 10**9))
    print(f"wrote {out} ({recipe.method}, recipe {recipe.recipe_hash[:16]}) in {time.perf_counter() - start:.1f} s")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="write the child of a recipe to a folder",
        description="Merge two parent models by a Darwin recipe (YAML) into a new model folder.",
    )
    parser.add_argument("recipe", help="recipe YAML file (or a child folder holding darwin-recipe.yaml)")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--device", default="cpu", help="where the math runs: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (once complete)")
    parser.add_argument("--max-shard-gb", default=5, type=float, help="largest output shard in GB (default 5)")
    parser.set_defaults(func=_run)
