"""DELLA (Deep et al. 2024): drop task-vector entries at random with a probability that falls with their
magnitude (MAGPRUNE), rescale, then sign-elect as TIES (`della`) or add (`della_linear`).

mergekit 0.1.5's `della_magprune`, operation for operation, except where the random numbers come from: per row
of the task vector (a 1-D tensor is one row), entries are ranked by ascending magnitude, the ranks normalised to
[0, 1], and entry i is kept with probability p_i = (density − ε) + rank_i·2·ε; kept entries are rescaled to
restore the L1 norm (`rescale`, default on as in mergekit). mergekit draws the keep/drop decisions with
`torch.bernoulli` from torch's global RNG; Darwin keeps entry i when its counter hash u_i (24 bits, the same
hash as DARE's masks, seeded per recipe, tensor and parent) is below p_i·2^24, so the mask is reproducible and
equal on every device. With densities < 1 the two children therefore differ where the masks differ; given the
same mask the probabilities and the rescaling are mergekit's own (tested), and at density 1 the methods agree bit
for bit.

ε (mergekit's `epsilon`, default 0.15): mergekit refuses a tensor whose density ± ε leaves (0, 1). Darwin caps ε
per tensor at half the distance from the density to 0 or 1 (`effective_epsilon`), so every density a genome
proposes works, and the export writes the capped ε per tensor, so mergekit computes the same probabilities.
mergekit: `della` / `della_linear`, weight (1 − ratio, ratio), density, epsilon per model; normalize true for
`della` (false for `della_linear`), rescale true.
"""

from __future__ import annotations

import torch

from darwin_core.merge.methods.delta import hash24, register_task_vector_method, rescale_l1
from darwin_core.merge.methods.registry import Method, TensorParams

_MASK_SCALE = float(1 << 24)


def effective_epsilon(epsilon: float, density: float) -> float:
    """ε capped so that density ± ε stays inside (0, 1), as mergekit requires (densities of 1 or 0 need none)."""
    if density >= 1 or density <= 0:
        return epsilon
    return min(epsilon, density / 2, (1.0 - density) / 2)


def della_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """The keep probability of each entry, in the 2-D view mergekit uses (1-D tensors become one row)."""
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    magnitudes = rows.abs()
    sorted_indices = torch.argsort(magnitudes, dim=1, descending=False, stable=True)
    ranks = sorted_indices.argsort(dim=1).to(torch.float32) + 1
    min_ranks = ranks.min(dim=1, keepdim=True).values
    max_ranks = ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - min_ranks) / (max_ranks - min_ranks)).clamp(0, 1)
    return (density - epsilon) + rank_norm * 2 * epsilon


def della_keep_mask(probabilities: torch.Tensor, seed: int) -> torch.Tensor:
    """Keep entry i when its 24-bit counter hash is below p_i·2^24 (float32 0/1 mask, probabilities' shape)."""
    uniform = hash24(probabilities.numel(), seed, probabilities.device).reshape(probabilities.shape)
    return (uniform.to(torch.float32) < probabilities * _MASK_SCALE).to(torch.float32)


def magprune(delta: torch.Tensor, density: float, epsilon: float, rescale: bool, seed: int,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """DELLA's MAGPRUNE of one task vector; `mask` (in the 2-D view) replaces the hashed draw (for tests)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    epsilon = effective_epsilon(epsilon, density)
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    if mask is None:
        mask = della_keep_mask(della_probabilities(delta, density, epsilon), seed)
    masked = rows * mask.to(rows.dtype)
    result = rescale_l1(rows, masked) if rescale else masked
    return result.reshape(delta.shape)


def _sparsify(delta: torch.Tensor, density: float, rescale: bool, params: TensorParams, seed: int) -> torch.Tensor:
    return magprune(delta, density, params.epsilon, rescale, seed)


def _model_options(params: TensorParams, density: float) -> dict[str, float]:
    return {"epsilon": effective_epsilon(params.epsilon, density)}


DELLA = register_task_vector_method(
    Method.DELLA, "task vectors dropped by magnitude-ranked chance, rescaled, sign-elected",
    sparsification="della_magprune", sparsifier=_sparsify, options=("epsilon",), model_options=_model_options,
    random_masks=True, consensus=True, normalize=True, rescale=True, whole_tensor_step="DELLA's rescaling",
    genome_normalize=False,  # as TIES: with base = father and normalize on, the ratio would stop mattering
)
DELLA_LINEAR = register_task_vector_method(
    Method.DELLA_LINEAR, "task vectors dropped by magnitude-ranked chance, rescaled, summed",
    sparsification="della_magprune", sparsifier=_sparsify, options=("epsilon",), model_options=_model_options,
    random_masks=True, consensus=False, normalize=False, rescale=True, whole_tensor_step="DELLA's rescaling",
)
