"""`card RUN > README.md` is a valid card, and the card's recipe shows what decides the child's bytes and nothing else.

Two real (tiny) finished runs on the dense 4-layer fixture llama pair, bred with `jobs.execute` in the darwin-v6
genome: one with linear merging and an MRI prescription (every tensor's ratio set by the per-tensor table), one
with DARE-TIES on base = father without MRI (per-layer rows; the father has no task vector, so his density does
nothing). Neither parent declares a license, so the card comes with a license warning.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from darwin_core.io.runfolder import CHILD
from tests.test_card_privacy import _write_choice_task

REPO_ROOT = Path(__file__).resolve().parents[1]
MOE_AND_HYBRID_ROLES = ("experts", "shared_expert", "router", "linear_attn")
LICENSE_WARNING = "Neither parent declares a license"


def _finish_run(runs_dir: Path, run_id: str, pair: tuple[Path, Path], task: Path, *, method: str, mri: str | None) -> Path:
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.runs import queue as jobs

    father, mother = pair
    config = EvolutionConfig(father=str(father), mother=str(mother), tasks=({"file": str(task), "name": "mc"},),
                             genome="darwin-v6", method=method, population=2, generations=1, proxy_items=4,
                             topk_full=1, seed=3, device="cpu", mri=mri, batch_size=8)
    folder = jobs.prepare_foreground(config, runs_dir, run_id=run_id)
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    return folder.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixture_pair, one_thread) -> dict[str, Path]:
    scratch = tmp_path_factory.mktemp("card-cli")
    pair = fixture_pair("llama", related=True)
    task = _write_choice_task(scratch / "choice.jsonl")
    return {
        "linear-mri": _finish_run(scratch / "runs", "linear-mri", pair, task, method="linear", mri="auto"),
        "dare-ties": _finish_run(scratch / "runs", "dare-ties", pair, task, method="dare_ties", mri=None),
    }


def _card_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "darwin_core", "card", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _card(run: Path) -> str:
    from darwin_core.publishing.cardgen import card_text

    return card_text(run)[0]


def _shown_recipe(card: str) -> dict:
    match = re.search(r"## Recipe\n.*?```yaml\n(.*?)```", card, re.S)
    assert match, card
    return yaml.safe_load(match.group(1))


def _shown_genome(card: str) -> dict[str, float]:
    section = card.split("## Genome", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\w+) \| (-?[\d.]+) \|$", section, re.M)}


def _mothers(densities: dict) -> dict:
    """The shown density table with each entry's mother's value, in the recipe table's layout."""
    out = {}
    for section, value in densities.items():
        if section == "default":
            out[section] = value["mother"]
        elif section == "layers":
            out[section] = {layer: {role: v["mother"] for role, v in row.items()} for layer, row in value.items()}
        else:
            out[section] = {key: v["mother"] for key, v in value.items()}
    return out


def _recipes(run: Path):
    from darwin_core.recipe import Recipe

    return Recipe.load(run / "best-recipe.yaml"), Recipe.load(run / CHILD)


# ------------------------------------------------------------------------------------------- stdout is the card


def test_card_run_on_stdout_is_the_card_alone_and_the_license_warning_goes_to_stderr(runs):
    from huggingface_hub import ModelCard

    run = runs["linear-mri"]
    by_id = _card_cli(run.name, "--runs-dir", str(run.parent))
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.startswith("---\n")
    front = re.match(r"^---\n(.*?)\n---\n", by_id.stdout, re.S)
    assert front, by_id.stdout[:300]
    meta = yaml.safe_load(front.group(1))
    assert meta["library_name"] == "transformers" and "darwin" in meta["tags"]
    assert ModelCard(by_id.stdout).data.to_dict()["tags"] == meta["tags"]
    assert LICENSE_WARNING in by_id.stderr and "warning:" not in by_id.stdout
    assert by_id.stdout.rstrip("\n") == _card(run).rstrip("\n")  # the card, and nothing after it
    by_path = _card_cli(str(run))  # a run folder path, as before
    assert by_path.returncode == 0 and by_path.stdout == by_id.stdout


def test_card_of_a_run_that_does_not_exist_is_one_sentence_on_stderr_and_exit_2(runs, tmp_path):
    result = _card_cli("no-such-run", "--runs-dir", str(next(iter(runs.values())).parent))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: There is no run 'no-such-run' in ") and result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------- what the recipe shows


def test_a_dense_linear_childs_card_leaves_out_ratios_the_tensor_table_overrides_moe_roles_and_idle_dims(runs):
    from darwin_core.io.reader import TensorReader

    run = runs["linear-mri"]
    card = _card(run)
    shown = _shown_recipe(card)
    recipe, _ = _recipes(run)
    names = TensorReader(run / CHILD).names
    assert set(recipe.ratios.tensors) >= set(names) and recipe.ratios.layers  # the MRI table covers every tensor
    assert set(shown["ratios"]) == {"tensors"}  # so no per-layer, per-role or default ratio is shown
    recipe_section = card.split("## Recipe", 1)[1].split("## Usage", 1)[0]
    for absent in ("densities", "seed", "base", "normalize", "rescale", "scale", "method_weight", "genome", "notes",
                   *MOE_AND_HYBRID_ROLES):
        assert absent not in recipe_section, absent
    genome = _shown_genome(card)
    # linear ignores densities and never blends; a 4-layer model has no layer in blocks 2 and 5 of 6
    for idle in ("density_a", "density_b", "merge_method_weight", "block_2", "block_5"):
        assert idle not in genome and idle not in card, idle
    assert {"global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio", "block_0", "block_1", "block_3", "block_4",
            "mri_trust"} == set(genome)
    assert "5 more dimensions of this genome have no effect" in card


def test_a_dare_ties_child_on_the_father_shows_the_mothers_density_only_and_no_moe_rows(runs):
    card = _card(runs["dare-ties"])
    shown = _shown_recipe(card)
    assert shown["base"] == "father" and shown["method"] == "dare_ties"
    assert all(set(value) == {"mother"} for value in [shown["densities"]["default"]])
    assert {"normalize", "rescale", "scale", "seed"} <= set(shown)  # the method reads them; DARE masks are drawn
    assert shown["ratios"]["layers"] and all(not set(row) & set(MOE_AND_HYBRID_ROLES)
                                             for row in shown["ratios"]["layers"].values())
    assert not set(shown["ratios"].get("roles", {})) & set(MOE_AND_HYBRID_ROLES)
    genome = _shown_genome(card)
    assert "density_b" in genome and "density_a" not in genome and "mri_trust" not in genome


@pytest.mark.parametrize("which", ["linear-mri", "dare-ties"])
def test_what_the_card_shows_is_the_recipe_that_made_the_child_with_its_hash_unchanged(which, runs):
    from darwin_core.io.reader import TensorReader
    from darwin_core.parents.anatomy import classify
    from darwin_core.recipe import ParamTable

    run = runs[which]
    card = _card(run)
    best, published = _recipes(run)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert best.recipe_hash == published.recipe_hash == report["best"]["recipe_hash"]
    assert f"Recipe hash `{best.recipe_hash}`" in card
    shown = _shown_recipe(card)
    assert shown["method"] == best.method and shown["father"] == best.father.public().to_dict()
    ratios = ParamTable.from_dict("ratio", {"default": 0.0, **shown["ratios"]})
    densities = shown.get("densities")
    for name in TensorReader(run / CHILD).names:
        role = classify(name)
        assert ratios.lookup(name, role.layer, role.role) == best.ratio_for(name), name
        if densities and best.plan_for(name).source is None:
            table = ParamTable.from_dict("ratio", {"default": 0.0, **_mothers(densities)})
            assert table.lookup(name, role.layer, role.role) == best.densities_for(name)[1], name
    genome = _shown_genome(card)
    assert genome and all(value == pytest.approx(best.genome.as_dict()[dim], abs=5e-5) for dim, value in genome.items())
