"""Linear interpolation: child = (1 − ratio)·father + ratio·mother.

Same arithmetic as mergekit's `linear` (weights [1 − ratio, ratio] in float32, multiply-add, divide by the weight
sum), so results agree bit for bit with mergekit on float32 inputs. Ratio 0 returns the father's values and
ratio 1 the mother's, exactly.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype


def linear(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """(1 − r)·father + r·mother in float32; `base` is not used (linear needs no ancestor)."""
    dtype = work_dtype(father)
    if params.ratio == 0.0:
        return father.to(dtype)
    if params.ratio == 1.0:
        return mother.to(dtype)
    weights = torch.tensor([1.0 - params.ratio, params.ratio], dtype=dtype, device=father.device)
    result = torch.zeros(father.shape, dtype=dtype, device=father.device)
    result.addcmul_(father, weights[0])
    result.addcmul_(mother, weights[1])
    return result.div_(weights.sum())


def _mergekit_params(params: TensorParams):
    return {}, {"father": {"weight": 1.0 - params.ratio}, "mother": {"weight": params.ratio}}


METHOD = register(
    MergeMethod(
        name=Method.LINEAR,
        kernel=linear,
        summary="weighted average (1 − ratio)·father + ratio·mother",
        blends_with_linear=False,  # blending linear with itself changes nothing
        mergekit_name="linear",
        mergekit_params=_mergekit_params,
    )
)
