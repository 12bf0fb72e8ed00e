"""The static half of the MRI: what the weight files alone say, one tensor in memory at a time.

Per tensor: Shannon entropy of the value histogram, standard deviation, L2 norm, aggregated per layer and
anatomical role; for a pair of parents, the relative delta norm `‖b−a‖/‖a‖` and cosine per tensor and per
layer × role. Everything is computed chunk by chunk in float64, so it works on checkpoints larger than RAM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import torch

from darwin_core.errors import DarwinError
from darwin_core.parents.anatomy import TensorRole

# Static profile. The histogram has fixed bins over the tensor's own [min, max], so entropy (in bits, at most
# log2(256) = 8) measures how spread-out the values are independently of their scale. Tensors above
# SAMPLE_THRESHOLD elements are histogrammed on a fixed, seeded index set of HIST_SAMPLE elements (the same
# indices for every tensor of a given size, so two parents are sampled alike); std and norm are always exact.
HIST_BINS = 256
SAMPLE_THRESHOLD = 1 << 22
HIST_SAMPLE = 1 << 20
CHUNK = 1 << 20  # elements per float64 chunk: bounds the extra memory on huge tensors, stays in cache
SAMPLE_SEED = 0


# --------------------------------------------------------------------------------------------------------------
# Static profile
# --------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def sample_index(numel: int, k: int) -> torch.Tensor:
    """k deterministic indices into a flat tensor of numel elements (seeded; depends on nothing else)."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    return torch.randint(numel, (k,), generator=gen)


def finite_moments(flat: torch.Tensor) -> tuple[int, float, float, int]:
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
    n, s, ss, bad = finite_moments(flat)
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


def pair_sums(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
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


def divergence_from_sums(sums: Mapping[str, float]) -> dict[str, float | None]:
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
    return divergence_from_sums(pair_sums(a, b))


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
        "layers": [{r: divergence_from_sums(s) for r, s in sorted(layer.items())} for layer in per_role],
        "layer_total": [divergence_from_sums(s) for s in per_layer],
        "other": {r: divergence_from_sums(s) for r, s in sorted(other.items())},
    }
