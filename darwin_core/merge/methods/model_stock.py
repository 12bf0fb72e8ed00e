"""Model Stock (Jang et al. 2024): average the two fine-tuned parents and pull the average towards their
common ancestor by a factor that depends only on the angle between their task vectors.

mergekit 0.1.5's `model_stock` (defaults: `filter_wise: false`), operation for operation, so float32 results
are bit-identical: with the tensors flattened, offsets o_i = w_i − w_0 (w_0 the ancestor), cos θ = o_f·o_m /
max(|o_f||o_m|, 1e-6) clamped to [−1, 1], t = 2 cos θ / (1 + cos θ) (0 where 1 + cos θ ≈ 0), child =
t·(w_f + w_m)/2 + (1 − t)·w_0. The ratio plays no part (the method weighs the parents itself), and the method
needs a common ancestor: with base = father there is one task vector and no angle (mergekit refuses it too).
mergekit: `model_stock`, base_model = the ancestor, no per-model parameters; a copied tensor (frozen layer,
transplant) cannot be expressed in mergekit's config, so such recipes are not exported.
"""

from __future__ import annotations

import torch

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.registry import Method, MergeMethod, TensorParams, register, work_dtype


def model_stock(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
    """The Model Stock interpolation of the parents' average towards the ancestor `base` (required)."""
    if base is None:
        raise DarwinError("Model Stock needs a common ancestor as base; with base = father there is no angle to use.")
    dtype = work_dtype(father)
    w_0 = base.to(dtype)
    out_shape = w_0.shape
    w_0 = w_0.reshape(-1)
    ws = [father.to(dtype).reshape(-1), mother.to(dtype).reshape(-1)]
    offset_a, offset_b = (weight - w_0 for weight in ws)
    norm_product = torch.norm(offset_a, dim=-1) * torch.norm(offset_b, dim=-1)
    cos_thetas = [((offset_a * offset_b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1)]
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe_denominator = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe_denominator)
    average = sum(ws) / count
    return (t * average + (1 - t) * w_0).reshape(out_shape)


METHOD = register(
    MergeMethod(
        name=Method.MODEL_STOCK,
        kernel=model_stock,
        summary="the parents' average pulled towards the ancestor by their task vectors' angle (no ratio)",
        parameters=(),
        delta=True,
        needs_ancestor=True,
        whole_tensor_step="Model Stock's angle",
        mergekit_name="model_stock",
        mergekit_params=lambda params: ({}, {"father": {}, "mother": {}}),
        mergekit_base=True,
        mergekit_copies=False,
    )
)
