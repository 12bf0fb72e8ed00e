"""Task arithmetic: child = base + (1 − ratio)·(father − base) + ratio·(mother − base), times `scale`.

With base = father it is father + ratio·(mother − father), linear interpolation up to float rounding; it differs
from linear only with a common ancestor and `scale` ≠ 1 (mergekit's `lambda`), or with `normalize`.
mergekit: `task_arithmetic`, weight father 1 − ratio / mother ratio, normalize false, lambda = scale.
"""

from __future__ import annotations

from darwin_core.merge.methods.delta import register_task_vector_method
from darwin_core.merge.methods.registry import Method

METHOD = register_task_vector_method(
    Method.TASK_ARITHMETIC, "base + weighted task vectors (weights 1 − ratio, ratio)",
    sparsification=None, consensus=False, normalize=False, rescale=False,
)
