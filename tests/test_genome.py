"""Genome spaces: each dimension does what GENOME_TABLE_MD says it does."""

from __future__ import annotations

import pytest

from darwin_core.errors import DarwinError
from darwin_core.genome.spaces import GENOME_TABLE_MD, SPACE_NAMES, block_of, default_method, get_space, odds_combine

L = 12  # layers: blocks of darwin-v6 are layers {0,1}, {2,3}, ... {10,11}
SEED_002 = [0.4989, 0.1766, 0.9021, 0.6122, 0.9951, 0.9617, 0.5740, 0.5811, 0.5736, 0.4697, 0.4930, 0.8418,
            0.4907, 0.3623]
ATTN = "model.layers.{}.self_attn.q_proj.weight"
LINEAR_ATTN = "model.layers.{}.linear_attn.in_proj_qkvz.weight"
FFN = "model.layers.{}.mlp.up_proj.weight"
EXPERT = "model.layers.{}.mlp.experts.3.down_proj.weight"
ROUTER = "model.layers.{}.mlp.gate.weight"
NORM = "model.layers.{}.input_layernorm.weight"
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
FINAL_NORM = "model.norm.weight"


def v6(**values):
    space = get_space("darwin-v6")
    vector = space.default()
    for key, value in values.items():
        vector[space.names.index(key)] = value
    return vector


def recipe(space_name="darwin-v6", vector=None, **kw):
    space = get_space(space_name, layer_count=L)
    kw.setdefault("method", "dare_ties")
    return space.to_recipe(vector if vector is not None else space.default(), father="org/f", mother="org/m",
                           layer_count=L, **kw)


def all_names():
    names = [EMBED, HEAD, FINAL_NORM]
    for i in range(L):
        names += [t.format(i) for t in (ATTN, LINEAR_ATTN, FFN, EXPERT, ROUTER, NORM)]
    return names


def test_darwin_v6_has_the_14_dimensions_of_seed_002_in_order():
    space = get_space("darwin-v6")
    assert space.dim == 14
    assert space.names == ["global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio", "density_a", "density_b",
                           "block_0", "block_1", "block_2", "block_3", "block_4", "block_5", "mri_trust",
                           "merge_method_weight"]
    low, high = space.bounds
    assert len(low) == len(high) == 14 and all(lo < hi for lo, hi in zip(low, high))
    assert space.check(SEED_002) == SEED_002


def test_default_genome_is_a_uniform_half_half_merge():
    r = recipe()
    assert {r.ratio_for(n) for n in all_names()} == {0.5}
    assert r.densities.default == (1.0, 1.0) and r.method_weight == 1.0 and r.transplant == (0.15, 0.85)


def test_global_ratio_alone_sets_every_tensor():
    r = recipe(vector=v6(global_ratio=0.3))
    assert {r.ratio_for(n) for n in all_names()} == {0.3}


def test_attn_ratio_moves_attention_and_linear_attention_only():
    r = recipe(vector=v6(attn_ratio=0.2))
    for i in range(L):
        assert r.ratio_for(ATTN.format(i)) == 0.2 and r.ratio_for(LINEAR_ATTN.format(i)) == 0.2
        assert r.ratio_for(FFN.format(i)) == 0.5 and r.ratio_for(NORM.format(i)) == 0.5
    assert r.ratio_for(EMBED) == 0.5


def test_ffn_ratio_moves_ffn_experts_and_router_only():
    r = recipe(vector=v6(ffn_ratio=0.8))
    for i in range(L):
        assert r.ratio_for(FFN.format(i)) == r.ratio_for(EXPERT.format(i)) == r.ratio_for(ROUTER.format(i)) == 0.8
        assert r.ratio_for(ATTN.format(i)) == 0.5
    assert r.ratio_for(FINAL_NORM) == 0.5


def test_embed_ratio_moves_embeddings_and_lm_head_only():
    r = recipe(vector=v6(embed_ratio=0.7))
    assert r.ratio_for(EMBED) == r.ratio_for(HEAD) == 0.7
    assert r.ratio_for(FINAL_NORM) == 0.5 and r.ratio_for(FFN.format(0)) == 0.5


@pytest.mark.parametrize("block", range(6))
def test_block_b_moves_only_the_layers_of_that_block(block):
    r = recipe(vector=v6(**{f"block_{block}": 0.9}))
    for i in range(L):
        inside = block_of(i, L, 6) == block
        for template in (ATTN, FFN, NORM, EXPERT):
            assert r.ratio_for(template.format(i)) == (0.9 if inside else 0.5)
    assert r.ratio_for(EMBED) == r.ratio_for(FINAL_NORM) == 0.5


def test_factors_combine_by_multiplying_the_mothers_odds():
    r = recipe(vector=v6(global_ratio=0.6, attn_ratio=0.3, block_5=0.8))
    odds = (0.6 / 0.4) * (0.3 / 0.7) * (0.8 / 0.2)
    assert r.ratio_for(ATTN.format(11)) == pytest.approx(odds / (1 + odds), abs=1e-12)
    assert odds_combine(0.5, 0.5) == 0.5 and odds_combine(0.0) == 0.0 and odds_combine(1.0, 0.5) == 1.0


def test_seed_002_genome_gives_the_numbers_of_the_readme_example():
    space = get_space("darwin-v6")
    r = space.to_recipe(SEED_002, father="f", mother="m", layer_count=42, method="dare_ties")
    assert r.ratio_for(ATTN.format(41)) == pytest.approx(0.53, abs=0.005)
    assert r.ratio_for(FFN.format(41)) == pytest.approx(0.98, abs=0.005)
    assert r.ratio_for(ATTN.format(0)) == pytest.approx(0.22, abs=0.005)
    assert r.plan_for(FFN.format(41)).source == "mother"  # above the 0.85 transplant threshold
    assert "0.53" in GENOME_TABLE_MD and "0.98" in GENOME_TABLE_MD and "0.22" in GENOME_TABLE_MD


def test_densities_go_to_the_recipe_per_parent():
    r = recipe(vector=v6(density_a=0.9, density_b=0.4))
    assert r.densities_for(FFN.format(3)) == (0.9, 0.4)


def test_mri_trust_blends_the_prescription_per_tensor():
    mri = {FFN.format(2): 0.9, ATTN.format(2): 0.1}
    r = recipe(vector=v6(mri_trust=0.25, ffn_ratio=0.3), mri_ratios=mri)
    assert r.ratio_for(FFN.format(2)) == pytest.approx(0.9 * 0.25 + 0.3 * 0.75)
    assert r.ratio_for(ATTN.format(2)) == pytest.approx(0.1 * 0.25 + 0.5 * 0.75)
    assert r.ratio_for(FFN.format(3)) == 0.3  # no MRI ratio for this tensor: the genome's
    full_trust = recipe(vector=v6(mri_trust=1.0), mri_ratios=mri)
    assert full_trust.ratio_for(FFN.format(2)) == 0.9


def test_mri_trust_has_no_effect_without_a_prescription():
    a = recipe(vector=v6(mri_trust=0.1, attn_ratio=0.3))
    b = recipe(vector=v6(mri_trust=0.9, attn_ratio=0.3))
    assert a.recipe_hash == b.recipe_hash  # the genome differs, the child does not


def test_merge_method_weight_becomes_the_recipe_method_weight():
    assert recipe(vector=v6(merge_method_weight=0.36)).method_weight == 0.36


def test_frozen_layers_are_pinned_to_the_father_in_every_space():
    for name in ("darwin-v6", "per-layer", "per-layer-ffn", "per-block-role"):
        space = get_space(name, layer_count=L)
        r = space.to_recipe([space.bounds[1][i] for i in range(space.dim)], father="f", mother="m",
                            layer_count=L, method="linear", frozen_layers=[2, 7])
        assert r.frozen_layers == (2, 7)
        for i in (2, 7):
            assert r.ratio_for(FFN.format(i)) == 0.0 and r.plan_for(FFN.format(i)).source == "father"


def test_per_layer_genome_sets_each_layer_and_keeps_the_rest_fathers():
    space = get_space("per-layer", layer_count=L)
    assert space.dim == L and space.names[0] == "layer_00" and space.names[-1] == "layer_11"
    vector = [i / (L - 1) for i in range(L)]
    r = space.to_recipe(vector, father="f", mother="m", layer_count=L, method="linear", frozen_layers=[5])
    for i in range(L):
        want = 0.0 if i == 5 else vector[i]
        assert r.ratio_for(ATTN.format(i)) == r.ratio_for(FFN.format(i)) == r.ratio_for(NORM.format(i)) == want
    assert r.ratio_for(EMBED) == r.ratio_for(HEAD) == r.ratio_for(FINAL_NORM) == 0.0
    assert r.transplant is None


def test_per_layer_ffn_genome_breeds_only_the_ffn_like_genesis():
    space = get_space("per-layer-ffn", layer_count=L)
    r = space.to_recipe([0.3] * L, father="f", mother="m", layer_count=L, method="linear")
    assert r.ratio_for(FFN.format(4)) == r.ratio_for(EXPERT.format(4)) == 0.3
    assert r.ratio_for(ATTN.format(4)) == r.ratio_for(NORM.format(4)) == 0.0


def test_per_block_role_genome():
    space = get_space("per-block-role")
    assert space.dim == 12 and space.names[:2] == ["block_0_attn", "block_0_ffn"]
    vector = [0.1, 0.9] + [0.5] * 10
    r = space.to_recipe(vector, father="f", mother="m", layer_count=L, method="slerp")
    assert r.ratio_for(ATTN.format(1)) == 0.1 and r.ratio_for(FFN.format(1)) == 0.9
    assert r.ratio_for(NORM.format(1)) == pytest.approx(0.5)
    assert r.ratio_for(ATTN.format(2)) == 0.5 and r.ratio_for(EMBED) == 0.0


def test_to_recipe_is_pure_and_records_the_genome():
    a = recipe(vector=SEED_002)
    b = recipe(vector=list(SEED_002))
    assert a == b and a.recipe_hash == b.recipe_hash
    assert a.genome.space == "darwin-v6" and a.genome.as_dict()["block_5"] == 0.8418


def test_ties_recipes_from_genomes_keep_the_ratio_meaningful():
    assert recipe(method="ties").normalize is False
    assert recipe(method="dare_ties").normalize is None


def test_each_space_names_its_default_method_darwin_v6_the_dare_ties_of_seed_002():
    defaults = {name: default_method(name) for name in SPACE_NAMES}
    assert defaults == {"darwin-v6": "dare_ties", "per-layer": "linear", "per-layer-ffn": "linear",
                        "per-block-role": "linear"}
    assert get_space("darwin-v6").default_method == "dare_ties"
    assert get_space("per-layer", layer_count=L).default_method == "linear"
    with pytest.raises(DarwinError, match="Unknown genome space 'nope'"):
        default_method("nope")


def test_out_of_bounds_and_wrong_length_genomes_are_refused():
    space = get_space("darwin-v6")
    with pytest.raises(DarwinError, match="14 dimensions, got 3"):
        space.to_recipe([0.5] * 3, father="f", mother="m", layer_count=L, method="linear")
    with pytest.raises(DarwinError, match="density_a=0.01 is outside"):
        space.to_recipe(v6(density_a=0.01), father="f", mother="m", layer_count=L, method="linear")
    with pytest.raises(DarwinError, match="Frozen layer 12 does not exist"):
        space.to_recipe(v6(), father="f", mother="m", layer_count=L, method="linear", frozen_layers=[12])
    with pytest.raises(DarwinError, match="layer count"):
        get_space("per-layer")
    with pytest.raises(DarwinError, match="Unknown genome space"):
        get_space("per-neuron")


def test_genome_table_documents_every_dimension():
    for name in get_space("darwin-v6").names:
        assert f"`{name}`" in GENOME_TABLE_MD
    for name in SPACE_NAMES:
        assert f"`{name}`" in GENOME_TABLE_MD


def test_darwin_v6_recipes_keep_the_bytes_they_had_before_the_ratios_were_memoised():
    """Recipe hashes recorded at 782f582 (before `_tables` computed each block and role group's ratio once): random
    genomes without and with an MRI prescription and a frozen layer still give the same recipes."""
    import numpy as np

    from darwin_core.recipe import ParentRef

    space = get_space("darwin-v6")
    low, high = space.bounds
    rng = np.random.default_rng(11)
    roles = ["self_attn.q_proj", "self_attn.k_norm", "mlp.gate_proj", "mlp.experts.3.down_proj", "input_layernorm"]
    names = [f"model.layers.{layer}.{role}.weight" for layer in range(L) for role in roles] + [EMBED, "model.norm.weight", HEAD]
    mri = {name: float(rng.uniform(0.1, 0.9)) for name in names}
    hashes = []
    for k in range(3):
        genome = [float(rng.uniform(a, b)) for a, b in zip(low, high)]
        recipe = space.to_recipe(genome, father=ParentRef("f"), mother=ParentRef("m"), layer_count=L, method="dare_ties",
                                 mri_ratios=mri if k else None, frozen_layers=(2,) if k == 2 else (), seed=0)
        hashes.append(recipe.recipe_hash)
    assert hashes == ["6e5a7e4da4869e260d718b69ace486e87d6616e90f37b76d39605e71e6744bf8",
                      "b101b1ad3972e62bf87920c2941f900ecdcbad2867ddfe4026e18f799f35e24c",
                      "b703b17b6fd563d737bcb2b963a970197407b68fbdbaee299aefa0c2f2aaa988"]
