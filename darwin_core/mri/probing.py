"""Probe importance and perplexity: how much each decoder layer matters to each kind of input.

Per decoder layer and probe category: `1 − cos(h, h_skip_i)` of the final hidden states when layer i is
replaced by the identity (a forward hook, so any architecture works), plus the perplexity per category and
the router statistics of MoE models (recorded by `darwin_core.mri.moe.RouterRecorder`).
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import torch

from darwin_core.errors import DarwinError
from darwin_core.mri.moe import RouterRecorder
from darwin_core.mri.probes import Probes
from darwin_core.parents import modelparts

PROBE_BATCH = 16


def load_model(model_dir: str | Path, device: str = "cpu"):
    """(model, tokenizer) ready for evaluation: float32 on CPU (exact, deterministic), checkpoint dtype elsewhere."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise DarwinError(f"The model folder {folder} has no config.json.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise DarwinError(f"The tokenizer in {folder} could not be loaded ({error.__class__.__name__}).") from None
    dtype = torch.float32 if str(device) == "cpu" else "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=str(device))
    except (OSError, ValueError) as error:
        raise DarwinError(f"The model in {folder} could not be loaded ({error.__class__.__name__}: {error}).") from None
    model.eval()
    return model, tokenizer


def usable_probes(tokenizer, probes: Probes) -> Probes:
    """The probes without the texts this tokenizer turns into no token at all (they have nothing to measure
    and would leave a batch zero tokens wide); categories left empty are dropped. None left: one sentence."""
    usable = {category: [t for t in texts if tokenizer(t)["input_ids"]] for category, texts in probes.items()}
    usable = {category: texts for category, texts in usable.items() if texts}
    if not usable:
        raise DarwinError("None of the probe texts gives a single token with this model's tokenizer; give probe texts with some content.")
    return usable


def _encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask: with causal attention, real tokens never see the padding, so a text's
    hidden states are the same alone or in any batch (no position-id bookkeeping needed)."""
    ids = [tokenizer(text)["input_ids"] for text in texts]
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return input_ids, mask


@torch.inference_mode()
def run_probes(model, tokenizer, probes: Probes, *, batch_size: int = PROBE_BATCH) -> dict:
    """Probe the loaded model: per-layer importance per category, perplexity, router statistics.

    For every batch of probe texts: one forward pass of the full model (logits → perplexity; routers
    recorded), one of the text decoder (reference final hidden states h), and one per layer with that layer
    skipped (h_skip_i). importance[c][i] is the mean over category c's texts of the per-text mean over
    tokens of 1 − cos(h, h_skip_i). Skipping reruns the whole stack, so the cost is (layers + 2) passes.
    """
    if batch_size < 1:
        raise DarwinError("The probe batch size must be at least 1.")
    probes = usable_probes(tokenizer, probes)
    layers = modelparts.decoder_layers(model)
    body = modelparts.backbone(model)
    device = next(model.parameters()).device
    texts = [(category, text) for category, items in probes.items() for text in items]
    n_layers = len(layers)
    per_text = torch.zeros(len(texts), n_layers, dtype=torch.float64)
    nll = {category: [0.0, 0] for category in probes}
    nonfinite = False
    config = getattr(model, "config", None)
    recorder = None
    if modelparts.is_moe_config(config):
        recorder = RouterRecorder(model, modelparts.expert_count(config), modelparts.experts_per_token(config))
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            input_ids, mask = _encode(tokenizer, [text for _, text in chunk])
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.float()
            nonfinite |= not bool(torch.isfinite(logits).all())
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            token_nll = -logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            target_mask = mask[:, 1:].bool()
            for row, (category, _) in enumerate(chunk):
                values = token_nll[row][target_mask[row]]
                nll[category][0] += float(values.double().sum())
                nll[category][1] += int(values.numel())
            if recorder is not None:
                recorder.mask, recorder.active = mask.reshape(-1).bool(), True
            reference = body(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state.float()
            if recorder is not None:
                recorder.mask, recorder.active = None, False
            nonfinite |= not bool(torch.isfinite(reference).all())
            weights = mask.to(torch.float64)
            counts = weights.sum(-1).clamp_min(1)
            for i, layer in enumerate(layers):
                with modelparts.skip_layer(layer):
                    skipped = body(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state.float()
                distance = (1 - torch.nn.functional.cosine_similarity(reference, skipped, dim=-1)).to(torch.float64)
                # 1 − cos can dip a few ulps below 0 when nothing changed; NaN (a broken model) counts as 0.
                distance = torch.nan_to_num(distance, nan=0.0, posinf=2.0, neginf=0.0).clamp(0.0, 2.0)
                per_text[start : start + len(chunk), i] = ((distance * weights).sum(-1) / counts).cpu()
    finally:
        if recorder is not None:
            recorder.close()

    importance: dict[str, list[float]] = {}
    for category in probes:
        rows = [k for k, (c, _) in enumerate(texts) if c == category]
        importance[category] = [float(v) for v in per_text[rows].mean(0)]
    perplexity = {c: _perplexity(s, n) for c, (s, n) in nll.items()}
    total_s, total_n = sum(s for s, _ in nll.values()), sum(n for _, n in nll.values())
    result = {
        "importance": importance,
        "perplexity": perplexity,
        "perplexity_all": _perplexity(total_s, total_n),
        "nonfinite_outputs": nonfinite,
        "tokens": int(total_n),
        "used": probes,  # the texts actually run (usable_probes)
    }
    if recorder is not None:
        result["routing"] = recorder.stats
    return result


def _perplexity(nll_sum: float, count: int) -> float | None:
    if count == 0 or not math.isfinite(nll_sum):
        return None
    return math.exp(min(nll_sum / count, 700.0))


def probe_model(model_dir: str | Path, probes: Probes, device: str = "cpu", batch_size: int = PROBE_BATCH) -> dict:
    """Load a model, run the probes (run_probes), free it again."""
    model, tokenizer = load_model(model_dir, device)
    try:
        return run_probes(model, tokenizer, probes, batch_size=batch_size)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
