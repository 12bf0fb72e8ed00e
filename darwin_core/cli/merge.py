"""`python -m darwin_core merge`: the command line of `darwin_core.merge.disk`.

Every argument is checked before a parent is resolved or a byte written: the recipe file, the device (against
what torch sees), the shard size and the output folder; each failure is one sentence and exit code 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.merge.disk import check_device, check_out_folder, check_shard_size, merge_to_disk
from darwin_core.io.textfile import read_user_text
from darwin_core.recipe import RECIPE_FILE, Recipe


def read_recipe(path: str) -> Recipe:
    """The recipe in a file (or in a child folder's darwin-recipe.yaml); one sentence for a missing, binary or
    non-UTF-8 file instead of a traceback."""
    file = Path(path)
    if file.is_dir():
        file = file / RECIPE_FILE
        if not file.is_file():
            raise DarwinError(f"The folder {path} holds no {RECIPE_FILE}, so it is not a child folder.")
    return Recipe.from_yaml(read_user_text(file, "recipe file"))


def _run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    max_shard_bytes = check_shard_size(args.max_shard_gb)
    check_out_folder(args.out, overwrite=args.overwrite)
    recipe = read_recipe(args.recipe)
    start = time.perf_counter()
    out = merge_to_disk(recipe, args.out, device=device, overwrite=args.overwrite, max_shard_bytes=max_shard_bytes)
    print(f"wrote {out} ({recipe.method}, recipe {recipe.recipe_hash[:16]}) in {time.perf_counter() - start:.1f} s")
    _print_layer_map(recipe)
    return 0


def _print_layer_map(recipe: Recipe) -> None:
    """A cross-architecture FFN pair: which mother layer each father layer's FFN was bred with, and the layers
    kept as the father's with the reason (the same rows the card and report.json show)."""
    from darwin_core.publishing.recipe_view import kept_layers_sentence, layer_map_of, layer_map_table

    rows = layer_map_of(recipe)
    if not rows:
        return
    print("feed-forward only: attention, norms and embeddings are the father's; layer map:")
    print(layer_map_table(rows), end="")
    kept = kept_layers_sentence(rows)
    if kept:
        print(kept)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="write the child of a recipe to a folder",
        description="Merge two parent models by a Darwin recipe (YAML) into a new model folder.",
    )
    parser.add_argument("recipe", help="recipe YAML file (or a child folder holding darwin-recipe.yaml)")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--device", default="cpu", help="where the math runs: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (once complete)")
    parser.add_argument("--max-shard-gb", default="5", help="largest output shard in GB (default 5)")
    parser.set_defaults(func=_run)
