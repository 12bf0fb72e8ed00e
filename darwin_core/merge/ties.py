"""TIES (Yadav et al. 2023): magnitude-prune each task vector to its density, elect a sign per entry from the
weighted sum, keep only agreeing entries, and (normalize, default on as in mergekit) divide by the summed weight
of the agreeing parents.

Two-parent caveat: with base = father only the mother has a task vector, and with normalize on the division
cancels the weight, so any ratio > 0 gives father + pruned(mother − father): the ratio stops mattering. Genome
spaces therefore set normalize: false for TIES (the ratio then scales the mother's pruned task vector).
mergekit: `ties`, weight (1 − ratio, ratio), density (density_father, density_mother).
"""

from __future__ import annotations

import torch

from darwin_core.merge.delta import task_vector_merge
from darwin_core.merge.registry import MergeMethod, TensorParams, register
from darwin_core.merge.task_arithmetic import mergekit_delta_params

DEFAULTS = {"normalize": True, "rescale": False}


def ties(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """Magnitude pruning + sign election (sum), mergekit's `ties`."""
    return task_vector_merge(
        father, mother, base, params,
        sparsification="magnitude", consensus=True,
        default_normalize=DEFAULTS["normalize"], default_rescale=DEFAULTS["rescale"],
    )


METHOD = register(
    MergeMethod(
        name="ties",
        kernel=ties,
        summary="magnitude-pruned task vectors with sign election",
        delta=True,
        uses_density=True,
        mergekit_name="ties",
        mergekit_params=lambda p: mergekit_delta_params(p, DEFAULTS, with_density=True),
        defaults=DEFAULTS,
    )
)
