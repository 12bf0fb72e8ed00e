"""Merge methods: one module each, registered by name, and the one kernel path (`merge_tensors`).

    from darwin_core.merge.methods import get_method, merge_tensors
    get_method("slerp").kernel(father_t, mother_t, None, TensorParams(ratio=0.3))

This sub-package sits below the recipe in the layer order (a recipe names a method and resolves its
parameters); the rest of `darwin_core.merge` (writing a child to disk, mergekit export) sits above it.
"""

from darwin_core.merge.methods import (
    breadcrumbs, dare, della, linear, model_stock, nuslerp, sce, slerp, task_arithmetic, ties, transplant,
)
from darwin_core.merge.methods.apply import merge_tensors
from darwin_core.merge.methods.registry import (
    DEFAULT_METHOD, Method, MergeMethod, TensorParams, get_method, method_names, register,
)

# importing a method's module registers it
METHOD_MODULES = (breadcrumbs, dare, della, linear, model_stock, nuslerp, sce, slerp, task_arithmetic, ties, transplant)

__all__ = ["DEFAULT_METHOD", "Method", "MergeMethod", "TensorParams", "get_method", "method_names", "register",
           "merge_tensors"]
