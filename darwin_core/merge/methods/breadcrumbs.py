"""Model Breadcrumbs (Davari & Belilovsky 2023): drop each task vector's smallest entries *and* its largest
outliers, keep the band in between, then add (`breadcrumbs`) or sign-elect as TIES (`breadcrumbs_ties`).

mergekit 0.1.5's `magnitude_outliers`, operation for operation: with n entries, keep the entries ranked
n_bot .. n_bot + int(density·n) − 1 by ascending magnitude, where n_bot = max(0, n − int(density·n) −
int(gamma·n)); so the int(gamma·n) largest are dropped (fewer when the density leaves no room) and the rest of
the drop comes from the smallest. Density 1 keeps the task vector whole, whatever gamma. Optional L1 rescaling
(`rescale`, default off as in mergekit). Magnitudes are sorted stably (earliest first among equal ones), so the
mask is the same on every device; mergekit's unstable sort may break exact ties differently.
mergekit: `breadcrumbs` / `breadcrumbs_ties`, weight (1 − ratio, ratio), density (density_father,
density_mother), gamma per model, normalize false, rescale false.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.delta import register_task_vector_method, rescale_l1
from darwin_core.merge.methods.registry import Method, TensorParams


def magnitude_outliers(delta: torch.Tensor, density: float, rescale: bool, gamma: float) -> torch.Tensor:
    """Keep the band of int(density·n) entries just below the int(gamma·n) largest magnitudes."""
    if density >= 1:
        return delta
    count = delta.numel()
    kept = int(density * count)
    outliers = int(gamma * count)
    smallest_dropped = max(0, count - kept - outliers)
    magnitudes = delta.abs().reshape(-1).float()
    order = torch.sort(magnitudes, descending=False, stable=True).indices
    mask = torch.zeros(count, dtype=delta.dtype, device=delta.device)
    mask[order[smallest_dropped: smallest_dropped + kept]] = 1
    masked = delta * mask.reshape_as(delta)
    return rescale_l1(delta, masked) if rescale else masked


def _sparsify(delta: torch.Tensor, density: float, rescale: bool, params: TensorParams, seed: int) -> torch.Tensor:
    return magnitude_outliers(delta, density, rescale, params.gamma)


BREADCRUMBS = register_task_vector_method(
    Method.BREADCRUMBS, "task vectors without their smallest entries and largest outliers, summed",
    sparsification="magnitude_outliers", sparsifier=_sparsify, options=("gamma",), consensus=False,
    normalize=False, rescale=False, whole_tensor_step="breadcrumbs' magnitude ranking",
)
BREADCRUMBS_TIES = register_task_vector_method(
    Method.BREADCRUMBS_TIES, "task vectors without their smallest entries and largest outliers, sign-elected",
    sparsification="magnitude_outliers", sparsifier=_sparsify, options=("gamma",), consensus=True,
    normalize=False, rescale=False, whole_tensor_step="breadcrumbs' magnitude ranking",
)
