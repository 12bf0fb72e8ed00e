"""The shipped demo zoo: loadable parents, weights matching zoo.json, a deterministic build, honest numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from darwin_core.zoo import build as zoo
from darwin_core.errors import DarwinError
from darwin_core.fitness.demo_tasks import demo_task
from darwin_core.fitness.generate import exact_match_accuracy, generate_greedy

ZOO = zoo.DEFAULT_ZOO_DIR
TINY = replace(zoo.DEFAULT_SPEC, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1, batch_size=8, base_steps=3, specialist_steps=2, warmup_steps=1)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return zoo.read_manifest(ZOO)  # the file as built (load_zoo_manifest adds the rivals for the page)


@pytest.fixture(scope="module")
def father():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = zoo.zoo_paths(ZOO)
    return AutoModelForCausalLM.from_pretrained(paths["father"]).eval(), AutoTokenizer.from_pretrained(paths["father"])


def test_shipped_weights_match_the_sha256_in_zoo_json(manifest):
    assert set(manifest["sha256"]) == {f"{m}/model.safetensors" for m in zoo.MEMBERS}
    assert zoo.verify_hashes(ZOO, manifest["sha256"]) == []


def test_zoo_json_follows_the_schema(manifest):
    assert set(manifest["models"]) == {"base", "father", "mother", "linear_50_50"}
    assert manifest["models"]["linear_50_50"]["path"] is None
    for name, entry in manifest["models"].items():
        assert set(entry["heldout_accuracy"]) == set(manifest["skills"])
        assert entry["composite"] == pytest.approx(sum(entry["heldout_accuracy"].values()) / len(manifest["skills"]), abs=1e-4)
        assert entry["architecture"] == "qwen3" and entry["parameters"] > 0
    for member in zoo.MEMBERS:
        assert manifest["models"][member]["path"] == f"assets/zoo/{member}"
        assert manifest["models"][member]["bytes"] == (ZOO / member / "model.safetensors").stat().st_size < 8 * 2**20
    assert manifest["build_seconds"] > 0


def test_shipped_parents_load_with_auto_classes():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    listing = zoo.load_zoo_manifest(ZOO)  # both families' shipped members, as the Parents tab lists them
    for member, path in zoo.zoo_paths(ZOO).items():
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.model_type == "qwen3"
        assert sum(p.numel() for p in model.parameters()) == listing["models"][member]["parameters"]
        assert tokenizer("rev: abc =")["input_ids"][0] == tokenizer.bos_token_id
        for name in ("generation_config.json", "config.json", "tokenizer.json", "tokenizer_config.json"):
            assert (path / name).is_file()


def test_the_father_scores_what_zoo_json_says_on_its_first_skill(manifest, father):
    model, tokenizer = father
    skill = manifest["spec"]["father_skills"][0]
    accuracy, _ = exact_match_accuracy(model, tokenizer, demo_task(skill, manifest["seed"]))
    assert accuracy == pytest.approx(manifest["models"]["father"]["heldout_accuracy"][skill], abs=1e-9)


def test_batched_greedy_generation_equals_one_prompt_at_a_time(father):
    model, tokenizer = father
    prompts = [i.prompt for name in ("reverse", "uppercase", "translate", "sort") for i in demo_task(name).heldout[:3]]
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=8, batch_size=64)
    one_by_one = [generate_greedy(model, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == one_by_one
    small_batches = generate_greedy(model, tokenizer, prompts, max_new_tokens=8, batch_size=5)
    assert small_batches == batched
    # and the same as transformers' own greedy search on one prompt
    enc = tokenizer(prompts[0], return_tensors="pt")
    with torch.inference_mode():
        ref = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True) == batched[0]


def test_exact_match_accuracy_counts_per_item(father):
    model, tokenizer = father
    task = demo_task("reverse")
    accuracy, correct = exact_match_accuracy(model, tokenizer, task, split="search")
    assert len(correct) == len(task.search) and accuracy == sum(correct) / len(correct)


def test_a_tiny_build_twice_gives_identical_bytes_and_a_complete_folder(tmp_path):
    first = zoo.build_zoo(tmp_path / "a", TINY, log=None)
    second = zoo.build_zoo(tmp_path / "b", TINY, log=None)
    assert first["sha256"] == second["sha256"]
    assert first["models"]["father"]["heldout_accuracy"] == second["models"]["father"]["heldout_accuracy"]
    for member in zoo.MEMBERS:
        assert (tmp_path / "a" / member / "model.safetensors").read_bytes() == (tmp_path / "b" / member / "model.safetensors").read_bytes()
    on_disk = json.loads((tmp_path / "a" / "zoo.json").read_text())
    assert on_disk["sha256"] == first["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_check_rebuild_passes_on_a_tiny_zoo_and_a_changed_weight_file_is_caught(tmp_path):
    manifest = zoo.build_zoo(tmp_path / "z", TINY, log=None)
    mismatched, fresh = zoo.check_rebuild(tmp_path / "z", TINY, log=None)
    assert mismatched == [] and fresh["sha256"] == manifest["sha256"]
    weights = tmp_path / "z" / "mother" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert zoo.verify_hashes(tmp_path / "z", manifest["sha256"]) == ["mother/model.safetensors"]


def test_the_specialists_stay_close_to_the_base():
    from safetensors.torch import load_file

    base = load_file(ZOO / "base" / "model.safetensors")
    for member in ("father", "mother"):
        tuned = load_file(ZOO / member / "model.safetensors")
        assert tuned.keys() == base.keys()
        moved = sum(float(((tuned[k] - base[k]) ** 2).sum()) for k in base) ** 0.5
        size = sum(float((base[k] ** 2).sum()) for k in base) ** 0.5
        assert 0 < moved / size < 0.2  # a small delta: the regime where weight merging keeps both skills


def test_the_50_50_merge_is_the_exact_mean_of_every_tensor_tied_embeddings_included():
    tokenizer = zoo.make_tokenizer()
    a, b = zoo.make_model(TINY, tokenizer), zoo.make_model(replace(TINY, seed=1), tokenizer)
    merged = zoo.linear_50_50(a, b).state_dict()
    assert "lm_head.weight" in merged  # tied: the state dict names the embedding twice
    for name, tensor in merged.items():
        assert torch.equal(tensor, (a.state_dict()[name] + b.state_dict()[name]) / 2), name


def test_missing_zoo_is_one_clear_sentence(tmp_path):
    with pytest.raises(DarwinError, match="No demo zoo"):
        zoo.load_zoo_manifest(tmp_path)
    with pytest.raises(DarwinError, match="lacks base, father, mother"):
        zoo.zoo_paths(tmp_path)


@pytest.mark.slow
def test_full_rebuild_check_reproduces_the_shipped_bytes():
    result = subprocess.run([sys.executable, "-m", "darwin_core", "zoo", "build", "--check"], cwd=zoo.REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
