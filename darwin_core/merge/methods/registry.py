"""The registry of merge methods: the recipe names a method, the registry finds its kernel.

A method is a small object (`MergeMethod`) declared in its own module next to its kernel, as in mergekit's
`merge_methods/`. Adding a method touches its file, one import line in `darwin_core/merge/methods/__init__.py`
and one member of `Method`.

Every kernel has the same shape, so `apply.py` needs no per-method branches:

    kernel(father, mother, base, params) -> Tensor

- `father`, `mother`: the two parents' tensors (same shape, same device, any float dtype).
- `base`: the common ancestor's tensor for delta methods, or None, meaning "the father is the base".
- `params`: a `TensorParams` (ratio, densities, options) resolved for this one tensor by the recipe.
- returns a float32 tensor (float64 if the inputs are float64) on the inputs' device; the caller casts it to the
  child's dtype. Kernels never modify their inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from typing import Any

import torch

from darwin_core.errors import DarwinError

_FATHER = "father"
_MOTHER = "mother"


class PlanSource(IntEnum):
    """A tensor plan's source as a number, for plans held in arrays (`recipe.columns`): merged, or one parent's
    tensor taken as it is (`TensorPlan.source` None / "father" / "mother")."""

    MERGED = 0
    FATHER = 1
    MOTHER = 2


@dataclass(frozen=True)
class TensorParams:
    """Everything a kernel needs to know about one tensor, resolved from the recipe.

    `ratio` is the share of the mother (0 = father, 1 = mother). `density_father` / `density_mother` are the
    shares of each parent's task vector (its delta from the base) that sparsifying methods keep. `normalize`,
    `rescale` and `scale` are mergekit's `normalize`, `rescale` and `lambda`; None means "the method's default"
    (the same default as mergekit's). `mask_seeds` seed the DARE/DELLA masks of the father's and the mother's
    deltas. `gamma` (breadcrumbs: share of the largest entries dropped as outliers), `epsilon` (DELLA: spread of
    the keep probabilities around the density) and `select_topk` (SCE: share of entries kept by variance) are
    mergekit's options of the same names, with mergekit's defaults. `weight_signs` multiply the father's and the
    mother's task-vector weights: −1 makes that parent's task vector enter negatively (task negation).
    """

    ratio: float
    density_father: float = 1.0
    density_mother: float = 1.0
    normalize: bool | None = None
    rescale: bool | None = None
    scale: float = 1.0
    mask_seeds: tuple[int, int] = (0, 1)
    gamma: float = 0.01
    epsilon: float = 0.15
    select_topk: float = 1.0
    weight_signs: tuple[float, float] = (1.0, 1.0)


Kernel = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", TensorParams], torch.Tensor]


class Method(StrEnum):
    """The names of the registered methods, for code that picks one (a genome space's default, a recipe's).

    Each member is the `name` of one MergeMethod registered by its module; `tests/test_merge_kernels.py` checks
    that the two lists agree. A member compares equal to its plain string, so `Method.TIES == "ties"`.
    """

    LINEAR = "linear"
    SLERP = "slerp"
    TASK_ARITHMETIC = "task_arithmetic"
    TIES = "ties"
    DARE_TIES = "dare_ties"
    DARE_LINEAR = "dare_linear"
    TRANSPLANT = "transplant"
    BREADCRUMBS = "breadcrumbs"
    BREADCRUMBS_TIES = "breadcrumbs_ties"
    DELLA = "della"
    DELLA_LINEAR = "della_linear"
    MODEL_STOCK = "model_stock"
    NUSLERP = "nuslerp"
    SCE = "sce"


DEFAULT_METHOD = Method.LINEAR  # the method of a recipe that names none


@dataclass(frozen=True)
class MergeMethod:
    """A named merge method: its kernel, the parameters it reads, and how it maps onto mergekit.

    Everything that code outside the method's module would otherwise decide by comparing names is declared here:

    `parameters`: the `TensorParams` fields the kernel reads (besides the tensors); the others never change its
    result (tested), so recipes and genomes may set them freely.
    `delta`: the method works on task vectors (parent − base) and accepts a common ancestor as base.
    `default_normalize` / `default_rescale`: what `normalize` / `rescale` = None mean for this method (mergekit's
    defaults); None where the method has no such option.
    `genome_normalize`: the `normalize` a genome space writes into its recipes (None = the method's default).
    `blends_with_linear`: a recipe's `method_weight` < 1 blends this method's result with linear interpolation;
    False where the blend would change nothing or is not wanted (linear itself, transplant's copies).
    `whole_tensor_step`: the step whose result depends on the whole tensor at once (SLERP's angle, TIES' top-k),
    named for error messages; None for element-wise methods. See `spans_whole_tensor`.
    `mergekit_name`: the name of the same method in mergekit, or None when mergekit has no equivalent (a
    transplant is exported as mergekit's `linear` with weights 1/0).
    `mergekit_params`: maps one tensor's `TensorParams` to mergekit's parameters for that tensor, as
    `(shared, {"father": {...}, "mother": {...}})`; shared goes to the top-level `parameters`, the per-model
    dicts to each model's `parameters`.
    `mergekit_base`: mergekit's config names a `base_model` (the father or the common ancestor), whose own
    entry in `models` then takes no parameters.
    `mergekit_ancestor_base`: mergekit's config names a `base_model` only when the recipe has a common ancestor;
    with base = father both parents are ordinary inputs (NuSLERP).
    `mergekit_copies`: mergekit can express a copied tensor (frozen layer, transplant, tower) with this
    method's own parameters (weight 0/1, t = 0/1); False for methods without weights (SCE, Model Stock).
    `needs_ancestor`: the method cannot work with base = father (Model Stock needs two task vectors).
    `random_masks`: the method drops task-vector entries at random (DARE, DELLA); mergekit draws its masks from
    torch's global RNG, so with densities < 1 an export gives a different child where the masks differ.
    """

    name: str
    kernel: Kernel
    summary: str
    parameters: tuple[str, ...] = ("ratio",)
    delta: bool = False
    default_normalize: bool | None = None
    default_rescale: bool | None = None
    genome_normalize: bool | None = None
    blends_with_linear: bool = True
    whole_tensor_step: str | None = None
    mergekit_name: str | None = None
    mergekit_params: Callable[[TensorParams], tuple[dict[str, Any], dict[str, dict[str, Any]]]] | None = None
    mergekit_base: bool = False
    mergekit_ancestor_base: bool = False
    mergekit_copies: bool = True
    needs_ancestor: bool = False
    random_masks: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", str(self.name))  # a Method member becomes its plain string (YAML-safe)
        if self.mergekit_name is not None:
            object.__setattr__(self, "mergekit_name", str(self.mergekit_name))
        unknown = set(self.parameters) - {f.name for f in fields(TensorParams)}
        if unknown:
            raise ValueError(f"merge method {self.name!r} declares unknown parameters: {sorted(unknown)}")

    @property
    def uses_density(self) -> bool:
        """The densities change the result (TIES/DARE); other methods ignore them."""
        return "density_mother" in self.parameters

    def spans_whole_tensor(self, params: TensorParams, *, base_is_father: bool) -> bool:
        """Whether this tensor's result depends on the whole tensor at once (so it differs when mergekit fuses
        tensors, as it does a layer's experts): for methods with densities, when a density that applies is
        below 1 (the father's does not with base = father: he has no task vector); for the others, when the
        ratio is strictly between 0 and 1 (at 0 or 1 the result is one parent's tensor); always for methods
        that weigh the task vectors by the tensors themselves."""
        if self.whole_tensor_step is None:
            return False
        if "ratio" not in self.parameters:  # weights from the tensors themselves (SCE, Model Stock)
            return True
        if self.uses_density:
            return min(params.density_mother, 1.0 if base_is_father else params.density_father) < 1.0
        return 0.0 < params.ratio < 1.0

    @property
    def negatable(self) -> bool:
        """A recipe's `negate` (a task vector entering with a negative weight) changes the result."""
        return "weight_signs" in self.parameters


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
