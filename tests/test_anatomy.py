"""Every tensor name maps to (layer, role, tower): real checkpoint names and every fixture architecture."""

from __future__ import annotations

import json

import pytest

from darwin_core.parents.anatomy import (
    ROLES,
    TensorRole,
    canonical_name,
    classify,
    layer_count,
    pair_names,
    split_name,
    summarize,
)
from darwin_core.errors import DarwinError
from darwin_core.io.tensors import TensorReader
from darwin_core.testing.fixtures import ARCHITECTURES

L, V, A = "language", "vision", "audio"

# Real tensor names as stored in Hub checkpoints (header of model.safetensors / weight_map of the index).
REAL_NAMES: list[tuple[str, TensorRole]] = [
    # Qwen/Qwen3.5-27B (Qwen3_5ForConditionalGeneration): GatedDeltaNet layers, gated full attention, MTP head.
    ("model.language_model.embed_tokens.weight", TensorRole(None, "embed", L)),
    ("model.language_model.layers.0.linear_attn.in_proj_qkv.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.in_proj_z.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.in_proj_a.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.in_proj_b.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.conv1d.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.A_log", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.dt_bias", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.norm.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.0.linear_attn.out_proj.weight", TensorRole(0, "linear_attn", L)),
    ("model.language_model.layers.3.self_attn.q_proj.weight", TensorRole(3, "attn", L)),
    ("model.language_model.layers.3.self_attn.q_norm.weight", TensorRole(3, "attn", L)),
    ("model.language_model.layers.3.self_attn.k_norm.weight", TensorRole(3, "attn", L)),
    ("model.language_model.layers.63.mlp.down_proj.weight", TensorRole(63, "ffn", L)),
    ("model.language_model.layers.0.input_layernorm.weight", TensorRole(0, "norm", L)),
    ("model.language_model.layers.0.post_attention_layernorm.weight", TensorRole(0, "norm", L)),
    ("model.language_model.norm.weight", TensorRole(None, "final_norm", L)),
    ("lm_head.weight", TensorRole(None, "lm_head", L)),
    ("model.visual.blocks.0.attn.qkv.weight", TensorRole(None, "other", V)),
    ("model.visual.blocks.26.mlp.linear_fc1.weight", TensorRole(None, "other", V)),
    ("model.visual.merger.linear_fc1.weight", TensorRole(None, "other", V)),
    ("model.visual.patch_embed.proj.weight", TensorRole(None, "other", V)),
    ("mtp.fc.weight", TensorRole(None, "other", L)),
    ("mtp.norm.weight", TensorRole(None, "norm", L)),
    ("mtp.pre_fc_norm_embedding.weight", TensorRole(None, "norm", L)),
    ("mtp.pre_fc_norm_hidden.weight", TensorRole(None, "norm", L)),
    ("mtp.layers.0.self_attn.q_proj.weight", TensorRole(None, "attn", L)),
    ("mtp.layers.0.mlp.gate_proj.weight", TensorRole(None, "ffn", L)),
    ("mtp.layers.0.input_layernorm.weight", TensorRole(None, "norm", L)),
    # Qwen/Qwen3.5-35B-A3B: fused 3-D experts, router, shared expert and its gate; per-expert MTP experts.
    ("model.language_model.layers.0.mlp.experts.gate_up_proj", TensorRole(0, "experts", L)),
    ("model.language_model.layers.0.mlp.experts.down_proj", TensorRole(0, "experts", L)),
    ("model.language_model.layers.0.mlp.gate.weight", TensorRole(0, "router", L)),
    ("model.language_model.layers.0.mlp.shared_expert.gate_proj.weight", TensorRole(0, "shared_expert", L)),
    ("model.language_model.layers.0.mlp.shared_expert.down_proj.weight", TensorRole(0, "shared_expert", L)),
    ("model.language_model.layers.0.mlp.shared_expert_gate.weight", TensorRole(0, "shared_expert", L)),
    ("mtp.layers.0.mlp.experts.255.down_proj.weight", TensorRole(None, "experts", L)),
    # Qwen/Qwen3-30B-A3B (qwen3_moe), per-expert on disk.
    ("model.layers.47.mlp.experts.127.up_proj.weight", TensorRole(47, "experts", L)),
    ("model.layers.47.mlp.gate.weight", TensorRole(47, "router", L)),
    # google/gemma-4-E4B-it: per-layer-input (PLE) pathway, layer scalar, vision and audio towers.
    ("model.language_model.embed_tokens_per_layer.weight", TensorRole(None, "embed", L)),
    ("model.language_model.per_layer_model_projection.weight", TensorRole(None, "embed", L)),
    ("model.language_model.per_layer_projection_norm.weight", TensorRole(None, "embed", L)),
    ("model.language_model.layers.41.per_layer_input_gate.weight", TensorRole(41, "ffn", L)),
    ("model.language_model.layers.41.per_layer_projection.weight", TensorRole(41, "ffn", L)),
    ("model.language_model.layers.41.post_per_layer_input_norm.weight", TensorRole(41, "norm", L)),
    ("model.language_model.layers.0.layer_scalar", TensorRole(0, "norm", L)),
    ("model.language_model.layers.0.pre_feedforward_layernorm.weight", TensorRole(0, "norm", L)),
    ("model.language_model.layers.0.post_feedforward_layernorm.weight", TensorRole(0, "norm", L)),
    ("model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight", TensorRole(None, "other", V)),
    ("model.vision_tower.patch_embedder.position_embedding_table", TensorRole(None, "other", V)),
    ("model.embed_vision.embedding_projection.weight", TensorRole(None, "other", V)),
    ("model.audio_tower.layers.0.self_attn.q_proj.linear.weight", TensorRole(None, "other", A)),
    ("model.audio_tower.subsample_conv_projection.layer0.conv.weight", TensorRole(None, "other", A)),
    ("model.embed_audio.embedding_projection.weight", TensorRole(None, "other", A)),
    # google/gemma-4-26B-A4B: a dense MLP plus a routed-expert block in every layer.
    ("model.language_model.layers.5.router.proj.weight", TensorRole(5, "router", L)),
    ("model.language_model.layers.5.router.scale", TensorRole(5, "router", L)),
    ("model.language_model.layers.5.router.per_expert_scale", TensorRole(5, "router", L)),
    ("model.language_model.layers.5.experts.gate_up_proj", TensorRole(5, "experts", L)),
    ("model.language_model.layers.5.experts.down_proj", TensorRole(5, "experts", L)),
    ("model.language_model.layers.5.mlp.gate_proj.weight", TensorRole(5, "ffn", L)),
    ("model.language_model.layers.5.pre_feedforward_layernorm_2.weight", TensorRole(5, "norm", L)),
    ("model.language_model.layers.5.post_feedforward_layernorm_1.weight", TensorRole(5, "norm", L)),
    # google/gemma-3-4b-it (LLaVA-style prefixes of older multimodal checkpoints).
    ("language_model.model.layers.0.self_attn.q_proj.weight", TensorRole(0, "attn", L)),
    ("language_model.model.embed_tokens.weight", TensorRole(None, "embed", L)),
    ("language_model.lm_head.weight", TensorRole(None, "lm_head", L)),
    ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", TensorRole(None, "other", V)),
    ("multi_modal_projector.mm_input_projection_weight", TensorRole(None, "other", V)),
    ("model.multi_modal_projector.mm_soft_emb_norm.weight", TensorRole(None, "other", V)),
    # mistralai/Mixtral-8x7B-v0.1.
    ("model.layers.31.block_sparse_moe.gate.weight", TensorRole(31, "router", L)),
    ("model.layers.0.block_sparse_moe.experts.7.w1.weight", TensorRole(0, "experts", L)),
    ("model.layers.0.block_sparse_moe.experts.7.w2.weight", TensorRole(0, "experts", L)),
    ("model.layers.0.block_sparse_moe.experts.7.w3.weight", TensorRole(0, "experts", L)),
    ("model.layers.0.self_attn.k_proj.weight", TensorRole(0, "attn", L)),
    # microsoft/Phi-3-mini-4k-instruct: fused projections.
    ("model.layers.0.self_attn.qkv_proj.weight", TensorRole(0, "attn", L)),
    ("model.layers.0.mlp.gate_up_proj.weight", TensorRole(0, "ffn", L)),
    # Qwen/Qwen2.5-7B: attention biases; meta-llama/Llama-3.1-8B.
    ("model.layers.27.self_attn.v_proj.bias", TensorRole(27, "attn", L)),
    ("model.layers.0.mlp.up_proj.weight", TensorRole(0, "ffn", L)),
    ("model.embed_tokens.weight", TensorRole(None, "embed", L)),
    ("model.norm.weight", TensorRole(None, "final_norm", L)),
    # deepseek-ai/DeepSeek-V3: shared experts and the router's correction bias.
    ("model.layers.3.mlp.shared_experts.gate_proj.weight", TensorRole(3, "shared_expert", L)),
    ("model.layers.3.mlp.gate.e_score_correction_bias", TensorRole(3, "router", L)),
    ("model.layers.3.self_attn.kv_a_proj_with_mqa.weight", TensorRole(3, "attn", L)),
]

# Families no table row names, classified by the generic fallback (layer index + keywords).
FALLBACK_NAMES: list[tuple[str, TensorRole]] = [
    ("transformer.h.0.attn.c_attn.weight", TensorRole(0, "attn", L)),  # gpt2
    ("transformer.h.11.mlp.c_fc.weight", TensorRole(11, "ffn", L)),
    ("transformer.h.0.ln_1.weight", TensorRole(0, "norm", L)),
    ("transformer.wte.weight", TensorRole(None, "embed", L)),
    ("transformer.wpe.weight", TensorRole(None, "embed", L)),
    ("transformer.ln_f.weight", TensorRole(None, "final_norm", L)),
    ("gpt_neox.layers.2.attention.query_key_value.weight", TensorRole(2, "attn", L)),  # pythia
    ("gpt_neox.layers.2.mlp.dense_h_to_4h.weight", TensorRole(2, "ffn", L)),
    ("gpt_neox.embed_in.weight", TensorRole(None, "embed", L)),
    ("gpt_neox.final_layer_norm.weight", TensorRole(None, "final_norm", L)),
    ("embed_out.weight", TensorRole(None, "lm_head", L)),
    ("backbone.layers.7.mixer.A_log", TensorRole(7, "linear_attn", L)),  # mamba
    ("backbone.layers.7.mixer.in_proj.weight", TensorRole(7, "linear_attn", L)),
    ("backbone.embeddings.weight", TensorRole(None, "embed", L)),
    ("backbone.norm_f.weight", TensorRole(None, "final_norm", L)),
    ("model.layers.4.feed_forward.w1.weight", TensorRole(4, "ffn", L)),  # internlm-style
    ("model.layers.4.attention.wqkv.weight", TensorRole(4, "attn", L)),
    ("encoder.blocks.9.unknown_block.q_proj.weight", TensorRole(9, "attn", L)),  # unknown wrapper
    ("model.layers.9.weird_module.weight", TensorRole(9, "other", L)),
]


@pytest.mark.parametrize("name,expected", REAL_NAMES + FALLBACK_NAMES, ids=lambda x: x if isinstance(x, str) else "")
def test_real_checkpoint_names_get_their_layer_role_and_tower(name, expected):
    assert classify(name) == expected


def test_a_multimodal_and_a_text_only_checkpoint_share_canonical_names():
    assert canonical_name("model.language_model.layers.3.mlp.up_proj.weight") == "layers.3.mlp.up_proj.weight"
    assert canonical_name("model.layers.3.mlp.up_proj.weight") == "layers.3.mlp.up_proj.weight"
    assert canonical_name("language_model.model.layers.3.mlp.up_proj.weight") == "layers.3.mlp.up_proj.weight"
    parts = split_name("model.language_model.layers.3.mlp.up_proj.weight")
    assert (parts.prefix, parts.layer, parts.local) == ("model.language_model.", 3, "mlp.up_proj.weight")
    father = ["model.language_model.layers.0.mlp.up_proj.weight", "model.visual.blocks.0.attn.qkv.weight",
              "lm_head.weight"]
    mother = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]
    assert pair_names(father, mother) == {
        "model.language_model.layers.0.mlp.up_proj.weight": "model.layers.0.mlp.up_proj.weight",
        "model.visual.blocks.0.attn.qkv.weight": None,
        "lm_head.weight": "lm_head.weight",
    }


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_tensor_of_every_fixture_architecture_has_a_role(arch, fixture_model):
    folder = fixture_model(arch)
    config = json.loads((folder / "config.json").read_text())
    n_layers = layer_count(config)
    names = TensorReader(folder).names
    roles = {name: classify(name) for name in names}
    assert [n for n, r in roles.items() if r.role == "other"] == []  # no allow-list needed
    assert all(r.tower == "language" for r in roles.values())
    per_layer: dict[int, set[str]] = {}
    for role in roles.values():
        if role.layer is not None:
            assert 0 <= role.layer < n_layers
            per_layer.setdefault(role.layer, set()).add(role.role)
    assert sorted(per_layer) == list(range(n_layers))
    for layer, layer_roles in per_layer.items():
        assert layer_roles & {"attn", "linear_attn"}, (layer, layer_roles)
        assert layer_roles & {"ffn", "experts"}, (layer, layer_roles)
        assert "norm" in layer_roles
    model_level = {r.role for r in roles.values() if r.layer is None}
    assert {"embed", "final_norm"} <= model_level


def test_moe_and_hybrid_fixtures_show_their_special_roles(fixture_model):
    counts = {arch: summarize(TensorReader(fixture_model(arch)).names) for arch in
              ("qwen3_5_moe_text", "mixtral", "gemma4_text")}
    assert counts["qwen3_5_moe_text"]["linear_attn"] > 0 and counts["qwen3_5_moe_text"]["shared_expert"] > 0
    assert counts["qwen3_5_moe_text"]["router"] == 4 and counts["mixtral"]["router"] == 4
    assert counts["mixtral"]["experts"] == 4 * 4 * 3  # 4 layers × 4 experts × w1/w2/w3
    assert counts["gemma4_text"]["embed"] >= 3  # embed_tokens + the per-layer-input embedding pathway


def test_summarize_counts_every_role_in_order():
    counts = summarize(["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                        "model.layers.0.self_attn.k_proj.weight", "model.visual.blocks.0.attn.qkv.weight"])
    assert list(counts) == list(ROLES)
    assert counts["embed"] == 1 and counts["attn"] == 2 and counts["other"] == 1 and counts["ffn"] == 0


def test_layer_count_reads_the_text_config_of_multimodal_models():
    assert layer_count({"num_hidden_layers": 28}) == 28
    assert layer_count({"model_type": "gemma4", "text_config": {"num_hidden_layers": 42},
                        "vision_config": {"num_hidden_layers": 16}}) == 42
    assert layer_count({"n_layer": 12}) == 12
    with pytest.raises(DarwinError, match="how many layers"):
        layer_count({"hidden_size": 8})
