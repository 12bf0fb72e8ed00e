"""A recipe's plans as columns (`recipe.columns`) are `paired_plan` tensor by tensor, and their change check finds
exactly the tensors whose plans differ between two recipes (what the resident child rewrites)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from darwin_core.genome.spaces import get_space
from darwin_core.merge.methods.apply import paired_plan
from darwin_core.merge.methods.registry import PlanSource
from darwin_core.recipe import ParentRef, Recipe, density_table, ratio_table
from darwin_core.recipe.columns import TensorIndex, plan_columns

LAYERS = 4
NAMES = ["model.embed_tokens.weight", *[f"model.layers.{layer}.{part}.weight" for layer in range(LAYERS) for part in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.q_norm", "mlp.gate_proj", "mlp.down_proj", "input_layernorm")],
    "model.norm.weight", "lm_head.weight", "model.visual.blocks.0.attn.qkv.weight", "model.visual.merger.mlp.0.weight"]
FATHER, MOTHER = ParentRef("tests/father"), ParentRef("tests/mother")
SOURCES = {None: PlanSource.MERGED, "father": PlanSource.FATHER, "mother": PlanSource.MOTHER}


def _recipes() -> list[Recipe]:
    """Recipes that reach every branch of a plan: genome spaces (with MRI overrides, frozen layers, transplant
    thresholds), methods with and without mask seeds, a common ancestor, negation, a child dtype."""
    rng = np.random.default_rng(11)
    v6 = get_space("darwin-v6")
    low, high = v6.bounds
    mri = {name: float(rng.random()) for name in NAMES[::3]}
    made = []
    for method in ("dare_ties", "linear", "ties", "della"):
        genome = [float(rng.uniform(lo, hi)) for lo, hi in zip(low, high)]
        made.append(v6.to_recipe(genome, father=FATHER, mother=MOTHER, layer_count=LAYERS, method=method,
                                 mri_ratios=mri, frozen_layers=(2,), dtype="bfloat16"))
    per_layer = get_space("per-layer-ffn", layer_count=LAYERS)
    made.append(per_layer.to_recipe([0.0, 0.3, 1.0, 0.6], father=FATHER, mother=MOTHER, layer_count=LAYERS,
                                    method="dare_ties"))
    made.append(Recipe(father=FATHER, mother=MOTHER, method="dare_ties", base=ParentRef("tests/base"),
                       ratios=ratio_table(0.4, layers={1: {"attn": 0.9}}, tensors={NAMES[3]: 0.05}),
                       densities=density_table((0.7, 0.5), roles={"ffn": (0.3, 0.9)}), transplant=(0.1, 0.8),
                       negate="mother", scale=0.5, rescale=False))
    return made


def _expected_row(recipe, name, pairing):
    plan, _ = paired_plan(recipe, name, pairing)
    params = plan.params
    return (SOURCES[plan.source], params.ratio, params.density_father, params.density_mother, *params.mask_seeds)


@pytest.mark.parametrize("pairing", [None, {name: (None if k % 5 == 2 else "m." + name) for k, name in enumerate(NAMES)}])
def test_each_row_of_the_columns_is_the_paired_plan_of_its_tensor(pairing):
    index = TensorIndex.of(NAMES, pairing)
    for recipe in _recipes():
        for start, stop in ((0, len(NAMES)), (3, 11), (11, 11)):
            columns = plan_columns(recipe, index, start, stop)
            assert len(columns) == stop - start
            got = list(zip(columns.source.tolist(), columns.ratio.tolist(), columns.density_father.tolist(),
                           columns.density_mother.tolist(), columns.seed_father.tolist(), columns.seed_mother.tolist()))
            assert got == [_expected_row(recipe, name, pairing) for name in NAMES[start:stop]], recipe.method
            merged = [name for name in NAMES[start:stop] if paired_plan(recipe, name, pairing)[0].source is None]
            for name in merged:
                assert replace(paired_plan(recipe, name, pairing)[0].params, ratio=0.0, density_father=1.0,
                               density_mother=1.0, mask_seeds=(0, 1)) == columns.shared
    assert plan_columns(_recipes()[0], index).source.tolist().count(PlanSource.MERGED) > 0


def _plan_key(recipe, name):
    """What a tensor's bytes depend on, from its plan: what the change check must compare."""
    plan, _ = paired_plan(recipe, name, None)
    if plan.source is not None:
        return plan.source, recipe.torch_dtype
    return None, recipe.method, str(recipe.base), recipe.method_weight, recipe.torch_dtype, plan.params


def test_the_change_check_finds_exactly_the_tensors_whose_plans_differ():
    index = TensorIndex.of(NAMES)
    space = get_space("per-layer", layer_count=LAYERS)
    genomes = [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, 0.9, 0.5, 0.0], [0.5, 0.9, 0.5, 0.0]]
    recipes = [space.to_recipe(g, father=FATHER, mother=MOTHER, layer_count=LAYERS, method="linear") for g in genomes]
    recipes[3] = replace(recipes[3], dtype="float16")
    recipes += _recipes()
    for before, after in zip(recipes, recipes[1:]):
        changed = plan_columns(after, index).changed(plan_columns(before, index))
        expected = [_plan_key(after, name) != _plan_key(before, name) for name in NAMES]
        assert changed.tolist() == expected
    assert not plan_columns(recipes[1], index).changed(plan_columns(recipes[0], index)).any()
    assert plan_columns(recipes[0], index).changed(None).all()
    other = TensorIndex.of(NAMES)  # another index (another pairing): nothing is known to be held
    assert plan_columns(recipes[1], other).changed(plan_columns(recipes[0], index)).all()
    assert plan_columns(recipes[1], index, 2).changed(plan_columns(recipes[0], index)).all()  # other rows
