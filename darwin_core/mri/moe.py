"""MoE health: expert similarity from the weights, router statistics from the probe run, and their summary.

Expert similarity samples every expert of a layer at the same indices and averages their pairwise cosines;
the router recorder hooks the routers during the probe run's reference pass; `moe_section` turns both into
the scan's per-layer router entropy, dead-expert share and utilisation matrix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from darwin_core.mri.static import sample_index
from darwin_core.parents import modelparts

EXPERT_SAMPLE = 1 << 13  # elements per expert tensor used for expert-similarity cosines

_EXPERT_INDEX = re.compile(r"(?:^|\.)experts\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------------------------------------------
# Expert similarity (from the weights)
# --------------------------------------------------------------------------------------------------------------


class ExpertVectors:
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
# Router statistics (from the probe run)
# --------------------------------------------------------------------------------------------------------------


class RouterRecorder:
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
