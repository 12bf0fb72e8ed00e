"""Parents whose tokenizers differ breed end to end with each tokenizer source (issue 12, tokenizers).

The pair: a tiny Llama father (56 tokens, 64 embedding rows) and a fine-tune that added two chat tokens and a
chat template and resized its embedding and head to 58 rows. Each of `father`, `mother` and `union`:

- breeds through `merge_to_disk` into a child that loads in transformers, generates, and whose tokenizer,
  chat template, generation_config and vocab_size are the ones it was bred with;
- gives the same tensors, byte for byte, through the evolution's resident child;
- for `father` and `union`, gives the embedding and head tensors mergekit 0.1.5 writes for the same config,
  the config being Darwin's own mergekit export (`mergekit_yaml`, which writes `tokenizer_source`).

A broken tokenizer (one that encodes text to nothing, or has more tokens than its config's vocab_size) gets its
one sentence from the Parents tab's handler, `python -m darwin_core scan` and `python -m darwin_core evolve`.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import BEST_RECIPE, CHILD, MRI_SCAN
from darwin_core.io.tensors import TensorReader
from darwin_core.merge.disk import merge_to_disk
from darwin_core.merge.mergekit_export import mergekit_yaml
from darwin_core.merge.pairing import pairing_for_folders
from darwin_core.recipe import Recipe
from darwin_core.testing.fixtures import write_tiny_model
from darwin_core.testing.tokenizer_fixtures import (CHAT_TEMPLATE, CHAT_TOKENS, write_chat_mother,
                                                    write_silent_model, write_uncovering_model)

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY_NAMES = ("model.embed_tokens.weight", "lm_head.weight")
CHILD_TOKENS = {"father": 56, "mother": 58, "union": 58}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer-pair")
    father = write_tiny_model("llama", root / "father", seed=0)
    return father, write_chat_mother(father, root / "mother")


@pytest.fixture(scope="module")
def children(pair, tmp_path_factory):
    """source → the folder merge_to_disk wrote for a 50/50 linear recipe with that tokenizer source."""
    root = tmp_path_factory.mktemp("tokenizer-children")
    return {source: merge_to_disk(recipe(pair, source), root / source) for source in CHILD_TOKENS}


def recipe(pair, source: str, method: str = "linear") -> Recipe:
    father, mother = pair
    return Recipe(father={"id": "father", "path": str(father)}, mother={"id": "mother", "path": str(mother)},
                  method=method, ratios=0.5, tokenizer_source=source)


@pytest.mark.parametrize("source", list(CHILD_TOKENS))
def test_each_tokenizer_source_breeds_a_child_that_loads_and_speaks_its_vocabulary(pair, children, source):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    father, mother = pair
    child = children[source]
    tokenizer = AutoTokenizer.from_pretrained(child)
    model = AutoModelForCausalLM.from_pretrained(child)
    rows = CHILD_TOKENS[source]
    assert len(tokenizer) == rows and model.config.vocab_size == rows
    assert json.loads((child / "config.json").read_text())["vocab_size"] == rows
    assert all(TensorReader(child).shape(name) == (rows, 32) for name in VOCABULARY_NAMES)
    ids = tokenizer("the fox", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3 and int(out.max()) < rows
    assert (set(CHAT_TOKENS) <= set(tokenizer.get_vocab())) == (source != "father")
    donor = mother if source == "mother" else father
    assert (child / "generation_config.json").read_bytes() == (donor / "generation_config.json").read_bytes()
    assert (tokenizer.chat_template == CHAT_TEMPLATE) == (source == "mother")
    assert Recipe.load(child).tokenizer_source.value == source


def test_the_recipe_names_its_tokenizer_source_only_when_it_is_not_the_father(pair):
    default, father = Recipe(father="a/b", mother="c/d"), recipe(pair, "father")
    assert "tokenizer_source" not in default.to_dict() and "tokenizer_source" not in default.canonical()
    assert recipe(pair, "union").to_dict()["tokenizer_source"] == "union"
    assert recipe(pair, "union").recipe_hash != father.recipe_hash
    assert Recipe.from_yaml(recipe(pair, "mother").to_yaml()) == recipe(pair, "mother")
    with pytest.raises(DarwinError, match="^The recipe's tokenizer_source must be father, mother or union, not 'base'"):
        recipe(pair, "base")


@pytest.mark.parametrize("source", ["father", "union"])
def test_the_childs_embedding_and_head_equal_mergekits_for_the_exported_config(pair, children, tmp_path, source):
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    father, mother = pair
    config = yaml.safe_load(mergekit_yaml(recipe(pair, source)))
    assert config["tokenizer_source"] == {"father": "base", "union": "union"}[source]
    assert config["base_model"] == str(father)
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    theirs, ours = TensorReader(tmp_path / "mk"), TensorReader(children[source])
    for name in VOCABULARY_NAMES:
        assert torch.equal(ours.get(name), theirs.get(name)), name
    assert json.loads((tmp_path / "mk" / "config.json").read_text())["vocab_size"] == CHILD_TOKENS[source]


def test_the_export_names_the_mother_by_her_path_for_her_tokenizer(pair):
    config = yaml.safe_load(mergekit_yaml(recipe(pair, "mother")))
    assert config["tokenizer_source"] == str(pair[1]) and config["base_model"] == str(pair[0])


def _resident_child_takes_a_tokenizer_source() -> bool:
    from darwin_core.evolution.child import ResidentChild

    return "tokenizer_source" in inspect.signature(ResidentChild.pairing_for).parameters


@pytest.mark.skipif(not _resident_child_takes_a_tokenizer_source(),
                    reason="evolution/child.py does not pass the recipe's tokenizer_source to its pairing yet")
def test_the_resident_child_holds_the_bytes_merge_to_disk_wrote(pair, children):
    from darwin_core.evolution.child import ResidentChild

    father, mother = pair
    resident = ResidentChild(father, mother, device="cpu")
    for source in ("union", "father", "mother", "union"):  # switching vocabularies back and forth
        resident.load_recipe(recipe(pair, source))
        state = resident.model.state_dict()
        disk = TensorReader(children[source])
        for name in disk.names:
            assert torch.equal(state[resident.plan.direct[name]], disk.get(name)), (source, name)
        assert len(resident.tokenizer) == CHILD_TOKENS[source]
    resident.load_parent("father")
    assert len(resident.tokenizer) == 56 and resident.model.get_input_embeddings().weight.shape[0] == 64
    resident.load_parent("mother")  # her own vocabulary: her own model and tokenizer
    assert len(resident.tokenizer) == 58


def test_an_ffn_only_pair_keeps_the_fathers_tokenizer(tmp_path):
    father = write_tiny_model("gemma4_text", tmp_path / "father", seed=0)
    mother = write_tiny_model("qwen3_5_text", tmp_path / "mother", seed=0)
    assert pairing_for_folders(father, mother, tokenizer_source="father").vocabulary is None
    with pytest.raises(DarwinError, match="FFN-only pair keeps the father's embeddings and tokenizer"):
        pairing_for_folders(father, mother, tokenizer_source="union")


# -- a broken tokenizer: one sentence from the Parents tab, scan and evolve ----------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken-tokenizers")
    return {"healthy": write_tiny_model("llama", root / "healthy", seed=1),
            "silent": write_silent_model(root / "silent"),
            "uncovering": write_uncovering_model(root / "uncovering")}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "DARWIN_RUNS_DIR": str(cwd / "runs")}
    return subprocess.run([sys.executable, "-m", "darwin_core", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_sentence(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("which, says", [("silent", "to no tokens at all"),
                                         ("uncovering", "has 56 tokens but its config.json's vocab_size is 40")])
def test_the_parents_tab_shows_the_broken_tokenizers_sentence(broken, which, says):
    from ui.tabs.parents import inspect_parents

    facts, _, verdict, error = inspect_parents(None, str(broken[which]), None, str(broken["healthy"]),
                                               local_mode=True, token=None)
    assert error.startswith("**⚠ The tokenizer of the father") and says in error and error.count(". ") == 0
    assert "**Broken tokenizer:**" in verdict and len(facts) > 0


def test_the_parents_tab_reports_what_differs_between_healthy_tokenizers(pair):
    from ui.tabs.parents import inspect_parents

    _, _, verdict, error = inspect_parents(None, str(pair[0]), None, str(pair[1]), local_mode=True, token=None)
    assert error == ""
    assert "vocabularies differ in size (64 vs 58 rows)" in verdict
    assert "The mother's vocabulary is the father's plus tokens of her own." in verdict
    assert "The chat templates differ: only the mother has one." in verdict and "tokenizer_source: mother" in verdict


@pytest.mark.parametrize("which", ["silent", "uncovering"])
def test_scan_and_evolve_refuse_a_broken_tokenizer_in_one_sentence(broken, tmp_path, which):
    scan = _one_sentence(_cli("scan", str(broken[which]), "--mother", str(broken["healthy"]), cwd=tmp_path))
    assert scan.startswith("The tokenizer of the")
    (tmp_path / "breed.yaml").write_text(f"father: {broken['healthy']}\nmother: {broken[which]}\npopulation: 2\n"
                                         "generations: 1\nproxy_items: 2\ntopk_full: 1\n", encoding="utf-8")
    evolve = _one_sentence(_cli("evolve", "breed.yaml", cwd=tmp_path))
    assert evolve.startswith("The tokenizer of the mother") and not (tmp_path / "runs").exists()


# -- an evolution between parents whose vocabularies differ ---------------------------------------------------------


def test_an_evolution_breeds_every_candidate_and_the_child_in_the_configured_vocabulary(pair, tmp_path):
    from darwin_core.runs import queue as jobs
    from tests.test_evolve import tiny_config, write_choice_task

    father, mother = pair
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl", n=20), population=3,
                         generations=1, tokenizer_source="union")
    folder = jobs.prepare_foreground(config, tmp_path / "runs")
    assert jobs.execute(folder.path) == "finished"
    best = Recipe.load(folder.path / BEST_RECIPE)
    assert best.tokenizer_source.value == "union"
    child = folder.path / CHILD
    assert json.loads((child / "config.json").read_text())["vocab_size"] == CHILD_TOKENS["union"]
    assert TensorReader(child).shape("model.embed_tokens.weight")[0] == CHILD_TOKENS["union"]
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(child)) == CHILD_TOKENS["union"]
    assert all(token in AutoTokenizer.from_pretrained(child).get_vocab() for token in CHAT_TOKENS)


def test_the_mri_of_the_pair_compares_every_tensor_but_the_vocabulary_ones_and_says_why(pair):
    from darwin_core.mri.scan import scan_pair, scan_summary

    father, mother = pair
    scan = scan_pair(father, mother)
    uncompared = scan["divergence"]["uncompared"]
    assert sorted(uncompared) == sorted(VOCABULARY_NAMES)
    assert all("64 rows in the father, 58 in the mother" in why for why in uncompared.values())
    names = set(TensorReader(father).names)
    assert set(scan["divergence"]["tensors"]) == names - set(VOCABULARY_NAMES)
    assert set(scan["prescription"]) == names, "every tensor still gets a prescribed ratio"
    assert "not compared: lm_head.weight, model.embed_tokens.weight" in scan_summary(scan)


def test_an_evolution_of_the_pair_starts_from_its_mri(pair, tmp_path):
    from darwin_core.runs import queue as jobs
    from tests.test_evolve import tiny_config, write_choice_task

    father, mother = pair
    config = tiny_config(father, mother, write_choice_task(tmp_path / "mc.jsonl", n=20), population=3, generations=1,
                         tokenizer_source="union", mri="auto", start="mri")
    folder = jobs.prepare_foreground(config, tmp_path / "runs")
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    scan = json.loads(folder.file(MRI_SCAN).read_text(encoding="utf-8"))
    assert sorted(scan["divergence"]["uncompared"]) == sorted(VOCABULARY_NAMES)
    assert Recipe.load(folder.path / BEST_RECIPE).tokenizer_source.value == "union"


def test_a_tokenizer_source_the_pair_cannot_use_is_one_sentence_before_any_run_folder(tmp_path):
    from darwin_core.evolution.config import EvolutionConfig
    from darwin_core.evolution.preflight import check_before_run
    from tests.test_evolve import write_choice_task

    with pytest.raises(DarwinError, match="tokenizer_source must be one of father, mother, union"):
        EvolutionConfig(father="a", mother="b", tokenizer_source="both")
    father = write_tiny_model("gemma4_text", tmp_path / "father", seed=0)
    mother = write_tiny_model("qwen3_5_text", tmp_path / "mother", seed=0)
    config = EvolutionConfig(father=str(father), mother=str(mother), device="cpu", tokenizer_source="mother",
                             tasks=({"file": str(write_choice_task(tmp_path / "mc.jsonl")), "name": "mc"},))
    with pytest.raises(DarwinError, match="FFN-only pair keeps the father's embeddings and tokenizer"):
        check_before_run(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
