"""The tiny fixture models are real Hub-layout checkpoints of every architecture Darwin supports."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from darwin_core.parents.chartok import build_char_tokenizer
from darwin_core.errors import DarwinError
from darwin_core.testing.fixtures import (
    ARCHITECTURES,
    FIXTURE_ALPHABET,
    place_in_hf_cache,
    write_tiny_model,
)

MOE_LAYOUTS = {
    # On-disk names the Hub's checkpoints use (transformers fuses them in memory only).
    "qwen3_moe": ["mlp.gate.weight"]
    + [f"mlp.experts.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")],
    "qwen3_5_moe_text": ["mlp.gate.weight", "mlp.shared_expert_gate.weight"]
    + [f"mlp.shared_expert.{p}_proj.weight" for p in ("gate", "up", "down")]
    + [f"mlp.experts.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")],
    "mixtral": ["block_sparse_moe.gate.weight"]
    + [f"block_sparse_moe.experts.{e}.w{i}.weight" for e in range(4) for i in (1, 2, 3)],
}


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded checkpoint (independent of darwin_core.io.tensors on purpose)."""
    files = sorted(folder.glob("*.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(path, "pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})
    return out


def load(folder: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    return model.eval(), info


def logits(model, folder: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["the cat sat on 12 mats.", "2+2=4"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_char_tokenizer_round_trips_through_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    text = "hello world\n1+2=3?"
    built = build_char_tokenizer(FIXTURE_ALPHABET)
    built.save_pretrained(tmp_path / "a")
    build_char_tokenizer(FIXTURE_ALPHABET).save_pretrained(tmp_path / "b")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "a")

    ids = loaded(text)["input_ids"]
    assert ids == built(text)["input_ids"]
    assert ids[0] == loaded.bos_token_id == 1 and len(ids) == len(text) + 1
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 2, 3)
    assert loaded.decode(ids, skip_special_tokens=True) == text
    assert loaded("A", add_special_tokens=False)["input_ids"] == [3]  # outside the alphabet
    assert loaded.padding_side == "left"
    assert sorted(os.listdir(tmp_path / "a")) == ["tokenizer.json", "tokenizer_config.json"]
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    with pytest.raises(DarwinError):
        build_char_tokenizer("")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pair_loads_without_key_problems_runs_and_differs(arch, fixture_pair):
    father, mother = fixture_pair(arch)
    for folder in (father, mother):
        assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "model.safetensors"} <= set(os.listdir(folder))
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == arch
        model, info = load(folder)
        assert all(not problems for problems in info.values()), info
        out = logits(model, folder)
        assert out.shape == (2, 24, config["vocab_size"])
        assert torch.isfinite(out).all()
        assert config["vocab_size"] >= len(build_char_tokenizer(FIXTURE_ALPHABET))

    a, b = read_tensors(father), read_tensors(mother)
    assert {n: t.shape for n, t in a.items()} == {n: t.shape for n, t in b.items()}
    same = [n for n in a if torch.equal(a[n], b[n])]
    assert not same, f"identical tensors across seeds: {same}"
    constant = [n for n, t in a.items() if t.numel() > 1 and bool((t == t.reshape(-1)[0]).all())]
    assert not constant, f"degenerate (constant) tensors: {constant}"


@pytest.mark.parametrize("arch", sorted(MOE_LAYOUTS))
def test_moe_experts_are_stored_per_expert_as_on_the_hub(arch, fixture_pair):
    names = set(read_tensors(fixture_pair(arch)[0]))
    for suffix in MOE_LAYOUTS[arch]:
        assert f"model.layers.0.{suffix}" in names
    assert not [n for n in names if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]


@pytest.mark.parametrize("arch", ["qwen3_5_text", "qwen3_5_moe_text", "gemma3_text", "gemma4_text"])
def test_hybrid_models_hold_both_layer_types(arch, fixture_pair):
    folder = fixture_pair(arch)[0]
    layer_types = json.loads((folder / "config.json").read_text())["layer_types"]
    assert len(set(layer_types)) == 2
    names = set(read_tensors(folder))
    if arch.startswith("qwen3_5"):
        assert layer_types == ["linear_attention"] * 3 + ["full_attention"]
        assert "model.layers.0.linear_attn.in_proj_qkv.weight" in names
        assert "model.layers.3.self_attn.q_proj.weight" in names
        assert not any(n.startswith("model.layers.3.linear_attn") for n in names)
    else:
        assert layer_types[-1] == "full_attention" and "sliding_attention" in layer_types


@pytest.mark.parametrize("arch", ["llama", "gemma4_text", "qwen3_5_moe_text", "mixtral"])
def test_related_pair_differs_by_a_small_relative_delta(arch, fixture_pair):
    father, mother = fixture_pair(arch, related=True)
    a, b = read_tensors(father), read_tensors(mother)
    assert a.keys() == b.keys()
    for name in a:
        rel = float((b[name] - a[name]).norm() / a[name].norm())
        assert 0.0 < rel < 0.05, (name, rel)  # delta_scale=0.02 of each tensor's rms


def test_sharded_write_has_a_correct_index_and_the_same_weights(fixture_model):
    single = fixture_model("mixtral")
    sharded = fixture_model("mixtral", shards=3)
    shard_files = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert shard_files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    index = json.loads((sharded / "model.safetensors.index.json").read_text())

    held, total = {}, 0
    for fname in shard_files:
        with safe_open(sharded / fname, "pt") as f:
            assert f.metadata() == {"format": "pt"}
            for name in f.keys():
                held[name] = fname
                t = f.get_tensor(name)
                total += t.numel() * t.element_size()
    assert index["weight_map"] == held
    assert index["metadata"]["total_size"] == total
    ref = read_tensors(single)
    got = read_tensors(sharded)
    assert ref.keys() == got.keys() and all(torch.equal(ref[n], got[n]) for n in ref)
    _, info = load(sharded)
    assert all(not problems for problems in info.values()), info


@pytest.mark.parametrize("arch", ["llama", "qwen3_5_moe_text"])
def test_same_seed_gives_identical_bytes(arch, tmp_path, fixture_model):
    (tmp_path / "again").mkdir()  # an existing empty folder is fine
    again = write_tiny_model(arch, tmp_path / "again", seed=0)
    assert file_digests(again) == file_digests(fixture_model(arch, seed=0))
    other = write_tiny_model(arch, tmp_path / "other", seed=5)
    assert file_digests(other)["model.safetensors"] != file_digests(again)["model.safetensors"]


def test_bfloat16_fixture_is_the_float32_one_rounded(fixture_model):
    f32 = read_tensors(fixture_model("qwen3", seed=0))
    bf16_dir = fixture_model("qwen3", seed=0, dtype=torch.bfloat16)
    bf16 = read_tensors(bf16_dir)
    assert all(t.dtype == torch.bfloat16 for t in bf16.values())
    assert all(torch.equal(bf16[n], f32[n].to(torch.bfloat16)) for n in f32)
    assert json.loads((bf16_dir / "config.json").read_text())["dtype"] == "bfloat16"
    model, info = load(bf16_dir, dtype=torch.bfloat16)
    assert all(not problems for problems in info.values())
    assert torch.isfinite(logits(model, bf16_dir).float()).all()


def test_place_in_hf_cache_resolves_offline_in_a_fresh_process(tmp_path, fixture_model):
    model_dir = fixture_model("llama")
    cache = tmp_path / "hub"
    snapshot = place_in_hf_cache(model_dir, "darwin-test/tiny-llama", cache)
    tagged = place_in_hf_cache(model_dir, "darwin-test/tiny-llama", cache, revision="v1")
    assert snapshot == tagged and file_digests(snapshot) == file_digests(model_dir)
    code = (
        "import json, huggingface_hub as h\n"
        "from huggingface_hub import constants\n"
        "out = {'offline': constants.HF_HUB_OFFLINE,\n"
        "       'main': h.snapshot_download('darwin-test/tiny-llama'),\n"
        "       'v1': h.snapshot_download('darwin-test/tiny-llama', revision='v1'),\n"
        "       'config': h.hf_hub_download('darwin-test/tiny-llama', 'config.json')}\n"
        "try:\n"
        "    h.snapshot_download('darwin-test/absent')\n"
        "    out['absent'] = 'resolved'\n"
        "except Exception as e:\n"
        "    out['absent'] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    env.pop("HF_HOME", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["offline"] is True
    assert Path(out["main"]) == Path(out["v1"]) == snapshot
    assert Path(out["config"]) == snapshot / "config.json"
    assert out["absent"] == "LocalEntryNotFoundError"


def test_bad_requests_fail_with_one_clear_sentence(tmp_path, fixture_model):
    with pytest.raises(DarwinError, match="No tiny fixture"):
        write_tiny_model("gpt2", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DarwinError, match="not empty"):
        write_tiny_model("llama", tmp_path / "full")
    with pytest.raises(DarwinError, match="not 'mistral'"):
        write_tiny_model("mistral", tmp_path / "y", base_dir=fixture_model("llama"))
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.*"))
    with pytest.raises(DarwinError, match="org/name"):
        place_in_hf_cache(fixture_model("llama"), "no-slash", tmp_path / "hub")
