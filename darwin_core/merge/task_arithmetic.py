"""Task arithmetic: child = base + (1 − ratio)·(father − base) + ratio·(mother − base), times `scale`.

With base = father it is father + ratio·(mother − father), linear interpolation up to float rounding; it differs
from linear only with a common ancestor and `scale` ≠ 1 (mergekit's `lambda`), or with `normalize`.
mergekit: `task_arithmetic`, weight father 1 − ratio / mother ratio, normalize false, lambda = scale.
"""

from __future__ import annotations

import torch

from darwin_core.merge.delta import task_vector_merge
from darwin_core.merge.registry import MergeMethod, TensorParams, register

DEFAULTS = {"normalize": False, "rescale": False}


def task_arithmetic(
    father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams
) -> torch.Tensor:
    """Weighted sum of task vectors, no sparsification, no sign election."""
    return task_vector_merge(
        father, mother, base, params,
        sparsification=None, consensus=False,
        default_normalize=DEFAULTS["normalize"], default_rescale=DEFAULTS["rescale"],
    )


def mergekit_delta_params(params: TensorParams, defaults: dict, *, with_density: bool):
    """The mergekit parameters of one tensor for any task-vector method (shared by TA, TIES, DARE)."""
    shared = {
        "normalize": defaults["normalize"] if params.normalize is None else params.normalize,
        "rescale": defaults["rescale"] if params.rescale is None else params.rescale,
        "lambda": params.scale,
    }
    father = {"weight": 1.0 - params.ratio}
    mother = {"weight": params.ratio}
    if with_density:
        father["density"] = params.density_father
        mother["density"] = params.density_mother
    return shared, {"father": father, "mother": mother}


METHOD = register(
    MergeMethod(
        name="task_arithmetic",
        kernel=task_arithmetic,
        summary="base + weighted task vectors (weights 1 − ratio, ratio)",
        delta=True,
        mergekit_name="task_arithmetic",
        mergekit_params=lambda p: mergekit_delta_params(p, DEFAULTS, with_density=False),
        defaults=DEFAULTS,
    )
)
