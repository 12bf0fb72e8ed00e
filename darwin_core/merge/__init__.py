"""Merge methods (one module each, registered by name) and the one path that applies a Recipe to two parents.

    from darwin_core.merge import get_method, merge_tensors
    get_method("slerp").kernel(father_t, mother_t, None, TensorParams(ratio=0.3))

`merge_tensors` (apply.py) serves both the in-memory candidate loop and `merge_to_disk` (disk.py).
"""

from darwin_core.merge import dare, linear, slerp, task_arithmetic, ties, transplant  # noqa: F401  (registers)
from darwin_core.merge.registry import MergeMethod, TensorParams, get_method, method_names, register

__all__ = ["MergeMethod", "TensorParams", "get_method", "method_names", "register", "merge_tensors"]


def __getattr__(name: str):
    # apply.py imports recipe/anatomy; keep `import darwin_core.merge` light for kernel-only users.
    if name == "merge_tensors":
        from darwin_core.merge.apply import merge_tensors

        return merge_tensors
    raise AttributeError(name)
