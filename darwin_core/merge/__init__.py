"""Merging: the method registry and kernels (`merge.methods`), writing a child to disk (`merge.disk`) and the
equivalent mergekit config (`merge.mergekit_export`).

    from darwin_core.merge import get_method, merge_tensors
"""

from darwin_core.merge.methods import MergeMethod, TensorParams, get_method, merge_tensors, method_names, register

__all__ = ["MergeMethod", "TensorParams", "get_method", "method_names", "register", "merge_tensors"]
