"""Merge kernels on plain tensors: endpoints, SLERP geometry, TIES/DARE semantics, seeded masks, the merge path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from darwin_core.errors import DarwinError
from darwin_core.merge import TensorParams, get_method, method_names
from darwin_core.merge.methods import Method
from darwin_core.merge.methods.apply import StateDictSource, merge_tensors
from darwin_core.merge.methods.delta import keep_mask, magnitude_prune
from darwin_core.recipe import Recipe


def _pair(shape=(16, 24), seed=0, delta=0.05):
    g = torch.Generator().manual_seed(seed)
    father = torch.randn(shape, generator=g)
    mother = father + delta * torch.randn(shape, generator=g)
    return father, mother


def _kernel(name):
    return get_method(name).kernel


def test_registry_has_the_seven_methods_and_refuses_unknown_names():
    assert set(method_names()) >= {"linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "transplant"}
    with pytest.raises(DarwinError, match="Unknown merge method 'nope'"):
        get_method("nope")


def test_the_method_names_are_the_registered_methods_and_recipes_store_plain_names():
    assert sorted(Method) == list(method_names())
    assert all(type(get_method(name).name) is str and type(get_method(name).mergekit_name) is str for name in Method)
    recipe = Recipe(father="org/f", mother="org/m", method=Method.TIES)
    assert type(recipe.method) is str and recipe.method == "ties" and "method: ties" in recipe.to_yaml()


_OTHER_VALUES = {"ratio": 0.7, "density_father": 0.4, "density_mother": 0.3, "normalize": True, "rescale": False,
                 "scale": 1.7, "mask_seeds": (5, 9), "gamma": 0.05, "epsilon": 0.2, "select_topk": 0.5,
                 "weight_signs": (-1.0, -1.0)}
RATIO_FREE = {"model_stock", "sce"}  # methods that weigh the parents from the tensors themselves


@pytest.mark.parametrize("name", sorted(Method))
def test_a_kernel_reads_only_the_parameters_its_method_declares(name):
    method = get_method(name)
    father, mother = _pair(seed=3)
    base = father - 0.05 * _pair(seed=4)[1] if method.delta else None  # an ancestor: the father's density counts
    params = TensorParams(ratio=0.35, density_father=0.6, density_mother=0.5, normalize=False, rescale=True)
    reference = method.kernel(father, mother, base, params)
    undeclared = [f.name for f in dataclasses.fields(TensorParams) if f.name not in method.parameters]
    for name_ in undeclared:
        changed = method.kernel(father, mother, base, dataclasses.replace(params, **{name_: _OTHER_VALUES[name_]}))
        assert torch.equal(changed, reference), name_
    assert ("ratio" in method.parameters) != (name in RATIO_FREE)
    assert method.uses_density == ("density_mother" in method.parameters)


def test_linear_ratio_0_is_the_father_and_1_the_mother_bit_for_bit():
    father, mother = _pair()
    father[0, 0] = -0.0
    out0 = _kernel("linear")(father, mother, None, TensorParams(ratio=0.0))
    out1 = _kernel("linear")(father, mother, None, TensorParams(ratio=1.0))
    assert out0.numpy().tobytes() == father.numpy().tobytes()
    assert out1.numpy().tobytes() == mother.numpy().tobytes()


def test_linear_is_the_weighted_average():
    father, mother = _pair()
    out = _kernel("linear")(father, mother, None, TensorParams(ratio=0.3))
    torch.testing.assert_close(out, 0.7 * father + 0.3 * mother, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(Method))
def test_kernels_leave_their_inputs_untouched_and_accumulate_in_float32(name):
    father, mother = (t.to(torch.bfloat16) for t in _pair())
    base = father.clone() if get_method(name).delta else None
    before = (father.clone(), mother.clone())
    ancestor = (father * 0.9) if get_method(name).needs_ancestor else None
    out = _kernel(name)(father, mother, ancestor, TensorParams(ratio=0.4, density_father=0.5, density_mother=0.5))
    assert out.dtype == torch.float32
    assert torch.equal(father, before[0]) and torch.equal(mother, before[1])
    assert base is None or torch.equal(base, before[0])


def test_slerp_endpoints_are_exact():
    father, mother = _pair(delta=1.0)
    assert torch.equal(_kernel("slerp")(father, mother, None, TensorParams(ratio=0.0)), father)
    assert torch.equal(_kernel("slerp")(father, mother, None, TensorParams(ratio=1.0)), mother)


def test_slerp_follows_the_great_circle_between_orthogonal_unit_vectors():
    x = torch.tensor([1.0, 0.0, 0.0])
    y = torch.tensor([0.0, 1.0, 0.0])
    for t in (0.25, 0.5, 0.8):
        out = _kernel("slerp")(x, y, None, TensorParams(ratio=t))
        assert out.norm().item() == pytest.approx(1.0, abs=1e-6)  # stays on the sphere (lerp would shrink it)
        expected = torch.tensor([math.cos(t * math.pi / 2), math.sin(t * math.pi / 2), 0.0])
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_slerp_of_near_parallel_tensors_falls_back_to_linear_exactly():
    father, _ = _pair()
    mother = father * 1.01 + 1e-4  # |cos| > 0.9995
    slerped = _kernel("slerp")(father, mother, None, TensorParams(ratio=0.3))
    assert torch.equal(slerped, 0.7 * father + 0.3 * mother) or torch.allclose(slerped, 0.7 * father + 0.3 * mother, rtol=0, atol=1e-7)
    antipodal = _kernel("slerp")(father, -father, None, TensorParams(ratio=0.25))
    torch.testing.assert_close(antipodal, 0.75 * father - 0.25 * father)


def test_slerp_uses_the_angle_of_the_normalised_tensors_but_keeps_their_scale():
    x = torch.tensor([2.0, 0.0])
    y = torch.tensor([0.0, 4.0])
    out = _kernel("slerp")(x, y, None, TensorParams(ratio=0.5))
    # coefficients sin(θ/2)/sin θ = 1/√2 on the unnormalised tensors (mergekit semantics)
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0]) / math.sqrt(2))


def test_task_arithmetic_with_father_as_base_is_linear_and_scale_multiplies_the_task_vector():
    father, mother = _pair()
    ta = _kernel("task_arithmetic")(father, mother, None, TensorParams(ratio=0.4))
    torch.testing.assert_close(ta, father + 0.4 * (mother - father))
    base = father - 0.1
    scaled = _kernel("task_arithmetic")(father, mother, base, TensorParams(ratio=0.4, scale=0.5))
    torch.testing.assert_close(scaled, base + 0.5 * (0.6 * (father - base) + 0.4 * (mother - base)))


def test_magnitude_prune_keeps_exactly_k_largest_entries_even_with_ties():
    delta = torch.tensor([0.5, -3.0, 0.5, 2.0, 0.5, -0.1])
    pruned = magnitude_prune(delta, 0.5, rescale=False)  # k = 3: -3, 2 and the first 0.5
    assert pruned.tolist() == [0.5, -3.0, 0.0, 2.0, 0.0, -0.0]
    assert int((magnitude_prune(torch.randn(1000), 0.37, False) != 0).sum()) == 370


def test_ties_elects_the_sign_of_the_weighted_sum_and_drops_disagreeing_entries():
    base = torch.zeros(4)
    father = torch.tensor([1.0, -1.0, 2.0, 0.0])
    mother = torch.tensor([-3.0, -1.0, 1.0, 4.0])
    params = TensorParams(ratio=0.5, normalize=False)
    out = _kernel("ties")(father, mother, base, params)
    # weighted deltas f: [.5,-.5,1,0], m: [-1.5,-.5,.5,2]; elected signs: -, -, +, +
    torch.testing.assert_close(out, torch.tensor([-1.5, -1.0, 1.5, 2.0]))
    normalized = _kernel("ties")(father, mother, base, TensorParams(ratio=0.5))  # divide by agreeing weight
    torch.testing.assert_close(normalized, torch.tensor([-3.0, -1.0, 1.5, 4.0]))


def test_ties_with_father_base_and_normalize_off_scales_the_pruned_mother_task_vector():
    father, mother = _pair()
    out = _kernel("ties")(father, mother, None, TensorParams(ratio=0.3, density_mother=1.0, normalize=False))
    torch.testing.assert_close(out, father + 0.3 * (mother - father))


def test_dare_with_density_one_is_task_arithmetic_and_draws_no_mask():
    father, mother = _pair()
    for name in ("dare_ties", "dare_linear"):
        out = _kernel(name)(father, mother, None, TensorParams(ratio=0.6))
        torch.testing.assert_close(out, father + 0.6 * (mother - father))


def test_dare_drops_about_one_minus_density_and_restores_the_l1_norm():
    father = torch.zeros(200_000)
    mother = torch.randn(200_000, generator=torch.Generator().manual_seed(3))
    out = _kernel("dare_linear")(father, mother, None, TensorParams(ratio=1.0, density_mother=0.3, mask_seeds=(1, 2)))
    kept = (out != 0).float().mean().item()
    assert kept == pytest.approx(0.3, abs=0.01)
    assert out.abs().sum().item() == pytest.approx(mother.abs().sum().item(), rel=1e-4)
    unscaled = _kernel("dare_linear")(father, mother, None,
                                      TensorParams(ratio=1.0, density_mother=0.3, rescale=False, mask_seeds=(1, 2)))
    assert torch.equal(unscaled != 0, out != 0)
    torch.testing.assert_close(unscaled[out != 0], mother[out != 0])


def test_dare_mask_is_a_function_of_its_seed_only():
    a = keep_mask((64, 64), 0.5, seed=42, device="cpu")
    torch.manual_seed(0)
    torch.rand(1000)  # torch's global RNG state must not matter
    b = keep_mask((64, 64), 0.5, seed=42, device="cpu")
    c = keep_mask((64, 64), 0.5, seed=43, device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(keep_mask((4096,), 0.5, seed=42, device="cpu"), a.reshape(-1))  # element i is element i


def test_dare_masks_are_nested_across_densities_and_independent_across_seeds():
    low = keep_mask((500_000,), 0.3, seed=7, device="cpu")
    high = keep_mask((500_000,), 0.6, seed=7, device="cpu")
    assert not (low & ~high).any()  # raising a density only adds kept entries
    assert low.float().mean().item() == pytest.approx(0.3, abs=0.005)
    other = keep_mask((500_000,), 0.3, seed=8, device="cpu")
    assert (low & other).float().mean().item() == pytest.approx(0.09, abs=0.005)  # P(both) = 0.3 · 0.3
    assert keep_mask((10,), 1.0, seed=1, device="cpu").all() and not keep_mask((10,), 0.0, seed=1, device="cpu").any()


def test_transplant_takes_the_whole_tensor_from_one_parent():
    father, mother = _pair()
    assert torch.equal(_kernel("transplant")(father, mother, None, TensorParams(ratio=0.51)), mother)
    assert torch.equal(_kernel("transplant")(father, mother, None, TensorParams(ratio=0.5)), father)


# -- the merge path on in-memory state dicts ------------------------------------------------------------------

NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.norm.weight",
]


def _state_dicts(seed=0):
    g = torch.Generator().manual_seed(seed)
    father = {n: torch.randn(8, 8, generator=g) for n in NAMES}
    mother = {n: t + 0.1 * torch.randn(8, 8, generator=g) for n, t in father.items()}
    return StateDictSource(father), StateDictSource(mother)


def _recipe(**kw):
    kw.setdefault("father", "org/father")
    kw.setdefault("mother", "org/mother")
    return Recipe(**kw)


def test_dare_masks_do_not_depend_on_processing_order():
    father, mother = _state_dicts()
    recipe = _recipe(method="dare_ties", densities={"default": [0.5, 0.5]})
    forward = dict(merge_tensors(recipe, father, mother, NAMES))
    backward = dict(merge_tensors(recipe, father, mother, list(reversed(NAMES))))
    single = dict(merge_tensors(recipe, father, mother, [NAMES[3]]))
    assert all(torch.equal(forward[n], backward[n]) for n in NAMES)
    assert torch.equal(single[NAMES[3]], forward[NAMES[3]])
    other_seed = dict(merge_tensors(_recipe(method="dare_ties", densities={"default": [0.5, 0.5]}, seed=1),
                                    father, mother, NAMES))
    assert not torch.equal(other_seed[NAMES[3]], forward[NAMES[3]])


def test_merge_path_applies_frozen_layers_transplant_thresholds_and_dtype():
    father, mother = _state_dicts()
    recipe = _recipe(method="slerp", dtype="bfloat16", transplant=(0.15, 0.85), frozen_layers=[1],
                     ratios={"default": 0.5, "roles": {"embed": 0.1, "final_norm": 0.9}})
    child = dict(merge_tensors(recipe, father, mother))
    assert list(child) == NAMES and all(t.dtype == torch.bfloat16 for t in child.values())
    assert torch.equal(child["model.embed_tokens.weight"], father.get("model.embed_tokens.weight").bfloat16())
    assert torch.equal(child["model.norm.weight"], mother.get("model.norm.weight").bfloat16())
    assert torch.equal(child["model.layers.1.mlp.up_proj.weight"], father.get("model.layers.1.mlp.up_proj.weight").bfloat16())
    merged = child["model.layers.0.mlp.up_proj.weight"]
    f, m = father.get("model.layers.0.mlp.up_proj.weight"), mother.get("model.layers.0.mlp.up_proj.weight")
    assert not torch.equal(merged, f.bfloat16()) and not torch.equal(merged, m.bfloat16())


def test_method_weight_blends_the_method_with_linear_interpolation():
    father, mother = _state_dicts()
    name = "model.layers.0.mlp.up_proj.weight"
    f, m = father.get(name), mother.get(name)
    params = {"method": "dare_linear", "ratios": 0.6, "densities": {"default": [1.0, 0.3]}}
    recipe = _recipe(**params, method_weight=0.25)
    half = dict(merge_tensors(recipe, father, mother, [name]))[name]
    pure = get_method("dare_linear").kernel(f, m, None, recipe.plan_for(name).params)  # same masks (same recipe)
    linear = 0.4 * f + 0.6 * m
    torch.testing.assert_close(half, 0.75 * linear + 0.25 * pure)
    assert not torch.allclose(pure, linear)


def test_vision_tower_tensors_are_copied_from_the_father_untouched():
    vision = "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"
    father = StateDictSource({vision: torch.randn(4, 4, dtype=torch.float32)})
    mother = StateDictSource({vision: torch.randn(4, 6)})  # even a different shape does not matter
    child = dict(merge_tensors(_recipe(method="linear", dtype="bfloat16"), father, mother))
    assert child[vision].dtype == torch.float32 and torch.equal(child[vision], father.get(vision))


def test_shape_mismatch_names_the_tensor():
    father, _ = _state_dicts()
    mother = StateDictSource({n: torch.zeros(8, 9) for n in NAMES})
    with pytest.raises(DarwinError, match=r"model\.embed_tokens\.weight has shape \(8, 8\) in the father but \(8, 9\)"):
        list(merge_tensors(_recipe(), father, mother))


def test_missing_tensor_in_the_mother_is_a_clear_error():
    father, _ = _state_dicts()
    mother = StateDictSource({})
    with pytest.raises(DarwinError, match="The mother has no tensor model.embed_tokens.weight"):
        list(merge_tensors(_recipe(), father, mother))


def test_ancestor_base_must_be_given_for_delta_methods():
    father, mother = _state_dicts()
    recipe = _recipe(method="ties", base="org/base")
    with pytest.raises(DarwinError, match="relative to org/base"):
        list(merge_tensors(recipe, father, mother))
    base = StateDictSource({n: father.get(n) * 0.9 for n in NAMES})
    child = dict(merge_tensors(recipe, father, mother, base=base))
    assert set(child) == set(NAMES)


@pytest.mark.gpu
def test_cuda_merge_equals_cpu_merge_including_dare_masks():
    for shape, seed in (((1000, 1000), 5), ((3, 7), (1 << 63) - 1)):
        assert torch.equal(keep_mask(shape, 0.37, seed, "cuda").cpu(), keep_mask(shape, 0.37, seed, "cpu"))
    father, mother = _state_dicts()
    recipe = _recipe(method="dare_ties", densities={"default": [0.6, 0.4]}, ratios=0.4)
    cpu = dict(merge_tensors(recipe, father, mother))
    cuda = dict(merge_tensors(recipe, father, mother, device="cuda"))
    for name in NAMES:
        assert cuda[name].device.type == "cuda"
        torch.testing.assert_close(cuda[name].cpu(), cpu[name], rtol=1e-6, atol=1e-6)


# -- breadcrumbs, DELLA, NuSLERP, Model Stock, SCE, negated task vectors ----------------------------------------

def test_breadcrumbs_drops_the_smallest_entries_and_the_largest_outliers():
    from darwin_core.merge.methods.breadcrumbs import magnitude_outliers

    delta = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 1.0, 0.05, -0.4, 0.6, 3.0])
    kept = magnitude_outliers(delta, 0.5, rescale=False, gamma=0.2)  # 5 kept, the 2 largest (5, 3) dropped
    assert torch.equal(kept, delta * torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0]))
    assert torch.equal(magnitude_outliers(delta, 1.0, rescale=False, gamma=0.2), delta)  # density 1: whole
    father, mother = _pair()
    out = _kernel("breadcrumbs")(father, mother, None, TensorParams(ratio=0.3))
    torch.testing.assert_close(out, father + 0.3 * (mother - father))


def test_della_keeps_large_entries_more_often_and_its_mask_is_a_function_of_its_seed():
    from darwin_core.merge.methods.della import effective_epsilon, magprune

    delta = torch.randn(200, 400, generator=torch.Generator().manual_seed(1))
    pruned = magprune(delta, 0.5, 0.3, rescale=False, seed=3)
    kept = pruned != 0
    small, large = delta.abs() < delta.abs().median(), delta.abs() >= delta.abs().median()
    assert kept[large].float().mean() > 0.6 > 0.4 > kept[small].float().mean()
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    assert torch.equal(pruned, magprune(delta, 0.5, 0.3, rescale=False, seed=3))
    assert not torch.equal(pruned, magprune(delta, 0.5, 0.3, rescale=False, seed=4))
    rescaled = magprune(delta, 0.5, 0.3, rescale=True, seed=3)
    assert rescaled.abs().sum().item() == pytest.approx(delta.abs().sum().item(), rel=1e-5)
    assert effective_epsilon(0.15, 0.1) == 0.05 and effective_epsilon(0.15, 0.5) == 0.15  # capped inside (0, 1)
    father, mother = _pair()
    out = _kernel("della")(father, mother, None, TensorParams(ratio=0.3, normalize=False))  # density 1: TIES
    torch.testing.assert_close(out, father + 0.3 * (mother - father))


def test_nuslerp_follows_the_great_circle_and_interpolates_task_vectors_from_an_ancestor():
    x, y = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    out = _kernel("nuslerp")(x, y, None, TensorParams(ratio=0.25))
    torch.testing.assert_close(out, torch.tensor([math.cos(math.pi / 8), math.sin(math.pi / 8), 0.0]))
    base = torch.tensor([1.0, 1.0, 1.0])
    out = _kernel("nuslerp")(base + x, base + y, base, TensorParams(ratio=0.25))
    torch.testing.assert_close(out, base + torch.tensor([math.cos(math.pi / 8), math.sin(math.pi / 8), 0.0]))
    colinear = _kernel("nuslerp")(x, 3 * x, None, TensorParams(ratio=0.5))
    torch.testing.assert_close(colinear, 2 * x)


def test_model_stock_pulls_the_average_to_the_ancestor_by_the_angle_and_needs_one():
    base = torch.zeros(2)
    same = _kernel("model_stock")(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), base, TensorParams(ratio=0.5))
    torch.testing.assert_close(same, torch.tensor([1.0, 0.0]))  # cos 1: t = 1, the average
    orthogonal = _kernel("model_stock")(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), base, TensorParams(ratio=0.5))
    torch.testing.assert_close(orthogonal, torch.zeros(2))  # cos 0: t = 0, the ancestor
    with pytest.raises(DarwinError, match="needs a common ancestor"):
        Recipe(father="org/f", mother="org/m", method="model_stock")


def test_sce_weighs_task_vectors_by_their_mean_square_and_erases_minority_signs():
    base = torch.zeros(3)
    father, mother = torch.tensor([1.0, 1.0, -1.0]), torch.tensor([3.0, -3.0, -3.0])
    out = _kernel("sce")(father, mother, base, TensorParams(ratio=0.5))
    # weights 1/10 and 9/10; entry 1: the father's +1 disagrees with the elected − and is erased
    torch.testing.assert_close(out, torch.tensor([0.1 * 1 + 0.9 * 3, -3.0, -0.1 - 2.7]))


def test_a_negated_task_vector_enters_with_a_negative_weight():
    father, mother = _pair()
    base = father - 0.1
    params = TensorParams(ratio=0.4, weight_signs=(1.0, -1.0))
    out = _kernel("task_arithmetic")(father, mother, base, params)
    torch.testing.assert_close(out, base + 0.6 * (father - base) - 0.4 * (mother - base))
    recipe = Recipe(father="org/f", mother="org/m", base="org/b", method="task_arithmetic", negate="mother")
    assert recipe.plan_for("model.layers.0.mlp.up_proj.weight").params.weight_signs == (1.0, -1.0)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe and "negate: mother" in recipe.to_yaml()
    with pytest.raises(DarwinError, match="no task-vector weights to negate"):
        Recipe(father="org/f", mother="org/m", method="slerp", negate="mother")
    with pytest.raises(DarwinError, match="father has no task vector to negate"):
        Recipe(father="org/f", mother="org/m", method="ties", negate="father")


def test_method_options_are_refused_by_methods_that_do_not_take_them_and_keep_old_hashes():
    plain = Recipe(father="org/f", mother="org/m", method="breadcrumbs")
    assert "gamma" not in plain.canonical() and "gamma" not in plain.to_dict()
    tuned = Recipe(father="org/f", mother="org/m", method="breadcrumbs", gamma=0.05)
    assert tuned.recipe_hash != plain.recipe_hash and tuned.plan_for("lm_head.weight").params.gamma == 0.05
    with pytest.raises(DarwinError, match="The method ties does not take gamma"):
        Recipe(father="org/f", mother="org/m", method="ties", gamma=0.05)
    with pytest.raises(DarwinError, match="epsilon must be below 0.5"):
        Recipe(father="org/f", mother="org/m", method="della", epsilon=0.6)


@pytest.mark.parametrize("name", ["breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "nuslerp",
                                  "model_stock", "sce"])
def test_genome_spaces_breed_with_the_new_methods_at_any_density_they_propose(name):
    from darwin_core.genome.spaces import get_space

    space = get_space("darwin-v6")
    values = dict(zip(space.names, space.default()))
    values.update(density_a=0.93, density_b=0.12, global_ratio=0.4)  # outside DELLA's default ε band
    base = "org/base" if get_method(name).needs_ancestor or name == "nuslerp" else "father"
    recipe = space.to_recipe([values[n] for n in space.names], father="org/f", mother="org/m", layer_count=2,
                             method=name, base=base)
    father, mother = _state_dicts()
    ancestor = StateDictSource({n: father.get(n) * 0.9 for n in NAMES})
    child = dict(merge_tensors(recipe, father, mother, base=ancestor if base != "father" else None))
    assert set(child) == set(NAMES) and all(torch.isfinite(t).all() for t in child.values())


@pytest.mark.parametrize("block", [2, 8, 2048])
def test_the_pairwise_sum_is_the_tree_of_its_aligned_blocks_sums_which_the_gpu_kernels_add(block):
    """`delta.pairwise_sum` = the same tree over the sums of aligned power-of-two blocks (zeros past the end), at
    any block size and over more blocks than one level of them: the decomposition `_dare_triton` computes."""
    from darwin_core.merge.methods.delta import pairwise_sum

    generator = torch.Generator().manual_seed(4)
    for n in (1, 2, 3, block - 1, block, block + 1, 5 * block + 3, block * block + 7, 100_003):
        values = torch.rand(n, generator=generator) * 10.0 ** torch.randint(-6, 3, (n,), generator=generator)

        def blocked(x):
            if x.numel() <= block:
                return pairwise_sum(torch.nn.functional.pad(x, (0, block - x.numel())))
            padded = torch.nn.functional.pad(x, (0, -x.numel() % block)).reshape(-1, block)
            return blocked(torch.stack([pairwise_sum(row) for row in padded]))

        total = pairwise_sum(values)
        assert total.dtype == torch.float32 and total.shape == ()
        assert torch.equal(blocked(values), total), n
        assert torch.isclose(total, values.double().sum().float(), rtol=1e-5), n
    assert pairwise_sum(torch.zeros(0)).item() == 0.0


def test_dares_rescale_adds_its_l1_sums_in_the_fixed_order():
    from darwin_core.merge.methods.delta import dare_drop, keep_mask, pairwise_sum

    generator = torch.Generator().manual_seed(9)
    delta = torch.randn(100_003, generator=generator) * 0.003
    masked = delta * keep_mask(delta.shape, 0.4, 77, "cpu")
    expected = masked * (pairwise_sum(delta.abs()) / pairwise_sum(masked.abs()))
    assert torch.equal(dare_drop(delta, 0.4, True, 77), expected)


def test_the_pairwise_sum_is_the_level_by_level_definition_across_its_work_blocks():
    from darwin_core.merge.methods.delta import PAIRWISE_BLOCK, pairwise_sum

    def by_definition(x):
        while x.numel() > 1:
            if x.numel() % 2:
                x = torch.cat((x, x.new_zeros(1)))
            x = x[0::2] + x[1::2]
        return x[0]

    generator = torch.Generator().manual_seed(12)
    for n in (PAIRWISE_BLOCK - 1, PAIRWISE_BLOCK, PAIRWISE_BLOCK + 1, 3 * PAIRWISE_BLOCK + 5, 4 * PAIRWISE_BLOCK):
        values = torch.rand(n, generator=generator) ** 8
        assert torch.equal(pairwise_sum(values), by_definition(values)), n
