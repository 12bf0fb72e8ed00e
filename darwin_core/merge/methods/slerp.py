"""Spherical linear interpolation from the father (t = 0) to the mother (t = 1), one whole tensor at a time.

Semantics of mergekit 0.1.5's `slerp` (father = base_model, t = ratio): the tensor is flattened; the angle comes
from the cosine of the two flattened tensors normalised by their L2 norms (a norm ≤ 1e-8 counts as 1); when
|cos| > 0.9995 (near-parallel or antipodal) the coefficients fall back to linear interpolation (1 − t, t);
otherwise child = sin((1 − t)θ)/sin θ · father + sin(tθ)/sin θ · mother, applied to the *unnormalised* tensors.
All in float32 (float64 if the inputs are). mergekit accumulates norms and the dot product chunk by chunk; we do
it in one reduction, so results agree to float32 rounding (≈1e-7 relative), not bit for bit.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


def slerp(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """SLERP with mergekit's near-parallel fallback; `base` is not used."""
    dtype = work_dtype(father)
    t = params.ratio
    x = father.to(dtype).reshape(-1)
    y = mother.to(dtype).reshape(-1)
    if t == 0.0:
        return x.reshape(father.shape)
    if t == 1.0:
        return y.reshape(father.shape)
    if x.numel() == 0:
        return ((1 - t) * x + t * y).reshape(father.shape)
    norm_x = torch.linalg.vector_norm(x)
    norm_y = torch.linalg.vector_norm(y)
    norm_x = torch.where(norm_x > NORM_EPS, norm_x, 1)
    norm_y = torch.where(norm_y > NORM_EPS, norm_y, 1)
    dot = (torch.dot(x, y) / (norm_x * norm_y)).clamp(-1, 1)
    t_ = torch.tensor(t, dtype=dtype, device=x.device)
    if bool(dot.abs() > DOT_THRESHOLD):
        coef_x, coef_y = 1 - t_, t_
    else:
        theta = torch.acos(dot)
        sin_theta = torch.sin(theta)
        coef_x = torch.sin((1 - t_) * theta) / sin_theta
        coef_y = torch.sin(t_ * theta) / sin_theta
    result = x * coef_x
    result.add_(y * coef_y)
    return result.reshape(father.shape)


def _mergekit_params(params: TensorParams):
    return {"t": params.ratio}, {"father": {}, "mother": {}}


METHOD = register(
    MergeMethod(
        name=Method.SLERP,
        kernel=slerp,
        summary="spherical interpolation father→mother at t = ratio (linear when |cos| > 0.9995)",
        whole_tensor_step="SLERP's angle",
        mergekit_name="slerp",
        mergekit_params=_mergekit_params,
        mergekit_base=True,  # mergekit's slerp interpolates from its base_model (the father) at t
    )
)
