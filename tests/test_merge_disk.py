"""merge_to_disk on fixture models: every architecture gives a loadable child; bytes are reproducible."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from darwin_core.errors import DarwinError
from darwin_core.genome.spaces import get_space
from darwin_core.merge.methods.apply import StateDictSource, merge_tensors
from darwin_core.merge.disk import merge_to_disk
from darwin_core.recipe import RECIPE_FILE, Recipe, density_table
from darwin_core.io.tensors import TensorReader, sha256_of_files
from darwin_core.testing.fixtures import ARCHITECTURES

SEED_002 = [0.4989, 0.1766, 0.9021, 0.6122, 0.9951, 0.9617, 0.5740, 0.5811, 0.5736, 0.4697, 0.4930, 0.8418,
            0.4907, 0.3623]


def v6_recipe(father, mother, layers=4, **kw):
    return get_space("darwin-v6").to_recipe(SEED_002, father=father, mother=mother, layer_count=layers,
                                            method=kw.pop("method", "dare_ties"), **kw)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_merges_into_a_child_that_loads_and_runs(arch, fixture_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    father, mother = fixture_pair(arch)
    recipe = v6_recipe(father, mother, frozen_layers=[1])
    child = merge_to_disk(recipe, tmp_path / "child")
    model, info = AutoModelForCausalLM.from_pretrained(child, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 6, 7, 8]])).logits
    assert logits.shape[:2] == (1, 5) and torch.isfinite(logits).all()
    assert Recipe.load(child) == recipe
    assert {"config.json", "tokenizer.json", "generation_config.json", RECIPE_FILE} <= {p.name for p in child.iterdir()}
    reader, f = TensorReader(child), TensorReader(father)
    assert reader.names == f.names
    frozen = [n for n in f.names if ".layers.1." in n]
    assert frozen and all(torch.equal(reader.get(n), f.get(n)) for n in frozen)


def test_same_recipe_twice_gives_identical_files(fixture_pair, tmp_path):
    father, mother = fixture_pair("qwen3_moe", shards=2)
    recipe = v6_recipe(father, mother, method="dare_ties")
    recipe = dataclasses.replace(recipe, method_weight=1.0, densities=density_table((0.7, 0.5)))
    a = merge_to_disk(recipe, tmp_path / "a", max_shard_bytes=100_000)
    b = merge_to_disk(recipe, tmp_path / "b", max_shard_bytes=100_000)
    digests = sha256_of_files(a)
    assert "model.safetensors.index.json" in digests and len([k for k in digests if k.endswith(".safetensors")]) > 1
    assert digests == sha256_of_files(b)
    other = merge_to_disk(dataclasses.replace(recipe, seed=1), tmp_path / "c", max_shard_bytes=100_000)
    assert sha256_of_files(other) != digests


def test_disk_merge_equals_the_in_memory_merge(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama")
    recipe = v6_recipe(father, mother)
    child = TensorReader(merge_to_disk(recipe, tmp_path / "child"))
    f, m = TensorReader(father), TensorReader(mother)
    resident_f = StateDictSource({n: f.get(n) for n in f.names})
    resident_m = StateDictSource({n: m.get(n) for n in m.names})
    for name, tensor in merge_tensors(recipe, resident_f, resident_m):
        assert torch.equal(tensor, child.get(name)), name


def test_dtype_recipe_writes_that_dtype_and_says_so_in_config(fixture_pair, tmp_path):
    father, mother = fixture_pair("qwen3")
    recipe = Recipe(father=father, mother=mother, method="slerp", ratios=0.4, dtype="bfloat16")
    child = merge_to_disk(recipe, tmp_path / "child")
    reader = TensorReader(child)
    assert {reader.dtype(n) for n in reader.names} == {torch.bfloat16}
    assert json.loads((child / "config.json").read_text())["dtype"] == "bfloat16"


def test_existing_output_is_kept_unless_overwrite(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama")
    out = tmp_path / "child"
    merge_to_disk(Recipe(father=father, mother=mother, ratios=0.0), out)
    with pytest.raises(DarwinError, match="already exists"):
        merge_to_disk(Recipe(father=father, mother=mother, ratios=1.0), out)
    merge_to_disk(Recipe(father=father, mother=mother, ratios=1.0), out, overwrite=True)
    m = TensorReader(mother)
    assert all(torch.equal(TensorReader(out).get(n), m.get(n)) for n in m.names)


def test_incompatible_parents_leave_nothing_behind(fixture_pair, tmp_path):
    father, _ = fixture_pair("llama")
    _, other = fixture_pair("mixtral")  # MoE experts where the father has an MLP: not even the FFNs line up
    out = tmp_path / "child"
    with pytest.raises(DarwinError):
        merge_to_disk(Recipe(father=other, mother=father), out)
    assert not out.exists() and not list(tmp_path.glob(".child*"))


def test_missing_parent_folder_is_a_clear_error(fixture_pair, tmp_path):
    father, _ = fixture_pair("llama")
    recipe = Recipe(father=father, mother={"id": "org/m", "path": str(tmp_path / "nowhere")})
    with pytest.raises(DarwinError, match="mother folder .* does not exist"):
        merge_to_disk(recipe, tmp_path / "child")


def test_ancestor_base_is_read_from_its_own_folder(tmp_path):
    from darwin_core.testing.fixtures import write_tiny_model

    base = write_tiny_model("llama", tmp_path / "base", seed=0)
    father = write_tiny_model("llama", tmp_path / "father", seed=1, base_dir=base)
    mother = write_tiny_model("llama", tmp_path / "mother", seed=2, base_dir=base)
    recipe = Recipe(father=father, mother=mother, base=base, method="task_arithmetic", ratios=0.5, scale=2.0)
    child = TensorReader(merge_to_disk(recipe, tmp_path / "child"))
    b, f, m = TensorReader(base), TensorReader(father), TensorReader(mother)
    name = "model.layers.0.mlp.up_proj.weight"
    want = b.get(name) + 2.0 * (0.5 * (f.get(name) - b.get(name)) + 0.5 * (m.get(name) - b.get(name)))
    torch.testing.assert_close(child.get(name), want)


def test_cli_merge_command(fixture_pair, tmp_path, capsys):
    from darwin_core.cli import main

    father, mother = fixture_pair("mistral")
    path = Recipe(father=father, mother=mother, method="linear", ratios=0.25).save(tmp_path / "r.yaml")
    assert main(["merge", str(path), "--out", str(tmp_path / "child")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "child" / "model.safetensors").is_file()
    assert main(["merge", str(path), "--out", str(tmp_path / "child")]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["merge", str(path), "--out", str(tmp_path / "child"), "--overwrite"]) == 0


def test_parents_without_a_path_come_from_the_hub_cache(fixture_pair, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from darwin_core.testing.fixtures import place_in_hf_cache

    father, mother = fixture_pair("llama")
    cache = tmp_path / "hub"
    father_snapshot = place_in_hf_cache(father, "org/father", cache)
    place_in_hf_cache(mother, "org/mother", cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    by_id = Recipe(father="org/father@" + father_snapshot.name, mother="org/mother", ratios=0.3)
    by_path = Recipe(father=father, mother=mother, ratios=0.3)
    a = TensorReader(merge_to_disk(by_id, tmp_path / "a"))
    b = TensorReader(merge_to_disk(by_path, tmp_path / "b"))
    assert all(torch.equal(a.get(n), b.get(n)) for n in b.names)
