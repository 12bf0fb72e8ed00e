"""The registry of merge methods: the recipe names a method, the registry finds its kernel.

A method is a small object (`MergeMethod`) declared in its own module next to its kernel, as in mergekit's
`merge_methods/`. Adding a method touches one file plus one import line in `darwin_core/merge/__init__.py`.

Every kernel has the same shape, so `apply.py` needs no per-method branches:

    kernel(father, mother, base, params) -> Tensor

- `father`, `mother`: the two parents' tensors (same shape, same device, any float dtype).
- `base`: the common ancestor's tensor for delta methods, or None, meaning "the father is the base".
- `params`: a `TensorParams` (ratio, densities, options) resolved for this one tensor by the recipe.
- returns a float32 tensor (float64 if the inputs are float64) on the inputs' device; the caller casts it to the
  child's dtype. Kernels never modify their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from darwin_core.errors import DarwinError

_FATHER = "father"
_MOTHER = "mother"


@dataclass(frozen=True)
class TensorParams:
    """Everything a kernel needs to know about one tensor, resolved from the recipe.

    `ratio` is the share of the mother (0 = father, 1 = mother). `density_father` / `density_mother` are the
    shares of each parent's task vector (its delta from the base) that sparsifying methods keep. `normalize`,
    `rescale` and `scale` are mergekit's `normalize`, `rescale` and `lambda`; None means "the method's default"
    (the same default as mergekit's). `mask_seeds` seed the DARE masks of the father's and the mother's deltas.
    """

    ratio: float
    density_father: float = 1.0
    density_mother: float = 1.0
    normalize: bool | None = None
    rescale: bool | None = None
    scale: float = 1.0
    mask_seeds: tuple[int, int] = (0, 1)


Kernel = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", TensorParams], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A named merge method: its kernel and how its parameters map onto mergekit's.

    `delta`: the method works on task vectors (parent − base) and accepts a common ancestor as base.
    `uses_density`: the densities change the result (TIES/DARE); other methods ignore them.
    `mergekit_name`: the name of the same method in mergekit, or None when mergekit has no equivalent.
    `mergekit_params`: maps one tensor's `TensorParams` to mergekit's parameters for that tensor, as
    `(shared, {"father": {...}, "mother": {...}})`; shared goes to the top-level `parameters`, the per-model
    dicts to each model's `parameters`.
    """

    name: str
    kernel: Kernel
    summary: str
    delta: bool = False
    uses_density: bool = False
    mergekit_name: str | None = None
    mergekit_params: Callable[[TensorParams], tuple[dict[str, Any], dict[str, dict[str, Any]]]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


_METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    """Make a method available by name; a second method with the same name is a programming error."""
    if method.name in _METHODS:
        raise ValueError(f"merge method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    """The method called `name`, or a DarwinError listing the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise DarwinError(f"Unknown merge method {name!r}; known methods are: {known}.") from None


def method_names() -> tuple[str, ...]:
    """Names of all registered methods, sorted."""
    return tuple(sorted(_METHODS))


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The accumulation dtype: float32, or float64 when the inputs already are (as mergekit)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32
