"""DARE (Yu et al. 2023): drop each task-vector entry with probability 1 − density and rescale the rest
(L1-norm matching, as mergekit), then either sign-elect as TIES (`dare_ties`) or add (`dare_linear`).

Masks are reproducible per tensor (see `darwin_core.merge.methods.delta`). mergekit: `dare_ties` / `dare_linear`,
weight (1 − ratio, ratio), density (density_father, density_mother), normalize false, rescale true.
"""

from __future__ import annotations

from darwin_core.merge.methods.delta import register_task_vector_method
from darwin_core.merge.methods.registry import Method

DARE_TIES = register_task_vector_method(
    Method.DARE_TIES, "randomly dropped, rescaled task vectors with sign election",
    sparsification="random", consensus=True, normalize=False, rescale=True, whole_tensor_step="DARE's rescaling",
)
DARE_LINEAR = register_task_vector_method(
    Method.DARE_LINEAR, "randomly dropped, rescaled task vectors, summed",
    sparsification="random", consensus=False, normalize=False, rescale=True, whole_tensor_step="DARE's rescaling",
)
