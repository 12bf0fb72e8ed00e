"""TIES (Yadav et al. 2023): magnitude-prune each task vector to its density, elect a sign per entry from the
weighted sum, keep only agreeing entries, and (normalize, default on as in mergekit) divide by the summed weight
of the agreeing parents.

Two-parent caveat: with base = father only the mother has a task vector, and with normalize on the division
cancels the weight, so any ratio > 0 gives father + pruned(mother − father): the ratio stops mattering. Genome
spaces therefore set normalize: false for TIES (the ratio then scales the mother's pruned task vector).
mergekit: `ties`, weight (1 − ratio, ratio), density (density_father, density_mother).
"""

from __future__ import annotations

from darwin_core.merge.methods.delta import register_task_vector_method
from darwin_core.merge.methods.registry import Method

METHOD = register_task_vector_method(
    Method.TIES, "magnitude-pruned task vectors with sign election",
    sparsification="magnitude", consensus=True, normalize=True, rescale=False, whole_tensor_step="TIES' top-k",
    genome_normalize=False,  # the two-parent caveat above: with normalize on, a genome's ratio stops mattering
)
