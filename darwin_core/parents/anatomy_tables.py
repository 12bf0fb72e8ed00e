"""Tensor-name patterns → tower and role: the data `anatomy.classify` walks through, top to bottom.

Architectures are data (as in mergekit): supporting a new family means adding rows here, not branches in code.
Every pattern is a Python regular expression matched with ``re.search``; the first matching row wins, so more
specific rows come first (shared experts before experts, routers before FFNs, …). Rows are grouped by the stage
of `classify` that uses them:

1. ``TOWER_PATTERNS`` on the full name: tensors of vision/audio encoders and their projectors. They are copied
   from the father untouched, so their role is ``other`` and they carry no layer index of the language model.
2. ``LANGUAGE_PREFIXES``: the wrapper prefix in front of the language model's own names (multimodal
   ``model.language_model.``, LLaVA-style ``language_model.model.``, plain ``model.``, GPT-2 ``transformer.``…),
   stripped once, longest first.
3. ``AUX_HEADS``: auxiliary heads outside the decoder stack (Qwen3.5 / Qwen3-Next multi-token prediction,
   ``mtp.*``, which transformers does not load but vLLM/SGLang use for speculative decoding). Their sub-modules
   are classified with the layer rows below but get ``layer=None``.
4. ``LAYER_RE`` finds ``layers.N.`` (or ``h.N.``, ``blocks.N.``); ``LAYER_ROLES`` classify the rest of the name
   inside the block, ``MODEL_ROLES`` the names outside any block.
5. ``KEYWORD_ROLES``: the generic fallback for unknown families: well-known projection names.

Checked against the on-disk names (what ``save_pretrained`` writes in transformers 5.23 and what the Hub
checkpoints hold) of llama, mistral, qwen2, qwen3, qwen3_moe, qwen3_5 (+ ``_moe``, fused and per-expert),
gemma3(_text), gemma4(_text, incl. its per-layer-input tensors and MoE block), phi3, mixtral.
"""

from __future__ import annotations

# Roles, in the order the UI lists them.
ROLES: tuple[str, ...] = (
    "embed", "attn", "linear_attn", "ffn", "router", "experts", "shared_expert", "norm", "final_norm",
    "lm_head", "other",
)
TOWERS: tuple[str, ...] = ("language", "vision", "audio")

# (regex on the full name, tower). Only non-language towers are listed; everything else is "language".
TOWER_PATTERNS: tuple[tuple[str, str], ...] = (
    # Gemma 3/4, Qwen3.5, LLaVA, Mistral3, Qwen2-VL and friends: the image encoder itself.
    (r"^(?:model\.|thinker\.)?(?:vision_tower|vision_model|visual|vision_encoder|image_encoder|vpm|vision_embed_tokens)\.", "vision"),
    # Image → text-space projectors/embedders (Gemma embed_vision, LLaVA multi_modal_projector, Phi-3-V, …).
    (r"^(?:model\.)?(?:multi_modal_projector|mm_projector|embed_vision|image_newline|vision_projection|image_projection)(?:\.|_|$)", "vision"),
    # Speech encoders and their projectors (Gemma 3n/4 audio_tower + embed_audio, Qwen-Omni audio_tower).
    (r"^(?:model\.|thinker\.)?(?:audio_tower|audio_model|audio_encoder|embed_audio|audio_projector|audio_projection)(?:\.|_|$)", "audio"),
)

# Wrapper prefixes in front of the language model's names; the first match is stripped.
LANGUAGE_PREFIXES: tuple[str, ...] = (
    r"^model\.language_model\.model\.",
    r"^model\.language_model\.",
    r"^language_model\.model\.",
    r"^language_model\.",
    r"^model\.text_model\.",
    r"^text_model\.",
    r"^thinker\.model\.",
    r"^model\.decoder\.",
    r"^model\.",
    r"^transformer\.",
    r"^gpt_neox\.",
    r"^backbone\.",
)

# Auxiliary heads: regex capturing the sub-module name to classify with the layer rows (layer index dropped).
AUX_HEADS: tuple[str, ...] = (
    r"^mtp\.(?:layers\.\d+\.)?(?P<rest>.+)$",
)

# The decoder block index: "layers.7.", "h.7." (GPT-2/Falcon), "blocks.7.", "block.7.", "layer.7.".
LAYER_RE = r"^(?:layers|h|blocks|block|layer|decoder\.layers)\.(?P<layer>\d+)\.(?P<rest>.+)$"

# Inside a decoder block: (regex on the name after "layers.N.", role). First match wins.
LAYER_ROLES: tuple[tuple[str, str], ...] = (
    # MoE shared experts (Qwen2/3.5-MoE shared_expert + its sigmoid gate; DeepSeek shared_experts).
    (r"(?:^|\.)shared_experts?(?:\.|$)|(?:^|\.)shared_expert_gate(?:\.|$)", "shared_expert"),
    # Routers: Mixtral block_sparse_moe.gate, Qwen-MoE mlp.gate, DeepSeek gate.e_score_correction_bias,
    # Gemma 4 router.{proj,scale,per_expert_scale}, Jamba feed_forward.router, Granite router.layer.
    (r"(?:^|\.)(?:block_sparse_moe|mlp|moe|feed_forward)\.(?:gate|router)(?:\.|$)", "router"),
    (r"(?:^|\.)router(?:\.|$)", "router"),
    # Routed experts: per-expert (experts.N.w1 / experts.N.gate_proj) or fused 3-D (experts.gate_up_proj).
    (r"(?:^|\.)experts(?:\.|$)", "experts"),
    (r"(?:^|\.)block_sparse_moe\.(?:input_linear|output_linear)(?:\.|$)", "experts"),
    # Linear-attention / state-space mixers: Qwen3.5 & Qwen3-Next GatedDeltaNet (linear_attn.*), Mamba mixers.
    (r"(?:^|\.)(?:linear_attn|mamba|ssm|time_mix|token_mixer)\.", "linear_attn"),
    (r"(?:^|\.)mixer\.(?:in_proj|out_proj|conv1d|x_proj|dt_proj|A_log|D|dt_bias|norm)(?:\.|$)", "linear_attn"),
    # Attention, including q/k norms and fused qkv (Phi-3 qkv_proj, GPT-2 c_attn, Falcon query_key_value).
    (r"(?:^|\.)(?:self_attn|self_attention|attention|attn|cross_attn)\.", "attn"),
    # Feed-forward: gate/up/down, Phi-3 fused gate_up_proj, Mixtral-style w1/w2/w3 outside experts.
    (r"(?:^|\.)(?:mlp|feed_forward|ffn|ff)\.", "ffn"),
    # Gemma 4 (and 3n) per-layer-input branch: gate → act → × per-layer embedding → projection, added to the
    # residual stream like a small gated FFN. Gemma 3n LAuReL low-rank residual: likewise FFN-like.
    (r"^per_layer_input_gate\.|^per_layer_projection\.|^laurel\.linear_(?:left|right)\.", "ffn"),
    # Block norms: input/post-attention/pre-/post-feedforward (Gemma: _1/_2 around the MoE branch),
    # post_per_layer_input_norm, LAuReL norm, GPT-style ln_1/ln_2; Gemma 4's per-layer output scale.
    (r"^(?:[^.]*norm[^.]*|ln_?\d*)\.(?:weight|bias)$|^(?:[^.]*norm[^.]*|ln_?\d*)$", "norm"),
    (r"^laurel\.post_laurel_norm\.", "norm"),
    (r"^layer_scalar$", "norm"),
)

# Outside any block: (regex on the prefix-stripped name, role).
MODEL_ROLES: tuple[tuple[str, str], ...] = (
    (r"^(?:lm_head|embed_out)(?:\.|$)", "lm_head"),
    # Token embeddings, learned positions, and Gemma 4 / 3n per-layer-input embedding pathway: a second
    # vocab-indexed table plus the projection and norm that turn the main embedding into per-layer inputs.
    (r"^(?:embed_tokens|embed_tokens_per_layer|wte|wpe|embed_in|embeddings|word_embeddings|tok_embeddings"
     r"|embed_positions|per_layer_model_projection|per_layer_projection_norm|altup_projections"
     r"|altup_unembed_projections)(?:\.|$)", "embed"),
    (r"^(?:norm|final_layernorm|final_layer_norm|final_norm|ln_f|norm_f|layer_norm|layernorm)\.(?:weight|bias)$",
     "final_norm"),
    (r"^output\.weight$", "lm_head"),  # Llama-original / Mistral consolidated naming
)

# Generic fallback for names no row above recognised: (regex on the in-block name, role).
KEYWORD_ROLES: tuple[tuple[str, str], ...] = (
    (r"(?:^|\.|_)(?:q_proj|k_proj|v_proj|o_proj|qkv_proj|c_attn|query_key_value|query|key|value|wq|wk|wv|wo"
     r"|q_norm|k_norm)(?:\.|$)", "attn"),
    (r"(?:^|\.|_)(?:gate_proj|up_proj|down_proj|gate_up_proj|fc1|fc2|fc_in|fc_out|c_fc|w1|w2|w3"
     r"|dense_h_to_4h|dense_4h_to_h|wi|wi_0|wi_1)(?:\.|$)", "ffn"),
    (r"(?:^|\.)(?:A_log|dt_bias|conv1d|x_proj|dt_proj|in_proj|out_proj)(?:\.|$)", "linear_attn"),
    (r"norm|(?:^|\.)ln_?\d*(?:\.|$)", "norm"),
)

# -- config sizes the weights must hold (`anatomy.check_config_against_weights`) ---------------------------
# The token embedding, on the prefix-stripped name outside any block: its shape [vocab, width] is what the
# config's vocab_size and hidden size are checked against. Gemma's embed_tokens_per_layer and learned position
# tables (wpe, embed_positions) are other tables and do not match. The output head is the fallback.
TOKEN_EMBEDDINGS: tuple[str, ...] = (
    r"(?:^|\.)(?:embed_tokens|wte|embed_in|word_embeddings|tok_embeddings|embeddings)\.weight$",
)
OUTPUT_HEADS: tuple[str, ...] = (r"^(?:lm_head|embed_out|output)\.weight$",)
# Config keys, first present wins. The width keys name an embedding narrower than the hidden state (OPT-350m's
# word_embed_proj_dim); without one, the embedding is as wide as the hidden size.
LAYER_COUNT_KEYS: tuple[str, ...] = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HIDDEN_SIZE_KEYS: tuple[str, ...] = ("hidden_size", "d_model", "n_embd")
EMBEDDING_WIDTH_KEYS: tuple[str, ...] = ("word_embed_proj_dim", "embedding_size")
VOCAB_SIZE_KEYS: tuple[str, ...] = ("vocab_size",)
