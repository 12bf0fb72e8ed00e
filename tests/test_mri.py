"""The Model MRI: static profile, probe importance, divergence, MoE health, prescription, canonical JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from darwin_core.parents import modelparts
from darwin_core.mri import scan as mri
from darwin_core.mri import static as mri_static
from darwin_core.cli import main as cli_main
from darwin_core.errors import DarwinError
from darwin_core.fitness.probes import probes_from_tasks, resolve_probes
from darwin_core.mri.probes import default_probes, load_probes
from darwin_core.testing.fixtures import ARCHITECTURES, write_pair, write_tiny_model

MOE_ARCHS = {"qwen3_moe", "qwen3_5_moe_text", "mixtral"}
# Two short categories keep a scan of every architecture at a few seconds on 2 CPU cores.
TINY_PROBES = {"WORDS": ["the cat sat on the mat."], "SUMS": ["12+30=42; 7*6=42."]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """pair(arch) → (father, mother): a related fixture pair, built once per architecture per module."""
    root = tmp_path_factory.mktemp("mri-pairs")
    built: dict[str, tuple[Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in built:
            built[arch] = write_pair(arch, root / arch, related=True)
        return built[arch]

    return get


# ----------------------------------------------------------------------------------------------------------
# Static profile


def test_entropy_is_zero_for_a_constant_tensor_and_log2_bins_for_a_uniform_one():
    assert mri.histogram_entropy(torch.full((1000,), 3.0)) == 0.0
    uniform = torch.arange(mri.HIST_BINS * 10, dtype=torch.float32)  # exactly 10 values per bin
    assert mri.histogram_entropy(uniform) == pytest.approx(math.log2(mri.HIST_BINS), abs=1e-9)


def test_tensor_profile_std_and_norm_are_exact():
    gen = torch.Generator().manual_seed(3)
    t = torch.randn(300, 70, generator=gen) * 0.5 + 0.1
    p = mri.tensor_profile(t)
    assert p["std"] == pytest.approx(float(t.double().std()), rel=1e-9)
    assert p["norm"] == pytest.approx(float(t.double().norm()), rel=1e-9)
    assert p["numel"] == 21000 and p["nonfinite"] == 0 and p["sampled"] is False


def test_large_tensors_are_histogrammed_on_a_deterministic_sample(monkeypatch):
    monkeypatch.setattr(mri_static, "SAMPLE_THRESHOLD", 1000)  # the static profile reads them from its module
    monkeypatch.setattr(mri_static, "HIST_SAMPLE", 500)
    t = torch.randn(100, 50, generator=torch.Generator().manual_seed(1))
    first, second = mri.tensor_profile(t), mri.tensor_profile(t.clone())
    assert first["sampled"] is True
    assert first == second
    assert first["std"] == pytest.approx(float(t.double().std()), rel=1e-9)  # std stays exact


def test_nonfinite_values_are_counted_and_kept_out_of_the_statistics():
    t = torch.tensor([1.0, 2.0, float("nan"), float("inf"), 3.0])
    p = mri.tensor_profile(t)
    assert p["nonfinite"] == 2
    assert p["norm"] == pytest.approx(math.sqrt(14.0))


def test_compare_tensors_gives_relative_delta_norm_and_cosine():
    a = torch.tensor([3.0, 4.0])
    b = torch.tensor([3.0, 5.0])
    d = mri.compare_tensors(a, b)
    assert d["rel_delta"] == pytest.approx(1.0 / 5.0)
    assert d["cosine"] == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert mri.compare_tensors(torch.zeros(3), torch.zeros(3)) == {"rel_delta": 0.0, "cosine": 1.0}


# ----------------------------------------------------------------------------------------------------------
# Probes and layer skipping


def test_default_probes_have_the_five_seed_categories():
    probes = default_probes()
    assert list(probes) == ["REASONING", "CODE", "MATH", "KNOWLEDGE", "LANGUAGE"]
    assert all(len(texts) >= 3 for texts in probes.values())


def test_probes_are_editable_data(tmp_path):
    path = tmp_path / "probes.yaml"
    path.write_text("POETRY:\n  - roses are red\nLAW:\n  - the contract is void\n")
    assert load_probes(path) == {"POETRY": ["roses are red"], "LAW": ["the contract is void"]}
    path.write_text("EMPTY: []\n")
    with pytest.raises(DarwinError):
        load_probes(path)


def test_demo_tasks_bring_their_own_probes():
    from darwin_core.fitness.demo_tasks import demo_tasks

    probes = probes_from_tasks(demo_tasks())
    assert list(probes) == [t.name for t in demo_tasks()]
    assert resolve_probes("demo") == probes


def test_a_skipped_layer_passes_its_input_through(pair):
    from transformers import AutoModelForCausalLM

    father, _ = pair("llama")
    model = AutoModelForCausalLM.from_pretrained(father, dtype=torch.float32).eval()
    layers = modelparts.decoder_layers(model)
    seen = {}
    layers[2].register_forward_pre_hook(lambda m, args: seen.__setitem__("into_2", args[0].clone()))
    layers[3].register_forward_pre_hook(lambda m, args: seen.__setitem__("into_3", args[0].clone()))
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad(), modelparts.skip_layer(layers[2]):
        model(input_ids=ids)
    assert torch.equal(seen["into_3"], seen["into_2"])  # layer 3 receives what layer 2 was given
    with torch.no_grad():
        model(input_ids=ids)  # hooks removed: the layer acts again
    assert not torch.equal(seen["into_3"], seen["into_2"])


# ----------------------------------------------------------------------------------------------------------
# Scans on every architecture


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scan_pair_works_on_every_fixture_architecture(arch, pair):
    father, mother = pair(arch)
    scan = mri.scan_pair(father, mother, probes=TINY_PROBES)
    n_layers = 4
    for who in ("father", "mother"):
        s = scan[who]
        assert s["model"]["num_layers"] == n_layers and s["model"]["model_type"] == arch
        imp = s["probes"]["importance"]
        assert list(imp) == list(TINY_PROBES)
        assert all(len(v) == n_layers and all(0.0 <= x <= 2.0 for x in v) for v in imp.values())
        assert max(max(v) for v in imp.values()) > 1e-4  # skipping a layer changes something
        assert s["probes"]["perplexity_all"] > 1.0
        assert len(s["static"]["layers"]) == n_layers
        assert all(p["entropy"] > 0 for p in s["static"]["tensors"].values() if p["numel"] > 8)
        # MoE metrics appear exactly for MoE models.
        assert ("moe" in s) == (arch in MOE_ARCHS)
        if arch in MOE_ARCHS:
            moe = s["moe"]
            assert moe["layers"] == list(range(n_layers)) and moe["num_experts"] == 4
            for row, dead, ent, sim in zip(moe["utilisation"], moe["dead_share"], moe["router_entropy"], moe["expert_similarity"]):
                assert sum(row) == pytest.approx(1.0) and len(row) == 4
                assert dead == pytest.approx(sum(1 for u in row if u == 0) / 4)
                assert 0.0 <= ent <= 1.0 + 1e-9
                assert -1.0 <= sim <= 1.0
    # A related mother is the father plus a ~2% relative delta (fixtures' delta_scale=0.02).
    totals = [d["rel_delta"] for d in scan["divergence"]["layer_total"]]
    assert all(0.01 < t < 0.04 for t in totals)
    assert all(0.99 < d["cosine"] <= 1.0 for d in scan["divergence"]["layer_total"])
    ratios = scan["prescription"]
    language = [n for n, p in scan["father"]["static"]["tensors"].items() if p["tower"] == "language"]
    assert sorted(ratios) == sorted(language)
    assert all(0.0 < r < 1.0 for r in ratios.values())
    json.loads(mri.scan_json(scan))  # strict JSON (no NaN)


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_the_same_scan_twice_gives_identical_json(arch, pair, tmp_path):
    father, mother = pair(arch)
    first = mri.save_scan(mri.scan_pair(father, mother, probes=TINY_PROBES), tmp_path / "a.json")
    second = mri.save_scan(mri.scan_pair(father, mother, probes=TINY_PROBES), tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    assert mri.load_scan(first)["format"] == mri.PAIR_FORMAT


def test_sharded_and_single_file_models_give_the_same_scan(tmp_path):
    single = write_tiny_model("qwen3", tmp_path / "single", seed=4)
    sharded = write_tiny_model("qwen3", tmp_path / "sharded", seed=4, shards=3)
    a, b = (mri.scan_model(p, probes=TINY_PROBES) for p in (single, sharded))
    for scan in (a, b):
        scan["model"].pop("path")
    assert mri.scan_json(a) == mri.scan_json(b)


# ----------------------------------------------------------------------------------------------------------
# Prescription (seed 002)


def _fake_scan(importance: dict[str, list[float]], tensors: dict[str, dict]) -> dict:
    return {
        "probes": {"categories": list(importance), "importance": importance},
        "static": {"tensors": {n: {"tower": "language", **p} for n, p in tensors.items()}},
    }


def test_prescription_follows_the_seed_formula():
    tensors_a = {
        "model.layers.0.mlp.down_proj.weight": {"layer": 0, "entropy": 6.0, "std": 0.5, "norm": 250.0},
        "model.embed_tokens.weight": {"layer": None, "entropy": 5.0, "std": 1.0, "norm": 40.0},
    }
    tensors_b = {
        "model.layers.0.mlp.down_proj.weight": {"layer": 0, "entropy": 7.0, "std": 0.25, "norm": 50.0},
        "model.embed_tokens.weight": {"layer": None, "entropy": 5.0, "std": 1.0, "norm": 40.0},
    }
    a = _fake_scan({"R": [0.2, 0.4], "C": [0.0, 0.2]}, tensors_a)
    b = _fake_scan({"R": [0.6, 0.0], "C": [0.2, 0.0]}, tensors_b)
    ratios = mri.prescription(a, b)
    static_a = 6.0 * 0.3 + 0.5 * 0.2 + 100.0 * 0.002  # norm clamped at 100
    static_b = 7.0 * 0.3 + 0.25 * 0.2 + 50.0 * 0.002
    ca = static_a * 0.4 + (0.2 * 0.5 + 0.0 * 0.5) * 0.6
    cb = static_b * 0.4 + (0.6 * 0.5 + 0.2 * 0.5) * 0.6
    assert ratios["model.layers.0.mlp.down_proj.weight"] == pytest.approx(cb / (ca + cb))
    # Embeddings serve every layer: the mean probe score over layers (a: 0.2, b: 0.2) → equal → 0.5.
    assert ratios["model.embed_tokens.weight"] == pytest.approx(0.5)


def test_prescription_leans_to_the_parent_whose_layer_matters_more_for_a_weighted_probe():
    tensors = {"model.layers.1.self_attn.q_proj.weight": {"layer": 1, "entropy": 1.0, "std": 0.1, "norm": 1.0}}
    a = _fake_scan({"R": [0.0, 0.1], "C": [0.0, 0.9]}, tensors)
    b = _fake_scan({"R": [0.0, 0.9], "C": [0.0, 0.1]}, tensors)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert mri.prescription(a, b)[name] == pytest.approx(0.5)
    assert mri.prescription(a, b, weights={"R": 1.0, "C": 0.0})[name] > 0.6
    assert mri.prescription(a, b, weights={"R": 0.0, "C": 1.0})[name] < 0.4
    with pytest.raises(DarwinError):
        mri.prescription(a, b, weights={"MATH": 1.0})


def test_prescription_feeds_the_darwin_v6_genome(pair):
    from darwin_core.genome.spaces import get_space

    father, mother = pair("qwen3")
    ratios = mri.scan_pair(father, mother, probes=TINY_PROBES)["prescription"]
    space = get_space("darwin-v6")
    genome = dict(zip(space.names, space.default()))
    genome["mri_trust"] = 1.0  # the prescription alone decides every tensor's ratio
    recipe = space.to_recipe(
        [genome[n] for n in space.names], father=father, mother=mother, layer_count=4, method="linear", mri_ratios=ratios
    )
    for name, ratio in ratios.items():
        assert recipe.ratio_for(name) == pytest.approx(ratio)


# ----------------------------------------------------------------------------------------------------------
# MoE section, CLI, errors


def test_moe_section_counts_dead_experts_and_normalises_entropy():
    routing = {
        0: {"counts": torch.tensor([5.0, 5.0, 0.0, 0.0], dtype=torch.float64),
            "prob_sum": torch.tensor([2.5, 2.5, 0.0, 0.0], dtype=torch.float64), "entropy_sum": 2.5, "tokens": 5},
        1: {"counts": torch.tensor([3.0, 3.0, 2.0, 2.0], dtype=torch.float64),
            "prob_sum": torch.tensor([1.25, 1.25, 1.25, 1.25], dtype=torch.float64), "entropy_sum": 5.0, "tokens": 5},
    }
    moe = mri.moe_section(routing, {0: 0.1, 1: -0.05}, 4, 2)
    assert moe["dead_share"] == [0.5, 0.0]
    assert moe["router_entropy"][0] == pytest.approx(0.5)  # two of four experts share the load evenly
    assert moe["router_entropy"][1] == pytest.approx(1.0)
    assert moe["token_entropy"] == [0.5, 1.0]
    assert moe["utilisation"][1] == [0.3, 0.3, 0.2, 0.2]
    assert moe["expert_similarity"] == [0.1, -0.05]


def test_cli_scan_writes_a_pair_scan(pair, tmp_path, capsys):
    father, mother = pair("qwen2")
    probes = tmp_path / "p.yaml"
    probes.write_text("WORDS:\n  - the cat sat.\n")
    out = tmp_path / "scan.json"
    code = cli_main(["scan", str(father), "--mother", str(mother), "--out", str(out), "--probes", str(probes)])
    assert code == 0
    scan = json.loads(out.read_text())
    assert scan["format"] == mri.PAIR_FORMAT and scan["father"]["probes"]["categories"] == ["WORDS"]
    assert "parents differ most at layer" in capsys.readouterr().out


def test_parents_of_different_shapes_are_refused_with_one_sentence(pair):
    llama, _ = pair("llama")
    qwen2, _ = pair("qwen2")
    with pytest.raises(DarwinError, match="same tensors"):
        mri.scan_pair(llama, qwen2, probes=TINY_PROBES)
    with pytest.raises(DarwinError, match="does not exist"):
        mri.scan_model(llama.parent / "nowhere", probes=TINY_PROBES)
