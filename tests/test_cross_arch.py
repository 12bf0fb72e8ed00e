"""Cross-architecture FFN breeding (issue 12, part 1): a Gemma 4 father and a Qwen3.5 GatedDeltaNet mother of one
hidden size and different depths. Only the FFNs are bred, layer i with the mother's layer at the same relative
depth; attention, norms and embeddings stay the father's; the child loads with the father's class."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from darwin_core.errors import DarwinError
from darwin_core.io.tensors import TensorReader
from darwin_core.merge.disk import merge_to_disk
from darwin_core.merge.pairing import layer_rows, pairing_for, pairing_for_folders
from darwin_core.parents.anatomy import classify, depth_layer_map
from darwin_core.parents.compatibility import Verdict, compatibility
from darwin_core.parents.hub import resolve_model
from darwin_core.recipe import Recipe
from darwin_core.testing.fixtures import write_tiny_model

FATHER_LAYERS, MOTHER_LAYERS = 4, 6
RATIO = 0.3


@pytest.fixture(scope="module")
def cross_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cross-arch")
    father = write_tiny_model("gemma4_text", root / "father", seed=0)
    mother = write_tiny_model("qwen3_5_text", root / "mother", seed=1, overrides={"num_hidden_layers": MOTHER_LAYERS})
    return father, mother


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_the_layer_map_follows_relative_depth_and_a_recipe_overrides_it(cross_pair):
    assert depth_layer_map(4, 6) == {0: 0, 1: 2, 2: 3, 3: 5}
    assert depth_layer_map(42, 32)[41] == 31 and depth_layer_map(42, 32)[0] == 0 and depth_layer_map(1, 9) == {0: 0}
    rows = layer_rows(pairing_for_folders(*cross_pair, layer_map={1: 1}))
    assert [(r["father_layer"], r["mother_layer"], r["bred"]) for r in rows] == [
        (0, 0, True), (1, 1, True), (2, 3, True), (3, 5, True)]
    with pytest.raises(DarwinError, match="mother layer 9, but the mother has 6 layers"):
        pairing_for_folders(*cross_pair, layer_map={0: 9})


def test_the_child_of_gemma4_and_qwen3_5_keeps_the_fathers_attention_and_blends_each_ffn_with_its_mapped_layer(
        cross_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    father_dir, mother_dir = cross_pair
    recipe = Recipe(father=father_dir, mother=mother_dir, method="linear", ratios=RATIO)
    child_dir = merge_to_disk(recipe, tmp_path / "child")
    father, mother, child = _tensors(father_dir), _tensors(mother_dir), _tensors(child_dir)
    assert list(child) == list(father) and json.loads((child_dir / "config.json").read_text())["model_type"] == "gemma4_text"
    mapping = depth_layer_map(FATHER_LAYERS, MOTHER_LAYERS)
    bred = 0
    for name, tensor in child.items():
        role = classify(name)
        local = name.split(f"layers.{role.layer}.", 1)[-1]
        partner = f"model.layers.{mapping[role.layer]}.{local}" if role.layer is not None else None
        if role.role == "ffn" and partner in mother:
            expected = (1 - RATIO) * father[name] + RATIO * mother[partner]
            torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
            bred += 1
        else:  # attention, norms, embeddings, Gemma's per-layer-input FFN the mother lacks: the father's bytes
            assert torch.equal(tensor, father[name]), name
    assert bred == 3 * FATHER_LAYERS
    model = AutoModelForCausalLM.from_pretrained(child_dir)
    assert type(model).__name__ == "Gemma4ForCausalLM"
    out = model.generate(torch.tensor([[1, 5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def _narrower_ffn(source: Path, out: Path, layers: set[int], width: int = 48) -> Path:
    """A copy of `source` whose FFN on `layers` has another intermediate size (headers are all the gate reads)."""
    out.mkdir()
    tensors = _tensors(source)
    for name, tensor in list(tensors.items()):
        role = classify(name)
        if role.role == "ffn" and role.layer in layers:
            tensors[name] = (tensor[:width] if "down_proj" not in name else tensor[:, :width]).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for side in source.iterdir():
        if side.name != "model.safetensors":
            (out / side.name).write_bytes(side.read_bytes())
    return out


def test_layers_whose_ffn_shapes_differ_stay_the_fathers_and_the_report_names_them(cross_pair, tmp_path):
    father_dir, mother_dir = cross_pair
    mother_dir = _narrower_ffn(mother_dir, tmp_path / "narrow-mother", layers={2, 3})  # father layers 1 and 2 map there
    verdict = compatibility(*(resolve_model(str(p), local_mode=True) for p in (father_dir, mother_dir)))
    assert verdict.verdict is Verdict.FFN_ONLY and verdict.kept_layers == [1, 2]
    assert "father layers 1 and 2 stay the father's" in verdict.reason
    rows = layer_rows(pairing_for_folders(father_dir, mother_dir))
    assert [r["bred"] for r in rows] == [True, False, False, True]
    assert "feed-forward shapes differ: mlp.down_proj.weight is [32, 64] in the father but [32, 48]" in rows[1]["why"]
    child = _tensors(merge_to_disk(Recipe(father=father_dir, mother=mother_dir, ratios=0.5), tmp_path / "child"))
    father = _tensors(father_dir)
    assert torch.equal(child["model.layers.1.mlp.up_proj.weight"], father["model.layers.1.mlp.up_proj.weight"])
    assert not torch.equal(child["model.layers.0.mlp.up_proj.weight"], father["model.layers.0.mlp.up_proj.weight"])


def test_different_hidden_sizes_are_refused_in_one_sentence(cross_pair):
    father = resolve_model(str(cross_pair[0]), local_mode=True)
    mother = resolve_model(str(cross_pair[1]), local_mode=True)
    wider = dataclasses.replace(mother, tensors={n: (tuple(48 if d == 32 else d for d in s), t)
                                                 for n, (s, t) in mother.tensors.items()},
                                config={**mother.config, "hidden_size": 48})
    result = compatibility(father, wider)
    assert result.verdict is Verdict.INCOMPATIBLE
    assert result.reason.startswith("The hidden sizes differ (32 vs 48), so no weight can be blended")
    assert result.reason.count(". ") == 0 and result.reason.endswith(".")
    with pytest.raises(DarwinError, match="^These parents cannot be bred: The hidden sizes differ"):
        pairing_for(father, wider)


def test_a_pair_whose_ffns_never_line_up_is_refused_in_one_sentence(fixture_model):
    result = compatibility(*(resolve_model(str(fixture_model(a)), local_mode=True) for a in ("mixtral", "phi3")))
    assert result.verdict is Verdict.INCOMPATIBLE and "not even the feed-forward weights line up" in result.reason
    assert result.reason.count(". ") == 0


def test_the_resident_child_breeds_the_cross_arch_pair_as_the_disk_merge_does(cross_pair, tmp_path):
    from darwin_core.evolution.child import ResidentChild

    recipe = Recipe(father=cross_pair[0], mother=cross_pair[1], method="linear", ratios={"default": 0.0,
                    "roles": {"ffn": 0.7}})
    child = ResidentChild(*cross_pair, device="cpu")
    assert child.pairing.mode == "ffn_only"
    child.load_recipe(recipe)
    on_disk = _tensors(merge_to_disk(recipe, tmp_path / "child"))
    state = child.model.state_dict()
    for name, tensor in on_disk.items():
        assert torch.equal(state[name], tensor), name
    child.load_parent("mother")
    assert type(child.model).__name__ == "Qwen3_5ForCausalLM"
    child.load_parent("father")
    assert type(child.model).__name__ == "Gemma4ForCausalLM"
    assert TensorReader(cross_pair[0]).names == child.names


def _choice_task(path: Path) -> Path:
    words = ["abcd", "bcda", "cdab", "dabc", "abdc", "badc", "cadb", "dcba"]
    with open(path, "w", encoding="utf-8") as handle:
        for k in range(16):
            w = words[k % len(words)]
            handle.write(json.dumps({"id": f"q{k}", "prompt": f"rev {w} =", "choices": [w[::-1], w], "answer": 0}) + "\n")
    return path


def test_an_evolution_of_the_cross_arch_pair_with_the_per_layer_ffn_genome_completes_on_cpu(cross_pair, tmp_path,
                                                                                          one_thread):
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.runs import queue as jobs

    config = EvolutionConfig(father=str(cross_pair[0]), mother=str(cross_pair[1]),
                             tasks=({"file": str(_choice_task(tmp_path / "mc.jsonl")), "name": "mc"},),
                             genome="per-layer-ffn", population=2, generations=2, proxy_items=4, topk_full=1,
                             seed=1, device="cpu", mri=None, batch_size=8, frozen_layers=(1,))
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="genesis")
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    child = folder.path / "child"
    recipe = Recipe.load(child)
    assert recipe.genome.space == "per-layer-ffn" and recipe.frozen_layers == (1,)
    father = _tensors(cross_pair[0])
    merged = _tensors(child)
    assert torch.equal(merged["model.layers.1.mlp.up_proj.weight"], father["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], father["model.layers.0.self_attn.q_proj.weight"])
    report = json.loads((folder.path / "report.json").read_text())
    assert report["pairing"]["mode"] == "ffn_only"
    assert [(r["father_layer"], r["mother_layer"], r["bred"]) for r in report["pairing"]["layers"]] == [
        (0, 0, True), (1, 2, False), (2, 3, True), (3, 5, True)]
    assert report["pairing"]["kept_layers"] == [{"father_layer": 1, "why": "frozen: the recipe keeps this layer the father's"}]


def test_a_candidate_of_an_ffn_only_run_under_the_default_genome_is_rebuilt_in_the_genome_it_was_bred_in(
        cross_pair, tmp_path, one_thread):
    # config.yaml keeps the genome as submitted (the default, darwin-v6); the search ran per-layer-ffn
    from darwin_core.chat.models import candidate_recipe, candidates
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.runs import queue as jobs

    config = EvolutionConfig(father=str(cross_pair[0]), mother=str(cross_pair[1]),
                             tasks=({"file": str(_choice_task(tmp_path / "mc.jsonl")), "name": "mc"},),
                             population=2, generations=1, proxy_items=4, topk_full=1, seed=1, device="cpu", mri=None,
                             batch_size=8)
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="default-genome")
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    measured = candidates(folder.path)
    assert measured and config.genome == "darwin-v6"
    for name, record in measured.items():
        recipe = candidate_recipe(folder.path, name)
        assert recipe.genome.space == "per-layer-ffn" and recipe.recipe_hash == record["recipe_hash"]
    from ui import session, views  # the Evolve tab names the best genome's dimensions after that genome too

    view = views.render_run("default-genome", runs_dir=tmp_path / "runs", who=session.visitor(None), local_mode=True)
    assert list(view["genome"].data[0].x) == ["layer_0", "layer_1", "layer_2", "layer_3"]


def test_the_parents_tab_shows_the_ffn_only_verdict_and_the_layer_map_picture(cross_pair):
    from ui.tabs.parents import inspect_parents, parents_layer_map

    father, mother = (str(p) for p in cross_pair)
    facts, compat, verdict, error = inspect_parents(None, father, None, mother, local_mode=True, token=None)
    assert error == "" and verdict.startswith("**Breedable, feed-forward only")
    assert "attention stays the father's" in verdict
    update = parents_layer_map(None, father, None, mother, local_mode=True, token=None)
    assert update["visible"] is True
    figure = update["value"]
    bred = next(trace for trace in figure.data if trace.name.startswith("FFN bred"))
    assert list(bred.x) == [0, 1, 2, 3] and list(bred.y) == [0, 2, 3, 5]


def test_the_parents_tab_hides_the_layer_map_for_a_same_architecture_pair(fixture_pair):
    from ui.tabs.parents import parents_layer_map

    father, mother = (str(p) for p in fixture_pair("llama"))
    assert parents_layer_map(None, father, None, mother, local_mode=True, token=None)["visible"] is False


def test_the_card_recipe_section_shows_the_layer_map(cross_pair):
    from darwin_core.publishing import recipe_view

    recipe = Recipe(father=cross_pair[0], mother=cross_pair[1], ratios=0.5, frozen_layers=(2,))
    use = recipe_view.recipe_use(recipe, TensorReader(cross_pair[0]).names)
    view = recipe_view.recipe_view(recipe, use)
    assert view["layer_map"] == {0: 0, 1: 2, 3: 5}
    assert view["father_ffn_layers"] == {2: "frozen: the recipe keeps this layer the father's"}
    assert "layer_map:" in recipe_view.view_yaml(view)


def test_an_ffn_only_pair_searches_the_per_layer_ffn_genome_and_refuses_genomes_that_blend_attention(cross_pair,
                                                                                                    tmp_path):
    from darwin_core.evolution.pipeline import EvolutionConfig, fit_to_pairing

    base = dict(father=str(cross_pair[0]), mother=str(cross_pair[1]), tasks=("reverse",))
    said: list[str] = []
    config, pairing = fit_to_pairing(EvolutionConfig(**base), runs_dir=tmp_path, log=said.append)
    assert pairing.mode == "ffn_only" and config.genome == "per-layer-ffn"
    assert said and "per-layer-ffn genome instead of darwin-v6" in said[0]
    for genome in ("per-layer", "per-block-role"):
        with pytest.raises(DarwinError, match=f"^These parents share only their feed-forward weights, so the {genome} "
                                              "genome.*use genome: per-layer-ffn.$"):
            fit_to_pairing(EvolutionConfig(**base, genome=genome), runs_dir=tmp_path)
    for extra in ({"mri": "auto"}, {"mri": "auto", "start": "mri"}):
        with pytest.raises(DarwinError, match="^The MRI compares the parents tensor by tensor, and these parents share "
                                              "only their feed-forward weights") as refused:
            fit_to_pairing(EvolutionConfig(**base, **extra), runs_dir=tmp_path)
        assert str(refused.value).count(". ") == 0


def test_a_same_architecture_pair_keeps_its_genome(fixture_pair, tmp_path):
    from darwin_core.evolution.pipeline import EvolutionConfig, fit_to_pairing

    father, mother = (str(p) for p in fixture_pair("llama"))
    config, pairing = fit_to_pairing(EvolutionConfig(father=father, mother=mother, tasks=("reverse",),
                                                     genome="per-block-role", mri="auto"), runs_dir=tmp_path)
    assert pairing.mode == "names" and config.genome == "per-block-role" and config.mri == "auto"


def test_merge_prints_the_layer_map_and_the_kept_layers(cross_pair, tmp_path, capsys):
    from darwin_core.cli.main import main

    father_dir, mother_dir = cross_pair
    narrow = _narrower_ffn(mother_dir, tmp_path / "narrow-mother", layers={2, 3})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Recipe(father=father_dir, mother=narrow, ratios=0.4).to_yaml())
    assert main(["merge", str(recipe), "--out", str(tmp_path / "child")]) == 0
    out = capsys.readouterr().out
    assert "| father layer | mother layer | FFN |" in out and "| 0 | 0 | bred |" in out and "| 3 | 5 | bred |" in out
    assert "| 1 | 2 | kept (the father's): feed-forward shapes differ" in out
    assert "Kept as the father's: layer 1 (feed-forward shapes differ" in out and "; layer 2 (" in out
    from darwin_core.evolution.pipeline import pairing_report

    kept = pairing_report(pairing_for_folders(father_dir, narrow), ())["kept_layers"]  # what report.json says
    assert [row["father_layer"] for row in kept] == [1, 2] and kept[0]["why"].startswith("feed-forward shapes differ")


def test_the_card_reads_only_the_bred_ffns_and_shows_the_layer_map_table(cross_pair):
    from darwin_core.publishing import recipe_view
    from darwin_core.publishing.card import _layer_map_section
    from darwin_core.genome.spaces import FFN_ROLES

    recipe = Recipe(father=cross_pair[0], mother=cross_pair[1], ratios={"default": 0.5, "roles": {"attn": 0.9}},
                    frozen_layers=(2,))
    use = recipe_view.recipe_use(recipe, TensorReader(cross_pair[0]).names)
    assert use.ratio_reads and {read.role for read in use.ratio_reads} <= set(FFN_ROLES)
    view = recipe_view.recipe_view(recipe, use)
    assert "roles" not in view["ratios"]  # the attention ratio moves no weight of this child: not shown
    section = _layer_map_section(recipe_view.layer_map_of(recipe))
    assert "| 1 | 2 | bred |" in section and "| 2 | 3 | kept (the father's): frozen" in section
    assert "mergekit merges tensors of one name and cannot express this pairing" in section
    assert "Kept as the father's: layer 2 (frozen" in section


def test_the_preflight_refuses_an_mri_for_an_ffn_only_pair_before_any_run_folder(cross_pair, tmp_path):
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.evolution.preflight import check_before_run

    config = EvolutionConfig(father=str(cross_pair[0]), mother=str(cross_pair[1]), tasks=("reverse",), mri="auto")
    with pytest.raises(DarwinError, match="^The MRI compares the parents tensor by tensor"):
        check_before_run(config, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mergekit_export_refuses_an_ffn_only_recipe_in_one_sentence(cross_pair):
    from darwin_core.merge.mergekit_export import mergekit_yaml

    recipe = Recipe(father=cross_pair[0], mother=cross_pair[1], method="linear", ratios=RATIO)
    with pytest.raises(DarwinError, match="^mergekit cannot express this recipe: its parents are paired by a layer map"):
        mergekit_yaml(recipe)
