"""The one merge path: a Recipe and two parents → the child's tensors, one at a time.

`merge_tensors` serves both callers, so the child the evolution scores in memory is bit for bit the child
`merge_to_disk` writes:

- the in-memory candidate loop (`darwin_core.evolution.child`): parents resident on the GPU, each candidate's tensors
  copied into one resident child model;
- `merge_to_disk` (disk.py): TensorReader → merge_tensors → ShardedWriter, one tensor in flight.

Sources are anything with `.get(name, device) -> Tensor` (TensorReader, ResidentTensors, or `StateDictSource`
for a plain dict); optional `.shape(name)` and `in` let us check shapes and presence without loading.
The math runs on `device`; nothing is copied that the dtype cast does not require. A yielded tensor may *be* a
parent's tensor (a transplanted or untouched one): callers copy it into their own storage and never modify it.

A `pairing` (`darwin_core.merge.pairing.Pairing.names`: father name → the mother's tensor name, or None) lets the
mother name her tensors differently (a multimodal wrapper) or have only some of them (cross-architecture FFN
breeding): a father tensor paired with None is his, as a frozen layer's is. Without one, tensors pair by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

import torch

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.linear import linear
from darwin_core.merge.methods.registry import get_method


class TensorSource(Protocol):
    def get(self, name: str, device: Any = None) -> torch.Tensor: ...


class StateDictSource:
    """A dict of tensors (an in-memory state dict) behind the TensorSource interface."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._tensors = dict(tensors)

    @property
    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._tensors[name].dtype

    def get(self, name: str, device: Any = None) -> torch.Tensor:
        tensor = self._tensors[name]
        return tensor if device is None else tensor.to(device)


def _names_of(source: Any) -> list[str]:
    names = getattr(source, "names", None)
    if names is None:
        raise DarwinError("The father's tensor names are unknown; pass names= to merge_tensors.")
    return list(names)


def _fetch(source: Any, name: str, device: torch.device, who: str) -> torch.Tensor:
    try:
        return source.get(name, device)
    except KeyError:
        raise DarwinError(f"The {who} has no tensor {name}; the parents do not have the same architecture.") from None


def _check_shape(name: str, father: torch.Tensor | tuple, other: Any, other_name: str, who: str) -> None:
    shape_of = getattr(other, "shape", None)
    if callable(shape_of):
        try:
            other_shape = tuple(shape_of(other_name))
        except KeyError:
            raise DarwinError(f"The {who} has no tensor {name}; the parents do not have the same architecture.") from None
        if tuple(father) != other_shape:
            raise DarwinError(
                f"Tensor {name} has shape {tuple(father)} in the father but {other_shape} in the {who}; "
                "these parents cannot be merged tensor by tensor."
            )


def paired_plan(recipe: Any, name: str, pairing: Mapping[str, str | None] | None) -> tuple[Any, str | None]:
    """(the recipe's plan for the father's tensor `name`, the mother's tensor it is bred with).

    Without a pairing the mother's tensor has the same name; a father tensor the pairing gives no partner (or
    does not list) is the father's, whatever its ratio says.
    """
    plan = recipe.plan_for(name)
    if pairing is None:
        return plan, name
    partner = pairing.get(name)
    if partner is None and plan.source != "father":
        plan = replace(plan, source="father", params=replace(plan.params, ratio=0.0))
    return plan, partner


def merge_tensors(
    recipe: Any,
    father: Any,
    mother: Any,
    names: Iterable[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    base: Any = None,
    pairing: Mapping[str, str | None] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, child tensor) for every name (default: the father's tensors, in his storage order).

    Per tensor (`recipe.plan_for`): vision/audio towers → the father's tensor untouched; frozen layers and
    ratios below the low transplant threshold → the father's; above the high one → the mother's; otherwise
    the method's kernel in float32 on `device`, blended with linear interpolation when `method_weight` < 1,
    cast to the recipe dtype (or the father's dtype). `base` is the common ancestor's source, required when
    the recipe's base is not "father" and the method works on task vectors; it is read by the father's names.
    `pairing` names the mother's tensor of each father tensor (`paired_plan`); None = the same names.
    """
    device = torch.device(device)
    method = get_method(recipe.method)
    uses_ancestor = method.delta and recipe.base != "father"
    if uses_ancestor and base is None:
        raise DarwinError(
            f"The recipe merges task vectors relative to {recipe.base.label()}, but that base model was not given."
        )
    out_dtype = recipe.torch_dtype
    blend = recipe.method_weight < 1.0 and method.blends_with_linear
    for name in _names_of(father) if names is None else names:
        plan, mother_name = paired_plan(recipe, name, pairing)
        shape_of = getattr(father, "shape", None)
        if callable(shape_of) and plan.source != "father":
            expected = tuple(shape_of(name))
            _check_shape(name, expected, mother, mother_name, "mother")
            if uses_ancestor and plan.source is None:
                _check_shape(name, expected, base, name, "base model")
        dtype_of = getattr(father, "dtype", None)
        if plan.source == "mother" and callable(shape_of) and callable(dtype_of):
            father_dtype = dtype_of(name)  # a transplanted tensor: no need to read the father's values
            if father_dtype.is_floating_point:
                m = _fetch(mother, mother_name, device, "mother")
                yield name, m.to(out_dtype or father_dtype)
                continue
        f = _fetch(father, name, device, "father")
        if plan.source == "father":
            yield name, f if plan.keep_dtype or out_dtype is None else f.to(out_dtype)
            continue
        m = _fetch(mother, mother_name, device, "mother")
        if m.shape != f.shape:
            raise DarwinError(
                f"Tensor {name} has shape {tuple(f.shape)} in the father but {tuple(m.shape)} in the mother; "
                "these parents cannot be merged tensor by tensor."
            )
        target = out_dtype or f.dtype
        if not f.is_floating_point():  # integer buffers (position ids, masks): the father's
            yield name, f
            continue
        if plan.source == "mother":
            yield name, m.to(target)
            continue
        b = None
        if uses_ancestor:
            b = _fetch(base, name, device, "base model")
            if b.shape != f.shape:
                raise DarwinError(f"Tensor {name} has shape {tuple(b.shape)} in the base model but {tuple(f.shape)} in the father.")
        result = method.kernel(f, m, b, plan.params)
        if blend:
            result = torch.lerp(linear(f, m, None, plan.params), result, recipe.method_weight)
        yield name, result.to(target)
        del f, m, b, result
