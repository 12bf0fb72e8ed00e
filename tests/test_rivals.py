"""The rivals family: parents whose deltas interfere, so a uniform blend loses skills a layer-wise recipe keeps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from darwin_core.errors import DarwinError
from darwin_core.fitness.demo_tasks import demo_task
from darwin_core.fitness.generate import exact_match_accuracy
from darwin_core.parents import demo
from darwin_core.zoo import build as zoo
from darwin_core.zoo import rivals

RIVALS = demo.DEFAULT_RIVALS_DIR
TINY_ZOO = replace(zoo.DEFAULT_SPEC, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                   batch_size=8, base_steps=3, specialist_steps=2, warmup_steps=1)
TINY_RIVALS = replace(rivals.DEFAULT_RIVALS_SPEC, father_parts=("model.layers.0.",), mother_parts=("model.layers.1.",),
                      steps=2, warmup_steps=1, batch_size=8)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return demo.read_manifest(RIVALS)


def test_shipped_rivals_match_their_sha256_and_start_from_the_zoos_base(manifest):
    assert set(manifest["sha256"]) == {f"{m}/model.safetensors" for m in demo.RIVALS_SHIPPED}
    assert zoo.verify_hashes(RIVALS, manifest["sha256"]) == []
    assert manifest["base_sha256"] == zoo.read_manifest(zoo.DEFAULT_ZOO_DIR)["sha256"]["base/model.safetensors"]
    for member in demo.RIVALS_SHIPPED:
        assert manifest["models"][member]["bytes"] == (RIVALS / member / "model.safetensors").stat().st_size < 8 * 2**20


def test_each_rival_learnt_a_skill_the_base_lacks_and_a_uniform_blend_loses_both(manifest):
    models, (father_skill, mother_skill) = manifest["models"], manifest["skills"]
    assert max(models["base"]["heldout_accuracy"].values()) <= 0.05  # the base is near chance on both
    assert models["father"]["heldout_accuracy"][father_skill] >= 0.9
    assert models["mother"]["heldout_accuracy"][mother_skill] >= 0.9
    best_parent = max(models["father"]["composite"], models["mother"]["composite"])
    assert models["linear_50_50"]["composite"] < best_parent / 2
    assert models["by_parts"]["composite"] > best_parent  # the father's early layers + the mother's late ones


def test_the_rivals_moved_only_their_own_layers(manifest):
    from safetensors.torch import load_file

    base = load_file(zoo.DEFAULT_ZOO_DIR / "base" / "model.safetensors")
    for member, key in (("father", "father_parts"), ("mother", "mother_parts")):
        tuned = load_file(RIVALS / member / "model.safetensors")
        own = tuple(manifest["spec"][key])
        moved = {name for name in base if not (tuned[name] == base[name]).all()}
        assert moved and all(any(part in name for part in own) for name in moved)


def test_the_rival_father_scores_what_its_zoo_json_says(manifest):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(RIVALS / "father").eval()
    tokenizer = AutoTokenizer.from_pretrained(RIVALS / "father")
    skill = manifest["skills"][0]
    accuracy, _ = exact_match_accuracy(model, tokenizer, demo_task(skill, manifest["seed"]))
    assert accuracy == pytest.approx(manifest["models"]["father"]["heldout_accuracy"][skill], abs=1e-9)


def test_demo_rivals_resolve_by_name_and_the_listing_gives_their_skills(manifest):
    from darwin_core.parents import resolve_parent_name

    paths = demo.zoo_paths()
    assert paths["rivals_father"] == RIVALS / "father" and paths["rivals_mother"] == RIVALS / "mother"
    resolved = resolve_parent_name("demo:rivals_mother", local_mode=False)
    assert Path(resolved.folder).resolve() == (RIVALS / "mother").resolve()
    listing = demo.load_zoo_manifest()
    assert listing["families"] == {"zoo": ["base", "father", "mother"], "rivals": ["rivals_father", "rivals_mother"]}
    assert listing["models"]["rivals_father"]["heldout_accuracy"] == manifest["models"]["father"]["heldout_accuracy"]
    assert listing["skills"] == zoo.read_manifest(zoo.DEFAULT_ZOO_DIR)["skills"]  # the zoo's, unchanged


def test_the_parents_tab_offers_both_families():
    from ui.tabs.parents import demo_choices, load_demo_zoo

    values = [value for _, value in demo_choices(*load_demo_zoo())]
    assert values == ["demo:base", "demo:father", "demo:mother", "demo:rivals_father", "demo:rivals_mother"]


def test_an_unknown_demo_name_lists_both_families():
    from darwin_core.parents import resolve_parent_name

    with pytest.raises(DarwinError, match="rivals_father, rivals_mother"):
        resolve_parent_name("demo:rivals_base", local_mode=False)


def test_a_tiny_rivals_build_twice_gives_identical_bytes_and_joins_its_zoos_listing(tmp_path):
    zoo.build_zoo(tmp_path / "zoo", TINY_ZOO, log=None)
    assert "rivals_father" not in demo.zoo_paths(tmp_path / "zoo")  # optional: absent until built
    first = rivals.build_rivals(tmp_path / "rivals", TINY_RIVALS, zoo_dir=tmp_path / "zoo", log=None)
    mismatched, second = rivals.check_rivals_rebuild(tmp_path / "rivals", TINY_RIVALS, zoo_dir=tmp_path / "zoo", log=None)
    assert mismatched == [] and first["sha256"] == second["sha256"]
    assert set(demo.zoo_paths(tmp_path / "zoo")) == {"base", "father", "mother", "rivals_father", "rivals_mother"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_rivals_build_refuses_a_zoo_base_that_differs_from_its_manifest(tmp_path):
    zoo.build_zoo(tmp_path / "zoo", TINY_ZOO, log=None)
    weights = tmp_path / "zoo" / "base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(DarwinError, match="differs from its zoo.json"):
        rivals.build_rivals(tmp_path / "rivals", TINY_RIVALS, zoo_dir=tmp_path / "zoo", log=None)
    assert not (tmp_path / "rivals").exists()


def test_a_rivals_folder_maps_back_to_its_demo_name_not_to_the_zoos_father():
    assert demo.demo_name_of(RIVALS / "father") == "rivals_father"
    assert demo.demo_name_of(zoo.DEFAULT_ZOO_DIR / "father") == "father"
    assert demo.demo_name_of(RIVALS) is None
