"""What the card shows of a child's recipe: the fields that decide its bytes, and nothing that has none.

A recipe is written for every model it could be applied to, so a good part of it may never be read for this
child: per-layer ratios of (layer, role) pairs whose every tensor the per-tensor table (an MRI prescription)
overrides, rows for MoE roles (experts, router, shared expert) or linear attention in a dense model, densities
for a method that ignores them (or the father's density when the father is the base: he has no task vector),
normalize/rescale/scale for a method without those options, and the seed where no DARE mask is drawn. The card
shows what this child's tensors actually read (`recipe_view`), found by walking the child's tensor names
through the same lookups `Recipe.plan_for` makes (`recipe_use`).

Likewise a genome dimension can have no effect at this depth (`effective_genome`): a darwin-v6 block that holds
no layer of a 4-layer model, density_a/density_b under a method that ignores densities, mri_trust without an
MRI prescription, merge_method_weight for a method that never blends; the per-layer spaces' frozen layers.
The rules follow `darwin_core/genome/spaces.py` (`GENOME_TABLE_MD`) and the methods' declared `parameters`.

For a cross-architecture FFN pair the view also carries the layer map (`layer_map_of`): which mother layer each
father layer's FFN was bred with, and the layers kept as the father's with the reason, read from the parents'
headers through the same pairing the merge used (`darwin_core.merge.pairing`).

The view is a reading aid, not a second recipe: pruning changes the recipe hash, which seeds the DARE masks, so
the hash the card cites and the recipe that re-merges the child stay `darwin-recipe.yaml`'s, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from darwin_core.genome.spaces import ATTN_ROLES, EMBED_ROLES, FFN_ROLES, V6_BLOCKS, block_of
from darwin_core.io.reader import TensorReader
from darwin_core.merge.methods.registry import get_method
from darwin_core.parents.anatomy import classify
from darwin_core.parents.compatibility import PairingMode
from darwin_core.recipe.recipe import METHOD_OPTIONS
from darwin_core.recipe.tables import ANY_ROLE, ParamTable

if TYPE_CHECKING:
    from darwin_core.recipe import Recipe

TableKey = tuple  # ("default",) | ("roles", role) | ("layers", layer, role or "*") | ("tensors", name)
_SECTIONS = ("default", "roles", "layers", "tensors")
_DTYPE_NULL_NOTE = "dtype: null  # every tensor keeps the father's dtype"


@dataclass(frozen=True)
class RatioRead:
    """One language tensor whose ratio decides its bytes: where it sits and whether the per-tensor table set it."""

    layer: int | None
    role: str
    from_tensor_table: bool


@dataclass
class RecipeUse:
    """Which entries of a recipe the tensors of one model read (see `recipe_use`)."""

    ratio_keys: set[TableKey] = field(default_factory=set)
    density_keys: set[TableKey] = field(default_factory=set)
    ratio_reads: list[RatioRead] = field(default_factory=list)
    density_father: bool = False
    density_mother: bool = False
    merged: int = 0  # tensors the method computes (not copied from a parent)
    masks: bool = False  # DARE masks are drawn: the recipe hash, hence the seed, decides bytes
    frozen_present: set[int] = field(default_factory=set)
    layer_count: int = 0  # decoder layers of the model (highest layer index + 1)


def table_key(table: ParamTable, name: str, layer: int | None, role: str) -> TableKey:
    """The entry `ParamTable.lookup` reads for this tensor (same order: tensor, layer+role, layer, role, default)."""
    if name in table.tensors:
        return ("tensors", name)
    if layer is not None and layer in table.layers:
        row = table.layers[layer]
        if role in row:
            return ("layers", layer, role)
        if ANY_ROLE in row:
            return ("layers", layer, ANY_ROLE)
    if role in table.roles:
        return ("roles", role)
    return ("default",)


def _value_at(table: ParamTable, key: TableKey) -> Any:
    if key[0] == "default":
        return table.default
    if key[0] == "layers":
        return table.layers[key[1]][key[2]]
    return getattr(table, key[0])[key[1]]


def pruned_table(table: ParamTable, keys: Iterable[TableKey], shown=lambda value: value) -> dict[str, Any]:
    """The entries of `table` named by `keys`, in the recipe's layout (default, roles, layers, tensors)."""
    doc: dict[str, Any] = {}
    for key in sorted(keys, key=lambda k: (_SECTIONS.index(k[0]), *map(str, k[1:]))):
        value = shown(_value_at(table, key))
        if key[0] == "default":
            doc["default"] = value
        elif key[0] == "layers":
            doc.setdefault("layers", {}).setdefault(key[1], {})[key[2]] = value
        else:
            doc.setdefault(key[0], {})[key[1]] = value
    if "layers" in doc:
        doc["layers"] = dict(sorted(doc["layers"].items()))
    return {section: doc[section] for section in _SECTIONS if section in doc}


def recipe_use(recipe: Recipe, names: Iterable[str]) -> RecipeUse:
    """Walk the model's tensor names through the recipe's lookups and record every entry a tensor reads.

    For a cross-architecture FFN pair only the tensors the pairing breeds read the recipe (`_unpaired`): the
    attention, norms, embeddings and the kept layers are the father's whatever their ratio says, so the view
    never shows a ratio (or suggests a whole-model merge) that the pairing ignores."""
    method = get_method(recipe.method)
    unpaired = _unpaired(recipe)
    base_is_father = recipe.base == "father"
    blend = recipe.method_weight < 1.0 and method.blends_with_linear
    ratio_decides = "ratio" in method.parameters or blend or recipe.transplant is not None
    use = RecipeUse()
    for name in names:
        role = classify(name)
        if role.layer is not None:
            use.layer_count = max(use.layer_count, role.layer + 1)
        if role.tower != "language" or name in unpaired:
            continue  # non-language towers (and what an FFN-only pairing does not breed) are the father's
        if role.layer is not None and role.layer in recipe.frozen_layers:
            use.frozen_present.add(role.layer)
            continue
        plan = recipe.plan_for(name)
        if ratio_decides:
            key = table_key(recipe.ratios, name, role.layer, role.role)
            use.ratio_keys.add(key)
            use.ratio_reads.append(RatioRead(role.layer, role.role, key[0] == "tensors"))
        if plan.source is not None:
            continue  # transplanted: one parent's tensor as is
        use.merged += 1
        if method.uses_density:
            use.density_keys.add(table_key(recipe.densities, name, role.layer, role.role))
            use.density_mother = True
            use.density_father |= not base_is_father
            applied = [plan.params.density_mother] + ([] if base_is_father else [plan.params.density_father])
            use.masks |= method.random_masks and min(applied) < 1.0
    return use


def _unpaired(recipe: Recipe) -> set[str]:
    """The father's tensors an FFN-only pairing keeps as they are (no mother tensor to meet); empty for other
    pairs, or when the parents' folders are not on this machine to read."""
    from darwin_core.errors import DarwinError
    from darwin_core.merge.pairing import pairing_for, resolved_folders

    folders = [recipe.father.path, recipe.mother.path]
    if not all(folder and Path(folder).is_dir() for folder in folders):
        return set()
    try:
        pairing = pairing_for(*resolved_folders(*folders), recipe.layer_map)
    except DarwinError:
        return set()
    if pairing.mode != PairingMode.FFN_ONLY or pairing.names is None:
        return set()
    return {name for name, other in pairing.names.items() if other is None}


def _public_parent(ref: Any) -> dict[str, Any]:
    return ref.public().to_dict()


def _merge_options(recipe: Recipe, use: RecipeUse) -> dict[str, Any]:
    """The method's options this child's merged tensors read, with None resolved to the method's default."""
    method = get_method(recipe.method)
    options: dict[str, Any] = {}
    if not use.merged:
        return options
    for option, default in (("normalize", method.default_normalize), ("rescale", method.default_rescale)):
        if option in method.parameters:
            value = getattr(recipe, option)
            options[option] = default if value is None else value
    if "scale" in method.parameters:
        options["scale"] = recipe.scale
    if recipe.method_weight < 1.0 and method.blends_with_linear:
        options["method_weight"] = recipe.method_weight
    for option in METHOD_OPTIONS:  # breadcrumbs' gamma, DELLA's epsilon, SCE's select_topk: set and read
        if getattr(recipe, option) is not None and option in method.parameters:
            options[option] = getattr(recipe, option)
    if recipe.negate is not None:
        options["negate"] = recipe.negate
    return options


def recipe_view(recipe: Recipe, use: RecipeUse) -> dict[str, Any]:
    """The recipe's fields and table entries that decide this child's bytes, in the recipe's own layout."""
    method = get_method(recipe.method)
    view: dict[str, Any] = {"father": _public_parent(recipe.father), "mother": _public_parent(recipe.mother)}
    if method.delta:
        view["base"] = "father" if recipe.base == "father" else _public_parent(recipe.base)
    view["method"] = recipe.method
    view["dtype"] = recipe.dtype
    if use.masks:
        view["seed"] = recipe.seed
    if use.ratio_keys:
        view["ratios"] = pruned_table(recipe.ratios, use.ratio_keys)
    if use.density_keys:
        def shown(pair: tuple[float, float]) -> dict[str, float]:
            return {"father": pair[0], "mother": pair[1]} if use.density_father else {"mother": pair[1]}

        view["densities"] = pruned_table(recipe.densities, use.density_keys, shown)
    if recipe.transplant is not None and use.ratio_keys:
        view["transplant"] = list(recipe.transplant)
    if use.frozen_present:
        view["frozen_layers"] = sorted(use.frozen_present)
    view.update(_merge_options(recipe, use))
    rows = layer_map_of(recipe)
    if rows:
        view["layer_map"] = {row["father_layer"]: row["mother_layer"] for row in rows if row["bred"]}
        kept = {row["father_layer"]: row["why"] for row in rows if not row["bred"]}
        if kept:
            view["father_ffn_layers"] = kept
    return view


def layer_map_of(recipe: Recipe) -> list[dict[str, Any]]:
    """The layer map of an FFN-only pair (`darwin_core.merge.pairing.layer_rows`), from the parents' folders on
    this machine; empty for other pairs, or when the parents' folders are not here to read."""
    from darwin_core.errors import DarwinError
    from darwin_core.merge.pairing import layer_map_rows, resolved_folders

    folders = [recipe.father.path, recipe.mother.path]
    if not all(folder and Path(folder).is_dir() for folder in folders):
        return []
    try:
        father, mother = resolved_folders(*folders)
        return layer_map_rows(father, mother, recipe.layer_map, recipe.frozen_layers)
    except DarwinError:
        return []


def layer_map_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The layer map as a markdown table (the card, `merge`'s output): one row per father layer, the mother
    layer whose FFN it was bred with, or "kept (the father's)" and why. Empty for pairs without a layer map."""
    rows = list(rows)
    if not rows:
        return ""
    lines = ["| father layer | mother layer | FFN |", "|---:|---:|---|"]
    for row in rows:
        bred = "bred" if row["bred"] else f"kept (the father's): {row['why']}"
        lines.append(f"| {row['father_layer']} | {row['mother_layer']} | {bred} |")
    return "\n".join(lines) + "\n"


def kept_layers_sentence(rows: Iterable[Mapping[str, Any]]) -> str:
    """One sentence naming the father layers whose FFN stayed his (empty when every layer was bred)."""
    kept = [row for row in rows if not row["bred"]]
    if not kept:
        return ""
    shown = "; ".join(f"layer {row['father_layer']} ({row['why']})" for row in kept)
    return f"Kept as the father's: {shown}."


def view_yaml(view: Mapping[str, Any]) -> str:
    """The view as YAML, in the recipe file's style (a child dtype of null explained where it stands)."""
    text = yaml.safe_dump(dict(view), sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    return "\n".join(_DTYPE_NULL_NOTE if line == "dtype: null" else line for line in text.splitlines()) + "\n"


def child_tensor_names(child: str | Path) -> list[str]:
    """The child's tensor names, from its safetensors headers only (nothing is loaded)."""
    reader = TensorReader(child)
    try:
        return reader.names
    finally:
        reader.close()


# --------------------------------------------------------------------------------------------- the genome


def _genome_roles(use: RecipeUse, trust: float | None) -> list[RatioRead]:
    """The ratio reads the genome's ratio dimensions decide: all but those the MRI table sets at full trust."""
    return [r for r in use.ratio_reads if not (r.from_tensor_table and trust is not None and trust >= 1.0)]


def _v6_effects(values: Mapping[str, float], recipe: Recipe, use: RecipeUse) -> dict[str, bool]:
    reads = _genome_roles(use, values.get("mri_trust"))
    roles = {r.role for r in reads}
    blocks = {block_of(r.layer, use.layer_count, V6_BLOCKS) for r in reads if r.layer is not None}
    effects = {
        "global_ratio": bool(reads),
        "attn_ratio": bool(roles & set(ATTN_ROLES)),
        "ffn_ratio": bool(roles & set(FFN_ROLES)),
        "embed_ratio": bool(roles & set(EMBED_ROLES)),
        "density_a": use.density_father,
        "density_b": use.density_mother,
        "mri_trust": any(r.from_tensor_table for r in use.ratio_reads),
        "merge_method_weight": use.merged > 0 and get_method(recipe.method).blends_with_linear,
    }
    effects.update({f"block_{b}": b in blocks for b in range(V6_BLOCKS)})
    return effects


def _layer_effects(names: Iterable[str], use: RecipeUse, *, ffn_only: bool) -> dict[str, bool]:
    layers = {r.layer for r in use.ratio_reads if r.layer is not None and (not ffn_only or r.role in FFN_ROLES)}
    return {name: int(name.rsplit("_", 1)[1]) in layers for name in names}


def _block_role_effects(names: list[str], use: RecipeUse) -> dict[str, bool]:
    blocks = len(names) // 2
    attn, ffn = set(), set()
    for read in use.ratio_reads:
        if read.layer is None:
            continue
        block = block_of(read.layer, use.layer_count, blocks)
        if read.role not in FFN_ROLES:
            attn.add(block)  # attention tensors, and norms (the mean of both dimensions)
        if read.role not in ATTN_ROLES:
            ffn.add(block)
    return {name: int(name.split("_")[1]) in (attn if name.endswith("_attn") else ffn) for name in names}


def effective_genome(recipe: Recipe, use: RecipeUse) -> tuple[list[tuple[str, float]], int]:
    """(the genome's dimensions that have an effect on this child, how many were left out).

    A space this module does not know keeps every dimension: nothing is hidden that might matter.
    """
    if recipe.genome is None:
        return [], 0
    values = recipe.genome.as_dict()
    names = list(values)
    space = recipe.genome.space
    if space == "darwin-v6":
        effects = _v6_effects(values, recipe, use)
    elif space in ("per-layer", "per-layer-ffn"):
        effects = _layer_effects(names, use, ffn_only=space == "per-layer-ffn")
    elif space == "per-block-role":
        effects = _block_role_effects(names, use)
    else:
        effects = {}
    shown = [(name, value) for name, value in values.items() if effects.get(name, True)]
    return shown, len(values) - len(shown)
