"""The child's health check: verdicts on a clean merge, a zeroed layer, a ×10 layer, NaN weights; thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from darwin_core.health import checkup as health
from darwin_core.parents.anatomy import classify
from darwin_core.cli import main as cli_main
from darwin_core.merge.disk import merge_to_disk
from darwin_core.fitness.probes import demo_probes
from darwin_core.recipe import Recipe
from darwin_core.testing.fixtures import write_pair

ZOO = Path(__file__).resolve().parent.parent / "assets" / "zoo"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict:
    """The demo zoo's parents (or, when the zoo is not built, a related qwen3 fixture pair), their 50/50 child
    built by the merge engine, the probe set, and the parents' measurements (taken once)."""
    root = tmp_path_factory.mktemp("health")
    if (ZOO / "father" / "config.json").is_file() and (ZOO / "mother" / "config.json").is_file():
        father, mother, probes, source = ZOO / "father", ZOO / "mother", demo_probes(), "zoo"
    else:
        father, mother = write_pair("qwen3", root / "parents", related=True)
        probes = {"WORDS": ["the cat sat on the mat.", "a dog ran in the park."], "SUMS": ["12+30=42; 7*6=42."]}
        source = "fixture"
    child = merge_to_disk(Recipe(father=father, mother=mother, method="linear"), root / "child")
    return {
        "root": root,
        "father": father,
        "mother": mother,
        "child": child,
        "probes": probes,
        "source": source,
        "father_m": health.measure(father, probes),
        "mother_m": health.measure(mother, probes),
    }


def parent_importance(family: dict) -> tuple[list[float], list[float]]:
    return family["father_m"]["importance"], family["mother_m"]["importance"]


def test_clean_50_50_merge_of_the_demo_parents_is_healthy(family):
    report = health.check_health(family["child"], family["father"], family["mother"], probes=family["probes"])
    assert report["verdict"] == "healthy", report["summary"]
    assert report["findings"] == [] and report["layers_flagged"] == []
    assert report["nonfinite_weights"] == {}
    child, father, mother = (report["models"][k]["importance"] for k in ("child", "father", "mother"))
    assert len(child) == len(father) == len(mother)
    json.dumps(report, allow_nan=False)


def test_child_with_one_layer_zeroed_is_flagged_with_function_loss_at_that_layer(family):
    f, m = parent_importance(family)
    layer = max(range(len(f)), key=lambda i: min(f[i], m[i]))  # the layer both parents rely on most
    child = health.zero_layer(family["child"], family["root"] / "zeroed", layer)
    weights = load_file(child / "model.safetensors")
    zeroed = [n for n in weights if classify(n).layer == layer and not torch.any(weights[n])]
    assert any(n.endswith("down_proj.weight") for n in zeroed) and any(n.endswith("o_proj.weight") for n in zeroed)
    report = health.assess(health.measure(child, family["probes"]), family["father_m"], family["mother_m"])
    loss = [x for x in report["findings"] if x["kind"] == "function_loss"]
    assert loss and loss[0]["layers"] == [layer], report["summary"]
    assert report["verdict"] in ("warning", "broken")
    assert layer in report["layers_flagged"]


def test_child_with_one_layer_scaled_x10_is_flagged_with_interference_at_that_layer(family):
    f, m = parent_importance(family)
    layer = min(range(len(f)), key=lambda i: max(f[i], m[i]))  # the layer the parents rely on least
    child = health.amplify_layer(family["child"], family["root"] / "scaled", layer, 10.0)
    before, after = load_file(family["child"] / "model.safetensors"), load_file(child / "model.safetensors")
    scaled = [n for n in after if not torch.equal(after[n], before[n])]
    assert scaled and all(torch.allclose(after[n], before[n] * 10) for n in scaled)
    assert {n.rsplit(".", 2)[-2] for n in scaled} == {"o_proj", "down_proj"}
    report = health.assess(health.measure(child, family["probes"]), family["father_m"], family["mother_m"])
    interference = [x for x in report["findings"] if x["kind"] == "interference"]
    assert interference and layer in interference[0]["layers"], report["summary"]
    assert report["verdict"] in ("warning", "broken")


def test_child_with_nan_weights_is_broken(family):
    def poison(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if classify(name).layer == 0 and name.endswith("down_proj.weight"):
            tensor = tensor.clone()
            tensor.view(-1)[0] = float("nan")
        return tensor

    child = health.edited_copy(family["child"], family["root"] / "nan", poison)
    report = health.check_health(child, family["father"], family["mother"], probes=family["probes"])
    assert report["verdict"] == "broken"
    kinds = {x["kind"] for x in report["findings"]}
    assert "nonfinite_weights" in kinds and "nonfinite_outputs" in kinds
    json.dumps(report, allow_nan=False)  # NaN perplexities become null, never NaN in the JSON


def test_cli_health_writes_the_report(family, tmp_path, capsys):
    probes = tmp_path / "probes.yaml"
    probes.write_text("".join(f"{c}:\n" + "".join(f"  - {json.dumps(t)}\n" for t in ts) for c, ts in family["probes"].items()))
    out = tmp_path / "health.json"
    code = cli_main([
        "health", str(family["child"]), "--father", str(family["father"]), "--mother", str(family["mother"]),
        "--out", str(out), "--probes", str(probes),
    ])
    assert code == 0
    assert json.loads(out.read_text())["verdict"] == "healthy"
    assert "verdict: healthy" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# The thresholds, on numbers (assess is pure)


def _m(importance, perplexity=10.0, repetition=0.0, nonfinite=False) -> dict:
    return {"importance": importance, "perplexity": perplexity, "repetition": repetition, "nonfinite_outputs": nonfinite}


def test_interference_needs_both_the_ratio_and_the_absolute_floor():
    parents = _m([0.01, 0.10, 0.10])
    report = health.assess(_m([0.04, 0.19, 0.25]), parents, parents)
    # layer 0: 4× the parents but below the 0.05 floor; layer 1: above the floor but < 2×; layer 2: both.
    assert [x["layers"] for x in report["findings"]] == [[2]]
    assert report["verdict"] == "warning"


def test_function_loss_needs_both_parents_to_rely_on_the_layer():
    report = health.assess(_m([0.0, 0.0, 0.09]), _m([0.3, 0.3, 0.1]), _m([0.3, 0.005, 0.1]))
    assert [(x["kind"], x["layers"]) for x in report["findings"]] == [("function_loss", [0])]


def test_perplexity_far_above_the_worse_parent_is_a_warning_then_broken():
    imp = [0.1, 0.1]
    assert health.assess(_m(imp, 14.0), _m(imp, 8.0), _m(imp, 10.0))["verdict"] == "healthy"
    assert health.assess(_m(imp, 16.0), _m(imp, 8.0), _m(imp, 10.0))["verdict"] == "warning"
    assert health.assess(_m(imp, 60.0), _m(imp, 8.0), _m(imp, 10.0))["verdict"] == "broken"


def test_degeneration_is_judged_against_the_parents():
    imp = [0.1]
    assert health.assess(_m(imp, repetition=0.9), _m(imp, repetition=0.8), _m(imp))["verdict"] == "healthy"
    report = health.assess(_m(imp, repetition=0.9), _m(imp, repetition=0.1), _m(imp))
    assert [x["kind"] for x in report["findings"]] == ["degeneration"]


def test_repetition_rate_counts_repeated_ngrams():
    assert health.repetition_rate([[1, 2, 3, 4, 5]]) == 0.0
    assert health.repetition_rate([[7, 7, 7, 7, 7, 7]]) == pytest.approx(1 - 1 / 4)
    assert health.repetition_rate([[1, 2]]) == 0.0
