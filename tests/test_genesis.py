"""Genesis at demo size (issue 12): a dense father and a hybrid linear-attention mother of one hidden size, bred
FFN-only by an evolution on the CPU. Slow: building the mother trains it for a minute or two (cached under
assets/genesis/ afterwards), and the evolution scores every candidate on the demo skills."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_the_genesis_pair_is_an_ffn_only_pair_and_its_evolution_completes_with_a_report(tmp_path, one_thread):
    from darwin_core.merge.pairing import layer_rows, pairing_for_folders
    from darwin_core.runs import queue as jobs
    from darwin_core.zoo.genesis import genesis_pair
    from scripts.genesis_table import BUDGET, genesis_config

    father, mother = genesis_pair(log=None)
    config_json = json.loads((mother / "config.json").read_text())
    assert config_json["model_type"] == "qwen3_5_text" and "linear_attention" in config_json["layer_types"]
    pairing = pairing_for_folders(father, mother)
    assert pairing.mode == "ffn_only"
    assert [(r["father_layer"], r["mother_layer"]) for r in layer_rows(pairing)] == [(0, 0), (1, 1), (2, 3), (3, 4)]
    config = genesis_config(father, mother, seed=0)
    assert config.population == BUDGET["population"]
    folder = jobs.prepare_foreground(config, tmp_path / "runs", run_id="genesis")
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    report = json.loads((folder.path / "report.json").read_text())
    assert report["pairing"]["mode"] == "ffn_only" and len(report["pairing"]["layers"]) == 4
    assert {"father", "mother", "uniform-50", "child"} <= set(report["heldout"]["models"])
