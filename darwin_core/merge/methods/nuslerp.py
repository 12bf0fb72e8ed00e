"""NuSLERP: spherical interpolation of the two parents (or of their task vectors, given a common ancestor).

mergekit 0.1.5's `nuslerp` with its defaults (`nuslerp_flatten: true`, `nuslerp_row_wise: false`), operation for
operation, so float32 results are bit-identical: t = w_mother / (w_father + w_mother) with weights
(1 − ratio, ratio); both tensors (task vectors with an ancestor: child = base + nuslerp(father − base,
mother − base)) are flattened and normalised by their L2 norms (clamped at 1e-7); when 1 − cos² ≤ 1e-16
(colinear) the result is linear interpolation, otherwise sin((1 − t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1 on the
unnormalised tensors. Unlike Darwin's `slerp` there is no near-parallel threshold (0.9995) and ratio 0 or 1 is
the formula's value, not a copy (copies come from the recipe's transplant thresholds and frozen layers).
mergekit: `nuslerp`, weight (1 − ratio, ratio) on both parents, base_model only with a common ancestor.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype

COLINEAR_EPS = 1e-8
NORM_EPS = 1e-7


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=NORM_EPS)


def nuslerp_flat(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """mergekit's `nuslerp(t, v0, v1, flatten=True)`: the whole tensor is one vector."""
    out_shape = v0.shape
    v0 = v0.reshape(-1)
    v1 = v1.reshape(-1)
    cos_theta = torch.sum(_normalize(v0) * _normalize(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= COLINEAR_EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    return result.reshape(out_shape)


def interpolation_t(ratio: float) -> float:
    """mergekit's t from the two weights (1 − ratio, ratio): w_mother / Σw, 0.5 when Σw ≈ 0."""
    weights = [1.0 - ratio, ratio]
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def nuslerp(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """NuSLERP of the parents (base None) or base + NuSLERP of their task vectors."""
    dtype = work_dtype(father)
    t = interpolation_t(params.ratio)
    father_w, mother_w = father.to(dtype), mother.to(dtype)
    if base is None:
        return nuslerp_flat(t, father_w, mother_w)
    base_w = base.to(dtype)
    return base_w + nuslerp_flat(t, father_w - base_w, mother_w - base_w)


def _mergekit_params(params: TensorParams):
    return {}, {"father": {"weight": 1.0 - params.ratio}, "mother": {"weight": params.ratio}}


METHOD = register(
    MergeMethod(
        name=Method.NUSLERP,
        kernel=nuslerp,
        summary="spherical interpolation of the parents (or their task vectors) at t = ratio, no threshold",
        delta=True,  # accepts a common ancestor: then it interpolates the task vectors
        whole_tensor_step="NuSLERP's angle",
        mergekit_name="nuslerp",
        mergekit_params=_mergekit_params,
        mergekit_ancestor_base=True,
    )
)
