"""Recipe: YAML round trip, stable hash, per-tensor lookup, validation, mergekit export."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from darwin_core.merge.mergekit_export import mergekit_yaml
from darwin_core.errors import DarwinError
from darwin_core.recipe import GenomeRecord, ParentRef, Recipe, load_recipe, recipe_hash


def full_recipe(**overrides) -> Recipe:
    fields = dict(
        father=ParentRef("org/father", "a" * 40, "/models/father"),
        mother=ParentRef("org/mother", "b" * 40),
        method="dare_ties",
        base={"id": "org/base", "revision": "c" * 40},
        ratios={
            "default": 0.5,
            "roles": {"embed": 0.61, "lm_head": 0.62},
            "layers": {0: {"attn": 0.2, "ffn": 0.9, "*": 0.45}, 3: {"*": 0.1}},
            "tensors": {"model.layers.0.mlp.up_proj.weight": 0.123456789012345},
        },
        densities={"default": [0.9951, 0.9617], "layers": {2: {"ffn": [0.5, 0.4]}}},
        transplant=(0.15, 0.85),
        frozen_layers=[5, 4],
        dtype="bfloat16",
        seed=7,
        scale=1.0,
        method_weight=0.3623,
        genome=GenomeRecord("darwin-v6", ("global_ratio", "attn_ratio"), (0.4989, 0.1766)),
        notes="bred in a test",
    )
    fields.update(overrides)
    return Recipe(**fields)


def test_yaml_round_trip_is_exact(tmp_path):
    recipe = full_recipe()
    path = recipe.save(tmp_path / "r.yaml")
    loaded = load_recipe(path)
    assert loaded == recipe
    assert loaded.to_yaml() == recipe.to_yaml()
    assert loaded.ratios.tensors["model.layers.0.mlp.up_proj.weight"] == 0.123456789012345
    assert loaded.recipe_hash == recipe.recipe_hash


def test_yaml_is_readable_and_names_what_matters():
    doc = yaml.safe_load(full_recipe().to_yaml())
    assert doc["father"] == {"id": "org/father", "revision": "a" * 40, "path": "/models/father"}
    assert doc["ratios"]["layers"][0] == {"*": 0.45, "attn": 0.2, "ffn": 0.9}
    assert doc["densities"]["default"] == [0.9951, 0.9617]
    assert doc["transplant"] == [0.15, 0.85] and doc["frozen_layers"] == [4, 5]
    assert doc["genome"] == {"space": "darwin-v6", "values": {"global_ratio": 0.4989, "attn_ratio": 0.1766}}


def test_recipe_hash_is_stable_and_ignores_cosmetic_fields():
    recipe = full_recipe()
    # a golden value: changing it means every published child's genome_hash changes; do it only on purpose
    assert recipe.recipe_hash == recipe_hash(recipe)
    assert len(recipe.recipe_hash) == 64
    cosmetic = full_recipe(
        father=ParentRef("org/father", "a" * 40, "/elsewhere/father"), genome=None, notes=None
    )
    assert cosmetic.recipe_hash == recipe.recipe_hash
    assert full_recipe(frozen_layers=[4, 5, 5]).recipe_hash == recipe.recipe_hash
    for change in (dict(seed=8), dict(method="dare_linear"), dict(dtype="float32"), dict(transplant=None),
                   dict(ratios=0.5), dict(mother="org/mother@" + "d" * 40), dict(method_weight=1.0)):
        assert full_recipe(**change).recipe_hash != recipe.recipe_hash, change


def test_golden_hash_of_a_minimal_recipe():
    recipe = Recipe(father="org/a@" + "1" * 40, mother="org/b@" + "2" * 40, method="linear", ratios=0.5)
    assert recipe.recipe_hash == "699087522ccd5665d99ccce8c32f23ca33324a05986d85345bb4b9408aa5438b"


def test_lookup_order_frozen_then_tensor_then_layer_role_then_layer_then_role_then_default():
    recipe = full_recipe()
    assert recipe.ratio_for("model.layers.4.self_attn.q_proj.weight") == 0.0  # frozen
    assert recipe.ratio_for("model.layers.0.mlp.up_proj.weight") == 0.123456789012345  # tensor override
    assert recipe.ratio_for("model.layers.0.mlp.down_proj.weight") == 0.9  # layer 0 ffn
    assert recipe.ratio_for("model.layers.0.self_attn.k_proj.weight") == 0.2  # layer 0 attn
    assert recipe.ratio_for("model.layers.0.input_layernorm.weight") == 0.45  # layer 0 '*'
    assert recipe.ratio_for("model.layers.3.mlp.up_proj.weight") == 0.1  # layer 3 '*'
    assert recipe.ratio_for("model.embed_tokens.weight") == 0.61  # role
    assert recipe.ratio_for("lm_head.weight") == 0.62
    assert recipe.ratio_for("model.layers.1.mlp.up_proj.weight") == 0.5  # default
    assert recipe.densities_for("model.layers.2.mlp.up_proj.weight") == (0.5, 0.4)
    assert recipe.densities_for("model.layers.2.self_attn.q_proj.weight") == (0.9951, 0.9617)


def test_plan_applies_transplant_thresholds_and_towers():
    recipe = full_recipe()
    assert recipe.plan_for("model.layers.3.mlp.up_proj.weight").source == "father"  # 0.1 < 0.15
    assert recipe.plan_for("model.layers.0.mlp.down_proj.weight").source == "mother"  # 0.9 > 0.85
    assert recipe.plan_for("model.layers.1.mlp.up_proj.weight").source is None
    assert recipe.plan_for("model.layers.4.mlp.up_proj.weight").source == "father"  # frozen
    vision = recipe.plan_for("model.vision_tower.encoder.layers.0.mlp.fc1.weight")
    assert vision.source == "father" and vision.keep_dtype
    plan = recipe.plan_for("model.layers.1.mlp.up_proj.weight")
    assert plan.params.density_father == 0.9951 and plan.params.density_mother == 0.9617
    assert plan.params.mask_seeds[0] != plan.params.mask_seeds[1]
    assert plan.params.mask_seeds == recipe.plan_for("model.layers.1.mlp.up_proj.weight").params.mask_seeds


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(ratios=1.5), "between 0 and 1"),
        (dict(ratios={"default": 0.5, "roles": {"mlp": 0.3}}), "Unknown tensor role 'mlp'"),
        (dict(densities={"default": [0.5]}), "pair"),
        (dict(method="frankenmerge"), "Unknown merge method"),
        (dict(method="linear"), "does not use a base model"),
        (dict(transplant=(0.9, 0.1)), "low ≤ high"),
        (dict(dtype="int8"), "dtype must be one of"),
        (dict(frozen_layers=["x"]), "Frozen layers"),
        (dict(seed=1.5), "seed must be an integer"),
    ],
)
def test_bad_recipes_are_refused_with_one_sentence(change, message):
    with pytest.raises(DarwinError, match=message):
        full_recipe(**change)


def test_unknown_yaml_fields_and_format_are_refused():
    doc = yaml.safe_load(full_recipe().to_yaml())
    with pytest.raises(DarwinError, match="unknown fields: colour"):
        Recipe.from_dict({**doc, "colour": "blue"})
    with pytest.raises(DarwinError, match="format"):
        Recipe.from_dict({**doc, "format": "darwin-recipe/99"})
    with pytest.raises(DarwinError, match="not valid YAML"):
        Recipe.from_yaml("father: [unclosed")


def test_minimal_yaml_gets_defaults():
    recipe = Recipe.from_yaml("father: org/a\nmother: org/b\n")
    assert recipe.method == "linear" and recipe.ratios.default == 0.5 and recipe.densities.default == (1.0, 1.0)
    assert recipe.transplant is None and recipe.base == "father"


# -- mergekit export --------------------------------------------------------------------------------------------

NAMES = [
    "model.embed_tokens.weight",
    *(f"model.layers.{i}.{part}" for i in range(12) for part in (
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight")),
    "model.norm.weight",
    "lm_head.weight",
]


def _replay(setting, name):
    """mergekit's own filter evaluation (config.evaluate_setting)."""
    config = pytest.importorskip("mergekit.config")
    if isinstance(setting, list):
        setting = [config.ConditionalParameter(**cond) for cond in setting]
    return config.evaluate_setting(name, setting, 0, validate=float)


def test_mergekit_export_reproduces_every_tensor_parameter_through_filters():
    recipe = Recipe(
        father=ParentRef("org/f", path="/p/f"), mother=ParentRef("org/m", path="/p/m"), method="ties",
        ratios={"default": 0.4, "roles": {"embed": 0.7},
                "layers": {1: {"attn": 0.9}, 11: {"*": 0.2}, 10: {"ffn": 0.3}},
                "tensors": {"model.layers.1.self_attn.k_proj.weight": 0.55}},
        densities={"default": [1.0, 0.6], "layers": {2: {"*": [1.0, 0.3]}}},
        transplant=(0.1, 0.95), frozen_layers=[3], normalize=False,
    )
    config = yaml.safe_load(mergekit_yaml(recipe, NAMES, father_dtype="bfloat16"))
    assert config["merge_method"] == "ties" and config["base_model"] == "/p/f"
    assert config["dtype"] == "float32" and config["out_dtype"] == "bfloat16"
    assert config["parameters"]["normalize"] is False
    father, mother = config["models"]
    assert "parameters" not in father  # base = father: mergekit ignores the father's weight/density
    for name in NAMES:
        plan = recipe.plan_for(name)
        want = {None: plan.params.ratio, "father": 0.0, "mother": 1.0}[plan.source]
        assert _replay(mother["parameters"]["weight"], name) == pytest.approx(want), name
        want_density = 1.0 if plan.source else plan.params.density_mother
        assert _replay(mother["parameters"]["density"], name) == pytest.approx(want_density), name
    assert any(c.get("filter") == "model.layers.1.self_attn.k_proj.weight" for c in mother["parameters"]["weight"])


def test_mergekit_export_says_why_not_when_it_cannot():
    recipe = Recipe(father="org/f", mother="org/m", method="dare_ties", method_weight=0.36)
    with pytest.raises(DarwinError, match="method_weight 0.36 blends dare_ties with linear interpolation"):
        mergekit_yaml(recipe, NAMES, father_dtype="float32")
    with pytest.raises(DarwinError, match="needs the father's tensor names"):
        mergekit_yaml(Recipe(father="org/f", mother="org/m"))
    moe = [f"model.layers.0.mlp.experts.{e}.up_proj.weight" for e in range(2)]
    per_expert = Recipe(father="org/f", mother="org/m", ratios={"default": 0.5, "tensors": {moe[0]: 0.3}})
    with pytest.raises(DarwinError, match="fused tensor"):
        mergekit_yaml(per_expert, moe, father_dtype="float32")


def test_mergekit_export_warns_in_the_yaml_that_dare_masks_differ():
    recipe = Recipe(father="org/f", mother="org/m", method="dare_ties", densities={"default": [1.0, 0.5]})
    text = mergekit_yaml(recipe, NAMES, father_dtype="float32")
    assert "DARE masks differ" in text
    assert "DARE masks differ" not in mergekit_yaml(
        Recipe(father="org/f", mother="org/m", method="dare_ties"), NAMES, father_dtype="float32")


def test_dataclass_replace_gives_a_new_hash():
    recipe = full_recipe()
    assert dataclasses.replace(recipe, seed=99).recipe_hash != recipe.recipe_hash
