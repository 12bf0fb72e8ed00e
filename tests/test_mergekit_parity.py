"""Parity with mergekit 0.1.5, the merge engine everyone compares with.

1. Kernel parity, tensor by tensor, on every fixture architecture: our merge path vs mergekit's in-memory API
   (`mergekit.merge_methods.merge_tensors`) with the parameters our mapping gives (max relative error ≤ 1e-5).
2. DARE with density < 1: mergekit draws its masks from torch's global RNG, ours are seeded per tensor, so the
   masks differ by design (merge/delta.py); given the same mask, the drop and L1 rescaling are mergekit's own.
3. Export parity: a recipe exported with `mergekit_yaml(recipe)` and merged by mergekit (`run_merge`, the function
   behind `mergekit-yaml`; the CLI itself in a slow test) equals our `merge_to_disk` output.
4. The methods added for mergekit users (breadcrumbs, breadcrumbs_ties, della, della_linear, nuslerp, model_stock,
   sce, negated task vectors) are bit-identical to mergekit on float32 inputs, tensor by tensor and through an
   exported config. DELLA draws random masks (mergekit from torch's global RNG, Darwin per tensor), so it is
   compared bit for bit at density 1 and, below 1, with mergekit given Darwin's own mask.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import yaml

from darwin_core.merge.mergekit_export import mergekit_yaml
from darwin_core.merge import get_method
from darwin_core.merge.methods.apply import merge_tensors
from darwin_core.merge.disk import merge_to_disk
from darwin_core.recipe import Recipe
from darwin_core.io.tensors import TensorReader
from darwin_core.testing.fixtures import ARCHITECTURES, write_tiny_model

mk_methods = pytest.importorskip("mergekit.merge_methods")

TOLERANCE = 1e-5
ROLE_RATIOS = {
    "default": 0.35,
    "roles": {"embed": 0.6, "lm_head": 0.55, "attn": 0.25, "ffn": 0.7, "experts": 0.65, "router": 0.45},
    "layers": {2: {"*": 0.8}},
}


def rel_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    scale = theirs.abs().max().item()
    diff = (ours.double() - theirs.double()).abs().max().item()
    return diff / scale if scale > 0 else diff


def mergekit_tensor(recipe: Recipe, name: str, father: torch.Tensor, mother: torch.Tensor,
                    base: torch.Tensor | None = None) -> torch.Tensor:
    """The same tensor merged by mergekit's in-memory API with the parameters of our documented mapping."""
    method = get_method(recipe.method)
    shared, per_model = method.mergekit_params(recipe.plan_for(name).params)
    tensors, ids = [father, mother], ["father", "mother"]
    base_index = None
    if method.delta and base is not None:
        tensors.append(base)
        ids.append("base")
        base_index = 2
    elif method.mergekit_base:
        base_index = 0
    non_base = [i for i in ids if i != ids[base_index]] if base_index is not None else ids
    parameters = dict(shared)
    for key in {k for model in per_model.values() for k in model}:
        parameters[key] = {who: per_model[who][key] for who in non_base if who in per_model}
    return mk_methods.merge_tensors(tensors, method.mergekit_name, parameters=parameters, ids=ids,
                                    base_index=base_index)


def kernel_parity(recipe: Recipe, father_dir, mother_dir, base_dir=None) -> float:
    f, m = TensorReader(father_dir), TensorReader(mother_dir)
    b = TensorReader(base_dir) if base_dir is not None else None
    worst = 0.0
    for name, ours in merge_tensors(recipe, f, m, base=b):
        theirs = mergekit_tensor(recipe, name, f.get(name), m.get(name), b.get(name) if b else None)
        worst = max(worst, rel_error(ours, theirs))
    return worst


PARITY_METHODS = [
    ("linear", {}),
    ("slerp", {}),
    ("task_arithmetic", {}),
    ("ties", {"densities": {"default": [1.0, 0.6], "roles": {"attn": [1.0, 0.3]}}}),
    ("ties", {"normalize": False, "densities": {"default": [1.0, 0.5]}}),
    ("dare_ties", {}),
    ("dare_linear", {}),
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_method_agrees_with_mergekit_tensor_by_tensor(arch, fixture_pair):
    father, mother = fixture_pair(arch, related=True)
    unrelated = fixture_pair(arch, related=False)
    for method, extra in PARITY_METHODS:
        recipe = Recipe(father=father, mother=mother, method=method, ratios=ROLE_RATIOS, **extra)
        assert kernel_parity(recipe, father, mother) <= TOLERANCE, (arch, method, extra)
    slerp = Recipe(father=unrelated[0], mother=unrelated[1], method="slerp", ratios=ROLE_RATIOS)
    assert kernel_parity(slerp, *unrelated) <= TOLERANCE  # far from parallel: the real spherical branch


def test_methods_with_a_common_ancestor_agree_with_mergekit(tmp_path):
    base = write_tiny_model("qwen3", tmp_path / "base", seed=0)
    father = write_tiny_model("qwen3", tmp_path / "father", seed=1, base_dir=base)
    mother = write_tiny_model("qwen3", tmp_path / "mother", seed=2, base_dir=base)
    for method, extra in [("task_arithmetic", {"scale": 1.5}), ("ties", {"densities": {"default": [0.7, 0.4]}}),
                          ("dare_linear", {}), ("dare_ties", {"normalize": True})]:
        recipe = Recipe(father=father, mother=mother, base=base, method=method, ratios=ROLE_RATIOS, **extra)
        assert kernel_parity(recipe, father, mother, base) <= TOLERANCE, method


@pytest.mark.parametrize("density", [0.9, 0.4, 0.05])
def test_dare_drop_and_rescale_equal_mergekits_for_the_same_mask(density):
    from mergekit.sparsify import RescaleNorm, rescaled_masked_tensor

    from darwin_core.merge.methods.delta import dare_drop, keep_mask

    delta = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    mask = keep_mask(delta.shape, density, seed=11, device="cpu")
    for rescale in (True, False):
        ours = dare_drop(delta, density, rescale, seed=11)
        theirs = rescaled_masked_tensor(delta, mask.float(), RescaleNorm.l1 if rescale else None)
        assert rel_error(ours, theirs) <= TOLERANCE


# -- export parity ---------------------------------------------------------------------------------------------

_EXPERT = re.compile(r"^(?P<head>.*\.experts\.)(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj|w1|w2|w3)\.weight$")


def fused_like_mergekit(reader: TensorReader) -> dict[str, torch.Tensor]:
    """Our on-disk (per-expert) child in mergekit 0.1.5's output layout: experts fused, Mixtral renamed."""
    out, experts = {}, {}
    for name in reader.names:
        match = _EXPERT.match(name)
        if match:
            proj = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}.get(match["proj"], match["proj"])
            experts.setdefault(match["head"], {}).setdefault(proj, {})[int(match["e"])] = reader.get(name)
        else:
            out[name.replace("block_sparse_moe.", "mlp.")] = reader.get(name)
    for head, projs in experts.items():
        head = head.replace("block_sparse_moe.", "mlp.")
        count = len(projs["down_proj"])
        out[head + "gate_up_proj"] = torch.stack(
            [torch.cat([projs["gate_proj"][e], projs["up_proj"][e]]) for e in range(count)])
        out[head + "down_proj"] = torch.stack([projs["down_proj"][e] for e in range(count)])
    return out


def run_mergekit(config_text: str, out_dir) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(yaml.safe_load(config_text))
    run_merge(config, str(out_dir), options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))


def export_parity(recipe: Recipe, tmp_path, tag: str) -> float:
    run_mergekit(mergekit_yaml(recipe), tmp_path / f"mk-{tag}")
    ours = fused_like_mergekit(TensorReader(merge_to_disk(recipe, tmp_path / f"ours-{tag}")))
    theirs = TensorReader(tmp_path / f"mk-{tag}")
    assert set(theirs.names) == set(ours), set(theirs.names) ^ set(ours)
    return max(rel_error(ours[n], theirs.get(n)) for n in theirs.names)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exported_recipe_merged_by_mergekit_equals_our_child(arch, fixture_pair, tmp_path):
    father, mother = fixture_pair(arch, related=True)
    recipe = Recipe(
        father=father, mother=mother, method="ties", normalize=False, frozen_layers=[0], transplant=(0.15, 0.85),
        ratios={"default": 0.4, "roles": {"embed": 0.1, "lm_head": 0.95},
                "layers": {1: {"attn": 0.9, "*": 0.2}, 2: {"ffn": 0.7, "experts": 0.65, "router": 0.3}}},
        # experts at density 1: mergekit fuses a layer's experts, so its top-k would span all of them
        densities={"default": [1.0, 0.6], "roles": {"experts": [1.0, 1.0]}, "layers": {3: {"attn": [1.0, 0.3]}}},
    )
    assert export_parity(recipe, tmp_path, "ties") <= TOLERANCE


def test_export_refuses_what_fused_experts_would_compute_differently(fixture_pair):
    from darwin_core.errors import DarwinError

    father, mother = fixture_pair("mixtral")
    with pytest.raises(DarwinError, match="experts of a layer as one fused tensor, so SLERP's angle"):
        mergekit_yaml(Recipe(father=father, mother=mother, method="slerp", ratios=0.3))
    with pytest.raises(DarwinError, match="TIES' top-k would span all experts"):
        mergekit_yaml(Recipe(father=father, mother=mother, method="ties", densities=0.5))


@pytest.mark.parametrize("method", ["linear", "slerp", "task_arithmetic", "dare_ties", "dare_linear", "transplant"])
def test_export_parity_for_every_method(method, fixture_pair, tmp_path):
    father, mother = fixture_pair("qwen3", related=method != "slerp")
    tensor = "model.layers.3.mlp.down_proj.weight"
    recipe = Recipe(father=father, mother=mother, method=method, dtype="bfloat16",
                    ratios={**ROLE_RATIOS, "tensors": {tensor: 0.77}})
    assert export_parity(recipe, tmp_path, method) <= TOLERANCE


def test_export_parity_with_a_common_ancestor(tmp_path):
    base = write_tiny_model("mistral", tmp_path / "base", seed=0)
    father = write_tiny_model("mistral", tmp_path / "father", seed=1, base_dir=base)
    mother = write_tiny_model("mistral", tmp_path / "mother", seed=2, base_dir=base)
    recipe = Recipe(father=father, mother=mother, base=base, method="ties", ratios=ROLE_RATIOS,
                    densities={"default": [0.8, 0.5], "roles": {"ffn": [0.4, 0.9]}}, frozen_layers=[1])
    config = yaml.safe_load(mergekit_yaml(recipe))
    assert config["base_model"] == str(base) and "parameters" in config["models"][0]
    assert export_parity(recipe, tmp_path, "ancestor") <= TOLERANCE


@pytest.mark.slow
def test_mergekit_yaml_cli_on_an_exported_recipe(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama", related=False)
    recipe = Recipe(father=father, mother=mother, method="slerp", ratios=ROLE_RATIOS, frozen_layers=[3])
    config = tmp_path / "mergekit.yaml"
    config.write_text(mergekit_yaml(recipe))
    cli = [sys.executable, "-c", "from mergekit.scripts.run_yaml import main; main()"]
    subprocess.run([*cli, str(config), str(tmp_path / "mk"), "--no-copy-tokenizer", "--no-write-model-card"],
                   check=True, capture_output=True)
    ours = TensorReader(merge_to_disk(recipe, tmp_path / "ours"))
    theirs = TensorReader(tmp_path / "mk")
    assert set(ours.names) == set(theirs.names)
    assert max(rel_error(ours.get(n), theirs.get(n)) for n in ours.names) <= TOLERANCE


# -- the methods added for mergekit users: bit for bit ----------------------------------------------------------

def kernel_mismatches(recipe: Recipe, father_dir, mother_dir, base_dir=None) -> list[str]:
    """The tensors where our merge path and mergekit's in-memory API differ in any bit (float32 inputs)."""
    f, m = TensorReader(father_dir), TensorReader(mother_dir)
    b = TensorReader(base_dir) if base_dir is not None else None
    return [name for name, ours in merge_tensors(recipe, f, m, base=b)
            if not torch.equal(ours, mergekit_tensor(recipe, name, f.get(name), m.get(name), b.get(name) if b else None))]


SPARSE = {"default": [0.7, 0.6], "roles": {"attn": [0.5, 0.3]}}
NEW_METHODS = [
    ("breadcrumbs", {"densities": SPARSE}),
    ("breadcrumbs", {"densities": SPARSE, "gamma": 0.1, "rescale": True}),
    ("breadcrumbs_ties", {"densities": SPARSE, "gamma": 0.05}),
    ("breadcrumbs_ties", {"densities": SPARSE, "normalize": True}),
    ("della", {}),  # density 1: no random draw
    ("della_linear", {"rescale": False}),
    ("nuslerp", {}),
    ("task_arithmetic", {"negate": "mother"}),
    ("ties", {"negate": "mother", "normalize": False, "densities": SPARSE}),
    ("breadcrumbs", {"negate": "mother", "densities": SPARSE}),
]
ANCESTOR_METHODS = [
    ("model_stock", {}),
    ("sce", {}),
    ("sce", {"select_topk": 0.4}),
    ("nuslerp", {}),
    ("breadcrumbs_ties", {"densities": SPARSE, "gamma": 0.1}),
    ("della", {"epsilon": 0.1}),
    ("task_arithmetic", {"negate": "mother", "scale": 1.3}),
    ("task_arithmetic", {"negate": "father"}),
    ("ties", {"negate": "mother", "densities": SPARSE}),
    ("dare_linear", {"negate": "mother"}),
]


@pytest.fixture(scope="module")
def ancestry(tmp_path_factory):
    """A common ancestor and two float32 children of it (qwen3)."""
    root = tmp_path_factory.mktemp("ancestry")
    base = write_tiny_model("qwen3", root / "base", seed=0)
    father = write_tiny_model("qwen3", root / "father", seed=1, base_dir=base)
    mother = write_tiny_model("qwen3", root / "mother", seed=2, base_dir=base)
    return base, father, mother


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3_text", "qwen3_moe"])
def test_new_methods_are_bit_identical_to_mergekit_tensor_by_tensor(arch, fixture_pair):
    father, mother = fixture_pair(arch, related=True)
    for method, extra in NEW_METHODS:
        recipe = Recipe(father=father, mother=mother, method=method, ratios=ROLE_RATIOS, **extra)
        assert kernel_mismatches(recipe, father, mother) == [], (arch, method, extra)
    unrelated = fixture_pair(arch, related=False)
    nuslerp = Recipe(father=unrelated[0], mother=unrelated[1], method="nuslerp", ratios=ROLE_RATIOS)
    assert kernel_mismatches(nuslerp, *unrelated) == []


@pytest.mark.parametrize("method, extra", ANCESTOR_METHODS, ids=lambda v: v if isinstance(v, str) else "")
def test_new_methods_with_a_common_ancestor_are_bit_identical_to_mergekit(method, extra, ancestry):
    base, father, mother = ancestry
    recipe = Recipe(father=father, mother=mother, base=base, method=method, ratios=ROLE_RATIOS, **extra)
    assert kernel_mismatches(recipe, father, mother, base) == []


@pytest.mark.parametrize("shape", [(48, 80), (96,)])
def test_della_probabilities_and_rescaling_equal_mergekits_for_the_same_mask(shape, monkeypatch):
    from mergekit.sparsify import RescaleNorm, della_magprune

    from darwin_core.merge.methods.della import della_keep_mask, della_probabilities, magprune

    delta = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ours_probs = della_probabilities(delta, 0.45, 0.2)
    mask = della_keep_mask(ours_probs, seed=7)
    seen = []

    def bernoulli_with_our_mask(probs, *args, **kwargs):
        seen.append(probs.clone())
        return mask.clone()

    monkeypatch.setattr(torch, "bernoulli", bernoulli_with_our_mask)
    for rescale in (True, False):
        theirs = della_magprune(delta, 0.45, 0.2, rescale_norm=RescaleNorm.l1 if rescale else None)
        assert torch.equal(magprune(delta, 0.45, 0.2, rescale, seed=7), theirs)
    assert all(torch.equal(probs, ours_probs) for probs in seen) and len(seen) == 2


def test_della_caps_epsilon_where_mergekit_would_refuse_and_exports_the_capped_value(fixture_pair):
    father, mother = fixture_pair("qwen3", related=True)
    recipe = Recipe(father=father, mother=mother, method="della", densities={"default": [1.0, 0.95]})
    names = TensorReader(father).names
    config = yaml.safe_load(mergekit_yaml(recipe, names))
    assert config["models"][1]["parameters"]["epsilon"] == pytest.approx(0.025)
    assert "DELLA masks differ" in mergekit_yaml(recipe, names)


@pytest.mark.parametrize("method, extra", [
    ("breadcrumbs", {"densities": SPARSE, "gamma": 0.1}), ("breadcrumbs_ties", {"densities": SPARSE}),
    ("della", {}), ("nuslerp", {}), ("task_arithmetic", {"negate": "mother"}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_exported_new_methods_merged_by_mergekit_equal_our_child_bit_for_bit(method, extra, fixture_pair, tmp_path):
    father, mother = fixture_pair("qwen3", related=True)
    recipe = Recipe(father=father, mother=mother, method=method, dtype="float32", ratios=ROLE_RATIOS, **extra)
    assert export_parity(recipe, tmp_path, method) == 0.0


@pytest.mark.parametrize("method, extra", [
    ("model_stock", {}), ("sce", {"select_topk": 0.5}), ("nuslerp", {}), ("della_linear", {}),
    ("ties", {"negate": "mother", "densities": SPARSE}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_exported_new_methods_with_an_ancestor_equal_our_child_bit_for_bit(method, extra, ancestry, tmp_path):
    base, father, mother = ancestry
    recipe = Recipe(father=father, mother=mother, base=base, method=method, dtype="float32", ratios=ROLE_RATIOS,
                    **extra)
    config = yaml.safe_load(mergekit_yaml(recipe))
    assert config["merge_method"] == method and config["base_model"] == str(base)
    assert export_parity(recipe, tmp_path, method) == 0.0


def test_export_refuses_copied_tensors_for_methods_without_weights(ancestry):
    from darwin_core.errors import DarwinError

    base, father, mother = ancestry
    for method in ("model_stock", "sce"):
        recipe = Recipe(father=father, mother=mother, base=base, method=method, frozen_layers=[1])
        with pytest.raises(DarwinError, match=f"{method} has no weights in mergekit"):
            mergekit_yaml(recipe)
