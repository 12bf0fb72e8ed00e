"""SCE (Wan et al. 2024, FuseChat): Select the task-vector entries that vary most between the parents,
Calculate each task vector's weight from its mean square, Erase entries against the elected sign.

mergekit 0.1.5's `sce` (`select_topk`, default 1 = keep all), operation for operation, so float32 results are
bit-identical: task vectors τ_i = parent_i − base are stacked; with select_topk < 1 only the
int(select_topk·nonzero) entries of largest variance across the parents are kept (torch.topk, as mergekit);
the signs are elected from Σ τ_i; weight_i = mean(τ_i²) / Σ_j mean(τ_j²); child = base + Σ w_i·τ_i·agree_i /
max(Σ w_i·agree_i, 1e-6). The ratio plays no part (the method weighs the parents itself). Darwin requires a
common ancestor: with base = father there is one task vector, whose weight is 1, so the child would be the
mother (select_topk 1) or the father (select_topk < 1, a single vector has no variance).
mergekit: `sce`, base_model = the ancestor, select_topk shared; copied tensors (frozen layers, transplants)
cannot be expressed in mergekit's config, so such recipes are not exported.
"""

from __future__ import annotations

import torch

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype


def sce_weights(task_vectors: torch.Tensor) -> torch.Tensor:
    """Each task vector's mean square over their sum (equal weights when all are ~0)."""
    weights = task_vectors.square().reshape(task_vectors.shape[0], -1).mean(dim=1)
    weight_sum = torch.sum(weights).item()
    if abs(weight_sum) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / weight_sum


def sce_select_mask(task_vectors: torch.Tensor, density: float, dtype: torch.dtype) -> torch.Tensor:
    """1 for the int(density·nonzero) entries of largest variance across the task vectors, else 0."""
    if density <= 0:
        return torch.zeros_like(task_vectors[0], dtype=dtype)
    if density >= 1:
        return torch.ones_like(task_vectors[0], dtype=dtype)
    var = torch.var(task_vectors, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    if k == 0:
        return torch.zeros_like(var, dtype=dtype)
    _, indices = torch.topk(var.abs().view(-1), k=k, largest=True)
    mask = torch.zeros_like(var, dtype=dtype)
    mask.view(-1)[indices] = 1
    return mask


def sce(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """Select, calculate, erase; `base` (the common ancestor) is required."""
    if base is None:
        raise DarwinError("SCE needs a common ancestor as base; with base = father it has a single task vector.")
    dtype = work_dtype(father)
    base_w = base.to(dtype)
    task_vectors = torch.stack([father.to(dtype) - base_w, mother.to(dtype) - base_w], dim=0)
    if params.select_topk < 1:
        task_vectors = task_vectors * sce_select_mask(task_vectors, params.select_topk, dtype).unsqueeze(0)
    sign = task_vectors.sign().to(dtype)
    majority_sign = (task_vectors.sum(dim=0) >= 0).to(dtype) * 2 - 1
    erase_mask = sign == majority_sign
    weights = sce_weights(task_vectors)
    while weights.dim() < task_vectors.dim():
        weights = weights.unsqueeze(-1)
    erased_weights = weights * erase_mask
    merged = (task_vectors * erased_weights).sum(dim=0)
    return base_w + merged / torch.sum(erased_weights, dim=0).clamp(min=1e-6)


METHOD = register(
    MergeMethod(
        name=Method.SCE,
        kernel=sce,
        summary="task vectors selected by variance, weighted by mean square, sign-elected (no ratio)",
        parameters=("select_topk",),
        delta=True,
        needs_ancestor=True,
        whole_tensor_step="SCE's weights",
        mergekit_name="sce",
        mergekit_params=lambda params: ({"select_topk": params.select_topk}, {"father": {}, "mother": {}}),
        mergekit_base=True,
        mergekit_copies=False,
    )
)
