"""Merge to disk: stream the parents through `merge_tensors` into a new model folder.

One tensor at a time is read from each parent (TensorReader), merged on the chosen device and handed to the
ShardedWriter, which holds at most one output shard before flushing it and moves the finished folder into place
atomically. The child folder gets the father's config.json (dtype updated when the recipe sets one), tokenizer
files and generation_config.json, plus `darwin-recipe.yaml`, the recipe that reproduces it.

CLI: `python -m darwin_core merge RECIPE.yaml --out DIR [--device cuda] [--overwrite]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.merge.apply import merge_tensors
from darwin_core.recipe import RECIPE_FILE, ParentRef, Recipe

# Files a model folder carries besides its weights; copied from the father when present.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
)
DEFAULT_SHARD_BYTES = 5 * 10**9


def local_folder(ref: ParentRef, who: str) -> Path:
    """The local folder of a parent: its `path`, else the Hub (cache first, download when online).

    Downloads use `darwin_core.hub` (weights, config and tokenizer files only) with the `HF_TOKEN` of the
    environment, passed explicitly; this is the command-line path (`merge RECIPE.yaml`), never a Space visitor's.
    """
    if ref.path:
        path = Path(ref.path)
        if not path.is_dir():
            raise DarwinError(f"The {who} folder {path} does not exist.")
        return path
    from darwin_core.hub import download, resolve_model

    token = os.environ.get("HF_TOKEN") or None
    resolved = resolve_model(ref.label(), local_mode=False, token=token)
    if resolved.folder is None:
        resolved = download(resolved, token=token)
    return Path(resolved.folder)


def _config_text(father: Path, dtype: str | None) -> str | None:
    """The father's config.json, with its dtype fields set to the child's dtype when the recipe fixes one."""
    path = father / "config.json"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if dtype is None:
        return text
    config = json.loads(text)

    def set_dtype(node: dict) -> None:
        for key in ("dtype", "torch_dtype"):
            if key in node:
                node[key] = dtype
        for value in node.values():
            if isinstance(value, dict):
                set_dtype(value)

    set_dtype(config)
    if "dtype" not in config and "torch_dtype" not in config:
        config["dtype"] = dtype
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def merge_to_disk(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write the child of `recipe` to `out_dir` (complete, or not at all) and return its path."""
    from darwin_core.tensors import ShardedWriter, TensorReader

    father_dir = local_folder(recipe.father, "father")
    mother_dir = local_folder(recipe.mother, "mother")
    father = TensorReader(father_dir)
    mother = TensorReader(mother_dir)
    base = None
    if recipe.base != "father":
        base = TensorReader(local_folder(recipe.base, "base model"))
    missing = [name for name in father.names if name not in mother]
    if missing:
        raise DarwinError(
            f"The mother has no tensor {missing[0]} (and {len(missing) - 1} more missing); "
            "the parents do not have the same architecture."
        )
    config = _config_text(father_dir, recipe.dtype)
    with ShardedWriter(out_dir, max_shard_bytes=max_shard_bytes, overwrite=overwrite) as writer:
        for name, tensor in merge_tensors(recipe, father, mother, father.names, device=device, base=base):
            writer.add(name, tensor)
        if config is not None:
            writer.write_text("config.json", config)
        for file in SIDE_FILES:
            if (father_dir / file).is_file():
                writer.copy_file(father_dir / file)
        writer.write_text(RECIPE_FILE, recipe.to_yaml())
    return Path(out_dir)


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
