"""Transplant: the whole tensor from one parent, no interpolation.

The mother's tensor when ratio > 0.5, the father's otherwise (at exactly 0.5 the father, the skeleton, keeps it).
This is the method form of the recipe's transplant thresholds (which apply on top of any method: ratio below
the low threshold → father as is, above the high one → mother as is). In mergekit it is a linear merge with
weights (1, 0) or (0, 1), which gives the same values.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype


def takes_mother(ratio: float) -> bool:
    """The transplant rule: strictly more than half → mother."""
    return ratio > 0.5


def transplant(
    father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams
) -> torch.Tensor:
    """The chosen parent's tensor in the work dtype (a no-op view when it is already float32)."""
    chosen = mother if takes_mother(params.ratio) else father
    return chosen.to(work_dtype(chosen))


def _mergekit_params(params: TensorParams):
    share = 1.0 if takes_mother(params.ratio) else 0.0
    return {}, {"father": {"weight": 1.0 - share}, "mother": {"weight": share}}


METHOD = register(
    MergeMethod(
        name=Method.TRANSPLANT,
        kernel=transplant,
        summary="whole tensor from the mother when ratio > 0.5, else from the father",
        blends_with_linear=False,  # a transplanted tensor is a parent's copy, never blended
        mergekit_name="linear",  # with weights (1, 0) or (0, 1): the same values
        mergekit_params=_mergekit_params,
    )
)
