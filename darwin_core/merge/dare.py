"""DARE (Yu et al. 2023): drop each task-vector entry with probability 1 − density and rescale the rest
(L1-norm matching, as mergekit), then either sign-elect as TIES (`dare_ties`) or add (`dare_linear`).

Masks are reproducible per tensor (see `darwin_core.merge.delta`). mergekit: `dare_ties` / `dare_linear`,
weight (1 − ratio, ratio), density (density_father, density_mother), normalize false, rescale true.
"""

from __future__ import annotations

import torch

from darwin_core.merge.delta import task_vector_merge
from darwin_core.merge.registry import MergeMethod, TensorParams, register
from darwin_core.merge.task_arithmetic import mergekit_delta_params

DEFAULTS = {"normalize": False, "rescale": True}


def dare_ties(
    father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams
) -> torch.Tensor:
    """Random drop + rescale + sign election, mergekit's `dare_ties`."""
    return task_vector_merge(
        father, mother, base, params,
        sparsification="random", consensus=True,
        default_normalize=DEFAULTS["normalize"], default_rescale=DEFAULTS["rescale"],
    )


def dare_linear(
    father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams
) -> torch.Tensor:
    """Random drop + rescale + weighted sum, mergekit's `dare_linear`."""
    return task_vector_merge(
        father, mother, base, params,
        sparsification="random", consensus=False,
        default_normalize=DEFAULTS["normalize"], default_rescale=DEFAULTS["rescale"],
    )


DARE_TIES = register(
    MergeMethod(
        name="dare_ties",
        kernel=dare_ties,
        summary="randomly dropped, rescaled task vectors with sign election",
        delta=True,
        uses_density=True,
        mergekit_name="dare_ties",
        mergekit_params=lambda p: mergekit_delta_params(p, DEFAULTS, with_density=True),
        defaults=DEFAULTS,
    )
)
DARE_LINEAR = register(
    MergeMethod(
        name="dare_linear",
        kernel=dare_linear,
        summary="randomly dropped, rescaled task vectors, summed",
        delta=True,
        uses_density=True,
        mergekit_name="dare_linear",
        mergekit_params=lambda p: mergekit_delta_params(p, DEFAULTS, with_density=True),
        defaults=DEFAULTS,
    )
)
