"""Seed 002's prescription: from two parents' scans, the per-tensor `mri_ratio` (share of the mother).

Each language-tower tensor gets a combined score, static·0.4 + probe·0.6, in either parent; the ratio is
the mother's share of the two. The darwin-v6 genome blends these ratios with its own through `mri_trust`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from darwin_core.errors import DarwinError
from darwin_core.mri.probes import equal_weights

# Seed 002's prescription constants.
STATIC_ENTROPY_WEIGHT = 0.3
STATIC_STD_WEIGHT = 0.2
STATIC_NORM_WEIGHT = 0.002
NORM_CLAMP = 100.0
STATIC_SHARE = 0.4
PROBE_SHARE = 0.6


def _static_score(profile: Mapping) -> float:
    """Seed 002: entropy·0.3 + std·0.2 + clamp(norm, max=100)·0.002."""
    return (
        profile["entropy"] * STATIC_ENTROPY_WEIGHT
        + profile["std"] * STATIC_STD_WEIGHT
        + min(profile["norm"], NORM_CLAMP) * STATIC_NORM_WEIGHT
    )


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
