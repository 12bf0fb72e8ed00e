"""The Model MRI: where in a network its parameters and its skills live, measured before breeding.

A scan has four parts, each answering a question the breeder asks (seed 002, seed 004):

* **Static profile** — per tensor: Shannon entropy of the value histogram, standard deviation, L2 norm;
  aggregated per layer and anatomical role. Cheap, from the files alone, one tensor in memory at a time, so
  it works on checkpoints larger than RAM.
* **Probe importance** — per decoder layer and probe category: `1 − cos(h, h_skip_i)` of the final hidden
  states when layer i is replaced by the identity (a forward hook, so any architecture works). Shows which
  layers each kind of input depends on.
* **Parent divergence** (pairs only) — per tensor and per layer × role: relative delta norm `‖b−a‖/‖a‖` and
  cosine. Shows where two specialists differ.
* **MoE health** (MoE models only) — router entropy, dead-expert share, expert similarity and the expert
  utilisation matrix, from router outputs captured during the probe run and from the expert weights.

From two parents' scans, `prescription` computes seed 002's per-tensor `mri_ratio` (share of the mother),
which the darwin-v6 genome blends with its own ratios through `mri_trust`.

Scans are plain JSON-ready dicts; `save_scan` writes them with sorted keys and floats rounded to 6
significant digits, so the same scan twice gives byte-identical files.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import torch

from darwin_core.parents import modelparts
from darwin_core.parents.anatomy import TensorRole, classify, layer_count
from darwin_core.errors import DarwinError
from darwin_core.mri.probes import Probes, equal_weights, resolve_probes
from darwin_core.io.tensors import TensorReader

FORMAT = "darwin-mri/1"
PAIR_FORMAT = "darwin-mri-pair/1"

# Static profile. The histogram has fixed bins over the tensor's own [min, max], so entropy (in bits, at most
# log2(256) = 8) measures how spread-out the values are independently of their scale. Tensors above
# SAMPLE_THRESHOLD elements are histogrammed on a fixed, seeded index set of HIST_SAMPLE elements (the same
# indices for every tensor of a given size, so two parents are sampled alike); std and norm are always exact.
HIST_BINS = 256
SAMPLE_THRESHOLD = 1 << 22
HIST_SAMPLE = 1 << 20
CHUNK = 1 << 20  # elements per float64 chunk: bounds the extra memory on huge tensors, stays in cache
EXPERT_SAMPLE = 1 << 13  # elements per expert tensor used for expert-similarity cosines
SAMPLE_SEED = 0

# Seed 002's prescription constants.
STATIC_ENTROPY_WEIGHT = 0.3
STATIC_STD_WEIGHT = 0.2
STATIC_NORM_WEIGHT = 0.002
NORM_CLAMP = 100.0
STATIC_SHARE = 0.4
PROBE_SHARE = 0.6

PROBE_BATCH = 16
SIGNIFICANT_DIGITS = 6

_EXPERT_INDEX = re.compile(r"(?:^|\.)experts\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------------------------------------------
# Static profile
# --------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def sample_index(numel: int, k: int) -> torch.Tensor:
    """k deterministic indices into a flat tensor of numel elements (seeded; depends on nothing else)."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    return torch.randint(numel, (k,), generator=gen)


def _finite_moments(flat: torch.Tensor) -> tuple[int, float, float, int]:
    """(finite count, sum, sum of squares, non-finite count) in float64, chunk by chunk."""
    n, s, ss, bad = 0, 0.0, 0.0, 0
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start : start + CHUNK].to(torch.float64)
        if not bool(torch.isfinite(chunk).all()):
            finite = torch.isfinite(chunk)
            bad += chunk.numel() - int(finite.sum())
            chunk = chunk[finite]
        n += chunk.numel()
        s += float(chunk.sum())
        ss += float(torch.dot(chunk, chunk))
    return n, s, ss, bad


def histogram_entropy(values: torch.Tensor, bins: int = HIST_BINS) -> float:
    """Shannon entropy in bits of a `bins`-bin histogram over [min, max] of the finite values."""
    values = values.reshape(-1).to(torch.float32)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return 0.0
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return 0.0
    counts = torch.histc(values, bins=bins, min=lo, max=hi).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def tensor_profile(tensor: torch.Tensor) -> dict:
    """Entropy, std (unbiased, as torch.std), L2 norm, element count, non-finite count, whether sampled."""
    flat = tensor.reshape(-1)
    n, s, ss, bad = _finite_moments(flat)
    mean = s / n if n else 0.0
    var = max(ss - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    sampled = flat.numel() > SAMPLE_THRESHOLD
    values = flat[sample_index(flat.numel(), HIST_SAMPLE).to(flat.device)] if sampled else flat
    return {
        "entropy": histogram_entropy(values),
        "std": math.sqrt(var),
        "norm": math.sqrt(ss),
        "numel": int(flat.numel()),
        "nonfinite": int(bad),
        "sampled": sampled,
    }


def nonfinite_tensors(model_dir: str | Path, *, device: str = "cpu") -> dict[str, int]:
    """Tensor name → count of NaN/Inf values, for the tensors that have any (one tensor in memory at a time)."""
    reader = open_reader(model_dir, device)
    bad: dict[str, int] = {}
    for name in reader.names:
        count = _finite_moments(reader.get(name).reshape(-1))[3]
        if count:
            bad[name] = count
    return bad


def _static_score(profile: Mapping) -> float:
    """Seed 002: entropy·0.3 + std·0.2 + clamp(norm, max=100)·0.002."""
    return (
        profile["entropy"] * STATIC_ENTROPY_WEIGHT
        + profile["std"] * STATIC_STD_WEIGHT
        + min(profile["norm"], NORM_CLAMP) * STATIC_NORM_WEIGHT
    )


def aggregate_static(tensors: Mapping[str, Mapping], num_layers: int) -> dict:
    """Per layer × role and per non-layer role (language tower): mean entropy and std, combined norm."""

    def bucket() -> dict:
        return {"entropy": 0.0, "std": 0.0, "norm_sq": 0.0, "tensors": 0}

    layers: list[dict[str, dict]] = [{} for _ in range(num_layers)]
    other: dict[str, dict] = {}
    for profile in tensors.values():
        if profile["tower"] != "language":
            continue
        layer = profile["layer"]
        if layer is not None and 0 <= layer < num_layers:
            target = layers[layer].setdefault(profile["role"], bucket())
        else:
            target = other.setdefault(profile["role"], bucket())
        target["entropy"] += profile["entropy"]
        target["std"] += profile["std"]
        target["norm_sq"] += profile["norm"] ** 2
        target["tensors"] += 1

    def finish(b: dict) -> dict:
        k = b["tensors"]
        return {"entropy": b["entropy"] / k, "std": b["std"] / k, "norm": math.sqrt(b["norm_sq"]), "tensors": k}

    return {
        "layers": [{role: finish(b) for role, b in sorted(layer.items())} for layer in layers],
        "other": {role: finish(b) for role, b in sorted(other.items())},
    }


# --------------------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------------------


def _pair_sums(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Σa·b, Σa², Σb², Σ(b−a)² in float64, chunk by chunk (non-finite values count as they are)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    sums = {"dot": 0.0, "aa": 0.0, "bb": 0.0, "dd": 0.0}
    for start in range(0, fa.numel(), CHUNK):
        x = fa[start : start + CHUNK].to(torch.float64)
        y = fb[start : start + CHUNK].to(torch.float64)
        d = y - x
        sums["dot"] += float(torch.dot(x, y))
        sums["aa"] += float(torch.dot(x, x))
        sums["bb"] += float(torch.dot(y, y))
        sums["dd"] += float(torch.dot(d, d))
    return sums


def _divergence_from_sums(sums: Mapping[str, float]) -> dict[str, float | None]:
    """rel_delta = ‖b−a‖/‖a‖ (None when a is zero and b is not); cosine (1 when both are zero, 0 when one is)."""
    na, nb, nd = math.sqrt(sums["aa"]), math.sqrt(sums["bb"]), math.sqrt(sums["dd"])
    if not all(math.isfinite(v) for v in (na, nb, nd, sums["dot"])):
        return {"rel_delta": None, "cosine": None}
    if na > 0:
        rel = nd / na
    else:
        rel = 0.0 if nd == 0 else None
    if na > 0 and nb > 0:
        cos = max(-1.0, min(1.0, sums["dot"] / (na * nb)))
    else:
        cos = 1.0 if na == nb else 0.0
    return {"rel_delta": rel, "cosine": cos}


def compare_tensors(a: torch.Tensor, b: torch.Tensor) -> dict[str, float | None]:
    """Relative delta norm and cosine of two same-shaped tensors."""
    if tuple(a.shape) != tuple(b.shape):
        raise DarwinError(f"Cannot compare tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    return _divergence_from_sums(_pair_sums(a, b))


def aggregate_divergence(sums: Mapping[str, Mapping], roles: Mapping[str, TensorRole], num_layers: int) -> dict:
    """Per layer × role, per layer (all roles) and per non-layer role, from the per-tensor raw sums."""
    keys = ("dot", "aa", "bb", "dd")
    per_role: list[dict[str, dict]] = [{} for _ in range(num_layers)]
    per_layer = [dict.fromkeys(keys, 0.0) for _ in range(num_layers)]
    other: dict[str, dict] = {}
    for name, s in sums.items():
        role = roles[name]
        if role.tower != "language":
            continue
        if role.layer is not None and 0 <= role.layer < num_layers:
            targets = [per_role[role.layer].setdefault(role.role, dict.fromkeys(keys, 0.0)), per_layer[role.layer]]
        else:
            targets = [other.setdefault(role.role, dict.fromkeys(keys, 0.0))]
        for target in targets:
            for key in keys:
                target[key] += s[key]
    return {
        "layers": [{r: _divergence_from_sums(s) for r, s in sorted(layer.items())} for layer in per_role],
        "layer_total": [_divergence_from_sums(s) for s in per_layer],
        "other": {r: _divergence_from_sums(s) for r, s in sorted(other.items())},
    }


# --------------------------------------------------------------------------------------------------------------
# Expert similarity (MoE, from the weights)
# --------------------------------------------------------------------------------------------------------------


class _ExpertVectors:
    """Collects, for one layer at a time, a sampled weight vector per expert; then their mean pairwise cosine.

    Every expert of a layer is sampled at the same indices (they share shapes), so the cosines compare like
    with like. Handles per-expert tensors (`...experts.7.down_proj.weight`, the Hub layout) and fused 3-D
    tensors (`...experts.down_proj` of shape [experts, ...]).
    """

    def __init__(self, n_experts: int) -> None:
        self.n_experts = n_experts
        self.parts: dict[int, list[tuple[str, torch.Tensor]]] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        match = _EXPERT_INDEX.search(name)
        if match:
            self._add_one(int(match.group(1)), match.group(2), tensor)
        elif tensor.dim() >= 2 and tensor.shape[0] == self.n_experts:
            for expert in range(self.n_experts):
                self._add_one(expert, name, tensor[expert])

    def _add_one(self, expert: int, key: str, tensor: torch.Tensor) -> None:
        flat = tensor.reshape(-1)
        k = min(flat.numel(), EXPERT_SAMPLE)
        values = flat[sample_index(flat.numel(), k).to(flat.device)] if k < flat.numel() else flat
        self.parts.setdefault(expert, []).append((key, values.to(torch.float32).cpu()))

    def finish(self) -> float | None:
        """Mean cosine over distinct expert pairs (None if fewer than two experts were seen); resets."""
        experts = sorted(self.parts)
        if len(experts) < 2:
            self.parts = {}
            return None
        rows = [torch.cat([v for _, v in sorted(self.parts[e], key=lambda kv: kv[0])]) for e in experts]
        self.parts = {}
        if len({r.numel() for r in rows}) != 1:
            return None
        matrix = torch.nn.functional.normalize(torch.stack(rows).to(torch.float64), dim=1)
        gram = matrix @ matrix.T
        n = gram.shape[0]
        return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


# --------------------------------------------------------------------------------------------------------------
# One pass over the tensors (one model, or two parents side by side)
# --------------------------------------------------------------------------------------------------------------


def open_reader(model_dir: str | Path, device: str = "cpu") -> TensorReader:
    folder = Path(model_dir)
    if not folder.is_dir():
        raise DarwinError(f"The model folder {folder} does not exist.")
    return TensorReader(folder, device=device)


def read_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DarwinError(f"The model folder {Path(model_dir)} has no config.json.") from None
    except json.JSONDecodeError:
        raise DarwinError(f"The config.json in {Path(model_dir)} is not valid JSON.") from None


def _layer_order(names: Iterable[str]) -> list[tuple[str, TensorRole]]:
    """Names with their roles, grouped by layer (non-layer tensors first), then by name."""
    roles = [(name, classify(name)) for name in names]
    return sorted(roles, key=lambda nr: (-1 if nr[1].layer is None else nr[1].layer, nr[0]))


def _check_same_tensors(a: TensorReader, b: TensorReader) -> None:
    names_a, names_b = set(a.names), set(b.names)
    if names_a != names_b:
        only = sorted(names_a ^ names_b)
        raise DarwinError(
            f"The parents do not have the same tensors ({len(only)} differ, e.g. {only[0]}), so they cannot be compared."
        )
    for name in sorted(names_a):
        if tuple(a.shape(name)) != tuple(b.shape(name)):
            raise DarwinError(
                f"Tensor {name} has shape {tuple(a.shape(name))} in the father and {tuple(b.shape(name))} in the mother."
            )


def tensor_pass(readers: list[TensorReader], n_experts: int | None) -> dict:
    """One read of every tensor of one model (or of two parents side by side, each tensor once per parent):
    static profiles per reader, divergence sums (two readers), expert similarity per MoE layer per reader.
    Tensors are visited layer by layer so each layer's expert vectors can be compared and dropped."""
    ordered = _layer_order(readers[0].names)
    profiles: list[dict[str, dict]] = [{} for _ in readers]
    sums: dict[str, dict] = {}
    similarity: list[dict[int, float | None]] = [{} for _ in readers]
    experts = [_ExpertVectors(n_experts) for _ in readers] if n_experts else None
    current_layer: int | None = None

    def close_layer() -> None:
        if experts and current_layer is not None:
            for k, collector in enumerate(experts):
                if collector.parts:
                    similarity[k][current_layer] = collector.finish()

    for name, role in ordered:
        if role.layer != current_layer:
            close_layer()
            current_layer = role.layer
        tensors = [reader.get(name) for reader in readers]
        for k, tensor in enumerate(tensors):
            profiles[k][name] = {"layer": role.layer, "role": role.role, "tower": role.tower, **tensor_profile(tensor)}
            if experts and role.role == "experts" and role.layer is not None and role.tower == "language":
                experts[k].add(name, tensor)
        if len(tensors) == 2:
            sums[name] = _pair_sums(tensors[0], tensors[1])
        del tensors
    close_layer()
    return {"profiles": profiles, "sums": sums, "similarity": similarity, "roles": dict(ordered)}


# --------------------------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------------------------


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


class _RouterRecorder:
    """Forward hooks on the MoE routers: per layer, expert counts in the top-k, summed routing probabilities,
    summed per-token routing entropy, over real (non-pad) tokens."""

    def __init__(self, model, n_experts: int, top_k: int | None) -> None:
        self.n_experts = n_experts
        self.top_k = top_k
        self.mask: torch.Tensor | None = None
        self.active = False  # only the reference pass is recorded (not the logits pass, not skipped passes)
        self.stats: dict[int, dict] = {}
        self.handles = [r.module.register_forward_hook(self._hook(r.layer)) for r in modelparts.routers(model)]

    def _hook(self, layer: int):
        def hook(module, args, output) -> None:
            if self.active:
                self._record(layer, module, output)

        return hook

    def _record(self, layer: int, module, output) -> None:
        outputs = output if isinstance(output, tuple) else (output,)
        scores = outputs[0].detach().float().reshape(-1, outputs[0].shape[-1])
        if scores.shape[-1] != self.n_experts:
            return
        # Routers return logits (Qwen, Mixtral) or probabilities (Gemma 4): rows that are already
        # non-negative and sum to 1 are taken as probabilities.
        is_prob = bool((scores >= 0).all()) and bool(torch.allclose(scores.sum(-1), torch.ones(1, device=scores.device), atol=1e-3))
        probs = scores if is_prob else torch.softmax(scores, dim=-1)
        index = next((o for o in outputs[1:] if isinstance(o, torch.Tensor) and not o.is_floating_point()), None)
        if index is None:
            k = self.top_k or getattr(module, "top_k", None) or 1
            index = probs.topk(k, dim=-1).indices
        index = index.reshape(probs.shape[0], -1)
        if self.mask is not None and self.mask.numel() == probs.shape[0]:
            keep = self.mask.to(probs.device)
            probs, index = probs[keep], index[keep]
        entry = self.stats.setdefault(
            layer,
            {"counts": torch.zeros(self.n_experts, dtype=torch.float64), "prob_sum": torch.zeros(self.n_experts, dtype=torch.float64), "entropy_sum": 0.0, "tokens": 0},
        )
        entry["counts"] += torch.bincount(index.reshape(-1).cpu(), minlength=self.n_experts)[: self.n_experts].to(torch.float64)
        entry["prob_sum"] += probs.sum(0).cpu().to(torch.float64)
        p = probs.clamp_min(1e-12)
        entry["entropy_sum"] += float(-(probs * p.log()).sum()) / math.log(self.n_experts)
        entry["tokens"] += probs.shape[0]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


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
        recorder = _RouterRecorder(model, modelparts.expert_count(config), modelparts.experts_per_token(config))
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
    }
    if recorder is not None:
        result["routing"] = recorder.stats
    return result


def _perplexity(nll_sum: float, count: int) -> float | None:
    if count == 0 or not math.isfinite(nll_sum):
        return None
    return math.exp(min(nll_sum / count, 700.0))


# --------------------------------------------------------------------------------------------------------------
# MoE section
# --------------------------------------------------------------------------------------------------------------


def moe_section(routing: Mapping[int, Mapping] | None, similarity: Mapping[int, float | None], n_experts: int, top_k: int | None) -> dict:
    """Per MoE layer: router entropy (normalised entropy of the mean routing distribution, 1 = load spread
    evenly), token entropy (mean normalised per-token entropy), dead-expert share (experts never in any
    token's top-k over the probes), expert similarity (mean pairwise cosine of expert weights), and the
    utilisation matrix (share of top-k slots each expert received)."""
    routing = routing or {}
    layers = sorted(set(routing) | {k for k, v in similarity.items() if v is not None})
    out = {
        "num_experts": n_experts,
        "experts_per_token": top_k,
        "layers": layers,
        "router_entropy": [],
        "token_entropy": [],
        "dead_share": [],
        "expert_similarity": [similarity.get(layer) for layer in layers],
        "utilisation": [],
    }
    log_e = math.log(n_experts) if n_experts > 1 else 1.0
    for layer in layers:
        entry = routing.get(layer)
        if entry is None or entry["tokens"] == 0:
            out["router_entropy"].append(None)
            out["token_entropy"].append(None)
            out["dead_share"].append(None)
            out["utilisation"].append([0.0] * n_experts)
            continue
        mean_probs = entry["prob_sum"] / entry["tokens"]
        p = mean_probs[mean_probs > 0]
        out["router_entropy"].append(float(-(p * p.log()).sum()) / log_e)
        out["token_entropy"].append(entry["entropy_sum"] / entry["tokens"])
        counts = entry["counts"]
        out["dead_share"].append(float((counts == 0).sum()) / n_experts)
        total = float(counts.sum())
        out["utilisation"].append([float(c) / total if total else 0.0 for c in counts])
    return out


# --------------------------------------------------------------------------------------------------------------
# Scans
# --------------------------------------------------------------------------------------------------------------


def _model_info(model_dir: Path, reader: TensorReader, config: dict) -> dict:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    architectures = config.get("architectures") or []
    return {
        "path": str(model_dir),
        "architecture": architectures[0] if architectures else None,
        "model_type": config.get("model_type"),
        "num_layers": layer_count(config),
        "hidden_size": config.get("hidden_size") or text.get("hidden_size"),
        "parameters": int(reader.parameter_count),
        "bytes": int(reader.total_bytes),
        "tensors": len(reader.names),
        "is_moe": modelparts.is_moe_config(config),
    }


def _settings(probes: Probes, device: str) -> dict:
    return {
        "hist_bins": HIST_BINS,
        "sample_threshold": SAMPLE_THRESHOLD,
        "hist_sample": HIST_SAMPLE,
        "expert_sample": EXPERT_SAMPLE,
        "device": str(device),
        "probe_categories": list(probes),
    }


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


def _assemble(model_dir: Path, reader: TensorReader, config: dict, profiles: dict, similarity: dict, probe: dict, probes: Probes, device: str) -> dict:
    info = _model_info(model_dir, reader, config)
    n_layers = info["num_layers"]
    scan = {
        "format": FORMAT,
        "model": info,
        "settings": _settings(probes, device),
        "static": {"tensors": profiles, **aggregate_static(profiles, n_layers)},
        "probes": {
            "categories": list(probes),
            "texts": {c: list(t) for c, t in probes.items()},
            "importance": probe["importance"],
            "perplexity": probe["perplexity"],
            "perplexity_all": probe["perplexity_all"],
            "tokens": probe["tokens"],
            "nonfinite_outputs": probe["nonfinite_outputs"],
        },
    }
    if info["is_moe"]:
        scan["moe"] = moe_section(
            probe.get("routing"), similarity, modelparts.expert_count(config) or 0, modelparts.experts_per_token(config)
        )
    return scan


def scan_model(
    model_dir: str | Path,
    *,
    probes: Probes | str | Path | None = None,
    device: str = "cpu",
    batch_size: int = PROBE_BATCH,
) -> dict:
    """The MRI of one model (a local folder in the Hub layout): static profile, probe importance, MoE health."""
    folder = Path(model_dir)
    probe_set = resolve_probes(probes)
    reader = open_reader(folder, device)
    config = read_config(folder)
    n_experts = modelparts.expert_count(config) if modelparts.is_moe_config(config) else None
    passed = tensor_pass([reader], n_experts)
    probe = probe_model(folder, probe_set, device, batch_size)
    return _assemble(folder, reader, config, passed["profiles"][0], passed["similarity"][0], probe, probe_set, device)


def scan_pair(
    father_dir: str | Path,
    mother_dir: str | Path,
    *,
    probes: Probes | str | Path | None = None,
    device: str = "cpu",
    batch_size: int = PROBE_BATCH,
    weights: Mapping[str, float] | None = None,
) -> dict:
    """Both parents' scans, their divergence (per tensor, per layer × role), the layer advantage map
    (mother − father importance per layer and category) and the seed-002 prescription (per-tensor
    mri_ratio, share of the mother). Each tensor is read once per parent."""
    folders = (Path(father_dir), Path(mother_dir))
    probe_set = resolve_probes(probes)
    readers = [open_reader(f, device) for f in folders]
    configs = [read_config(f) for f in folders]
    _check_same_tensors(*readers)
    moe = modelparts.is_moe_config(configs[0])
    passed = tensor_pass(readers, modelparts.expert_count(configs[0]) if moe else None)
    scans = []
    for k, folder in enumerate(folders):
        probe = probe_model(folder, probe_set, device, batch_size)
        scans.append(
            _assemble(folder, readers[k], configs[k], passed["profiles"][k], passed["similarity"][k], probe, probe_set, device)
        )
    father, mother = scans
    n_layers = father["model"]["num_layers"]
    divergence = {
        "tensors": {name: _divergence_from_sums(s) for name, s in passed["sums"].items()},
        **aggregate_divergence(passed["sums"], passed["roles"], n_layers),
    }
    advantage = {
        c: [m - f for f, m in zip(father["probes"]["importance"][c], mother["probes"]["importance"][c])]
        for c in probe_set
    }
    return {
        "format": PAIR_FORMAT,
        "father": father,
        "mother": mother,
        "divergence": divergence,
        "advantage": advantage,
        "prescription": prescription(father, mother, weights=weights),
    }


# --------------------------------------------------------------------------------------------------------------
# Prescription (seed 002)
# --------------------------------------------------------------------------------------------------------------


def _probe_scores(scan: Mapping, weights: Mapping[str, float]) -> tuple[list[float], float]:
    """Per layer Σ_c importance[c][layer]·w_c, and its mean over layers (for tensors outside any layer)."""
    importance = scan["probes"]["importance"]
    n = len(next(iter(importance.values())))
    per_layer = [sum(importance[c][i] * w for c, w in weights.items()) for i in range(n)]
    return per_layer, (sum(per_layer) / n if n else 0.0)


def combined_scores(scan: Mapping, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Seed 002's combined score per language-tower tensor: static·0.4 + probe·0.6.

    The probe score of a tensor is its layer's weighted importance; tensors outside the decoder layers
    (embeddings, final norm, lm_head) serve every layer and get the mean over layers.
    """
    categories = scan["probes"]["categories"]
    weights = dict(weights) if weights is not None else equal_weights(categories)
    unknown = sorted(set(weights) - set(categories))
    if unknown:
        raise DarwinError(f"Probe weight given for {unknown[0]!r}, which is not a probe category of this scan.")
    per_layer, mean_score = _probe_scores(scan, weights)
    scores: dict[str, float] = {}
    for name, profile in scan["static"]["tensors"].items():
        if profile["tower"] != "language":
            continue
        layer = profile["layer"]
        probe = per_layer[layer] if layer is not None and 0 <= layer < len(per_layer) else mean_score
        scores[name] = _static_score(profile) * STATIC_SHARE + probe * PROBE_SHARE
    return scores


def prescription(scan_father: Mapping, scan_mother: Mapping, *, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-tensor mri_ratio = combined_mother / (combined_father + combined_mother), 0 = father, 1 = mother.

    Only language-tower tensors get a ratio (other towers are copied from the father by the merge engine);
    a tensor whose two scores sum to zero gets 0.5.
    """
    if list(scan_father["probes"]["categories"]) != list(scan_mother["probes"]["categories"]):
        raise DarwinError("The two scans used different probe categories, so their scores cannot be compared.")
    a = combined_scores(scan_father, weights)
    b = combined_scores(scan_mother, weights)
    if set(a) != set(b):
        raise DarwinError("The two scans cover different tensors, so no per-tensor prescription can be made.")
    ratios: dict[str, float] = {}
    for name in sorted(a):
        total = a[name] + b[name]
        ratios[name] = b[name] / total if total > 0 and math.isfinite(total) else 0.5
    return ratios


# --------------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------------


def _rounded(value: object) -> object:
    """Floats to SIGNIFICANT_DIGITS significant digits (non-finite → None); containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def scan_json(scan: Mapping) -> str:
    """The canonical text of a scan (or any report): sorted keys, rounded floats, strict JSON (no NaN)."""
    return json.dumps(_rounded(scan), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def save_json(report: Mapping, path: str | Path) -> Path:
    """Write canonical JSON beside the target, then rename it into place, so it is never half there."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(scan_json(report), encoding="utf-8")
    tmp.replace(target)
    return target


def save_scan(scan: Mapping, path: str | Path) -> Path:
    """Write a scan as canonical JSON: the same scan twice gives byte-identical files."""
    return save_json(scan, path)


def load_scan(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DarwinError(f"The scan file {path} does not exist.") from None
    except json.JSONDecodeError:
        raise DarwinError(f"The scan file {path} is not valid JSON.") from None
    if data.get("format") not in (FORMAT, PAIR_FORMAT):
        raise DarwinError(f"The file {path} is not a Darwin MRI scan.")
    return data


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def scan_summary(scan: Mapping) -> str:
    lines = []
    scans = [("father", scan["father"]), ("mother", scan["mother"])] if scan["format"] == PAIR_FORMAT else [("model", scan)]
    for label, s in scans:
        imp = s["probes"]["importance"]
        top = {c: max(range(len(v)), key=v.__getitem__) for c, v in imp.items() if v}
        lines.append(
            f"{label}: {s['model']['model_type']}, {s['model']['num_layers']} layers, "
            f"perplexity {s['probes']['perplexity_all']:.3g}; most important layer per probe: "
            + ", ".join(f"{c} L{i}" for c, i in top.items())
        )
        if "moe" in s:
            dead = [d for d in s["moe"]["dead_share"] if d is not None]
            if dead:
                lines.append(f"{label}: MoE dead-expert share up to {max(dead):.0%}")
    if scan["format"] == PAIR_FORMAT:
        totals = [d["rel_delta"] for d in scan["divergence"]["layer_total"]]
        finite = [(i, v) for i, v in enumerate(totals) if v is not None]
        if finite:
            i, v = max(finite, key=lambda iv: iv[1])
            lines.append(f"parents differ most at layer {i} (relative delta {v:.3g})")
        ratios = list(scan["prescription"].values())
        lines.append(f"prescription: {len(ratios)} tensors, mean mri_ratio {sum(ratios) / len(ratios):.3f}")
    return "\n".join(lines)


def model_folder(ref: str) -> Path:
    """A local model folder for a CLI argument: the folder itself, or a Hub id ("org/name[@revision]")
    resolved and downloaded (weights, config, tokenizer only) with HF_TOKEN if set."""
    if Path(ref).is_dir():
        return Path(ref)
    import os

    from darwin_core.parents import hub

    token = os.environ.get("HF_TOKEN") or None
    resolved = hub.download(hub.resolve_model(ref, local_mode=True, token=token), token)
    if resolved.folder is None:
        raise DarwinError(f"{ref} could not be made available locally.")
    return Path(resolved.folder)


