"""The candidate merge on a GPU in a few launches per candidate: `fused_merge_tensors`, a drop-in for `merge_tensors`.

`merge_tensors` runs each kernel as a chain of float32 torch operations and then casts the result to the
child's dtype: for a linear bf16 merge about 40 bytes of memory traffic per element and a dozen launches per
tensor, where reading both parents and writing the child needs 6. Here the tensors the evolution merges most
(linear; DARE-TIES with the father as base, the darwin-v6 default, blended with linear by a method weight or not)
go through Triton kernels that read the parents in their dtype, compute in float32 in the reference's order and
write the child's dtype; everything else (other methods, a common ancestor, CPU tensors, float64, machines
without Triton) is the reference `merge_tensors`, tensor by tensor. The yielded (name, tensor) pairs are the
reference's, byte for byte (`tests/test_gpu.py`); a batched tensor comes when its batch is launched, so the order
of the pairs may differ from the names'.

Tensors are batched (`TensorBatch`): one multi-tensor launch per dtype triple for the linear tensors and the
whole-parent copies written in place (`outputs`; `_fused_triton.linear_multi_cuda`, whose copy mode reads one
parent) and three for the DARE-TIES tensors (`_dare_triton`, in place or into fresh tensors), without a launch
and its Python per tensor; a batch launches every MULTI_FLUSH_TENSORS tensors, so the GPU merges while the host
plans the next ones.

DARE's L1 rescale needs two sums over the whole task vector before any element is written; the reference adds them
in a fixed order (`delta.pairwise_sum`) that the kernels repeat, so the factor has the same bits and no host
synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from darwin_core.merge.methods.apply import _fetch, _names_of, merge_tensors, paired_plan
from darwin_core.merge.methods.fused_tables import (MULTI_CHUNK, chunk_table, dare_row, linear_tables,  # noqa: F401
                                                   linear_weights)
from darwin_core.merge.methods.registry import Method, get_method

FUSED_METHODS = (Method.LINEAR, Method.DARE_TIES)
# Linear tensors and whole-parent copies written in place (`outputs`) go through multi-tensor launches (False: a
# launch per linear tensor, copies by the reference; the bench compares the two, tests/test_gpu.py checks the
# bytes). DARE-TIES tensors are always batched.
MULTI_TENSOR_LINEAR = True
MULTI_COPIED_BYTES = 256 << 20  # parents a batch holds as device copies (host-streamed parents) before it flushes
MULTI_FLUSH_TENSORS = 48  # tensors per launch at most: the launch overlaps the host's planning of the next ones
_COPY_WEIGHTS = linear_weights(0.0)  # the linear kernel's copy mode (a whole-parent tensor), built once


def _triton_kernels():
    """The kernels' namespace (linear_cuda, linear_multi_cuda, dare_ties_multi_cuda), None without Triton."""
    try:
        from darwin_core.merge.methods import _dare_triton, _fused_triton
    except ImportError:
        return None
    return _Kernels(_fused_triton.linear_cuda, _fused_triton.linear_multi_cuda, _dare_triton.dare_ties_multi_cuda,
                    _dare_triton.layout_launch)


@dataclass(frozen=True)
class _Kernels:
    linear_cuda: Callable[..., torch.Tensor]
    linear_multi_cuda: Callable[..., list[torch.Tensor]]
    dare_ties_multi_cuda: Callable[..., list[torch.Tensor]]
    layout_launch: Callable[..., None]


def fusable(recipe: Any, device: torch.device) -> bool:
    """Whether `fused_merge_tensors` can take any of the recipe's tensors (else it is `merge_tensors` itself)."""
    method = get_method(recipe.method)
    return (device.type == "cuda" and recipe.method in FUSED_METHODS
            and not (method.delta and recipe.base != "father") and _triton_kernels() is not None)


def fused_merge_tensors(
    recipe: Any,
    father: Any,
    mother: Any,
    names: Iterable[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    base: Any = None,
    pairing: Mapping[str, str | None] | None = None,
    outputs: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield what `merge_tensors` yields for the same arguments, through the fused kernels where they apply.

    `outputs` (name → a tensor of the child's dtype and shape, e.g. the resident child's own parameter): a fused
    kernel writes the merged values straight into it and yields it, so the caller's copy is not needed (a third
    of a linear merge's traffic); a tensor that does not match, or is not fused, is yielded as usual. (A resident
    child's candidates go through its `fused_layout.ResidentLayout` first, tables made once; this path gets the
    tensors the layout does not take.)"""
    device = torch.device(device)
    names = _names_of(father) if names is None else list(names)
    if not fusable(recipe, device):
        yield from merge_tensors(recipe, father, mother, names, device=device, base=base, pairing=pairing)
        return
    kernels = _triton_kernels()
    resident = _resident(father, device) and _resident(mother, device)
    batch = _batch_for(recipe, kernels, outputs, resident)
    copies = None  # tensors taken whole from a parent, written in place by the linear kernel's copy mode
    if outputs is not None and MULTI_TENSOR_LINEAR:
        copies = batch if recipe.method == Method.LINEAR else TensorBatch(kernels.linear_multi_cuda, resident=resident)
    for name in names:
        plan, mother_name = paired_plan(recipe, name, pairing)
        into = None if outputs is None else outputs.get(name)
        sources = _Fetched(father, name), _Fetched(mother, mother_name)
        if plan.source is None and mother_name is not None:
            added, merged = _merge_one(kernels, recipe, plan, batch, *sources, name, mother_name, device, into)
        elif copies is not None and into is not None and plan.source in ("father", "mother") and mother_name is not None:
            added, merged = _copy_one(copies, recipe, plan, *sources, name, mother_name, device, into), None
        else:
            added, merged = None, None
        if added is not None:
            if added.full():
                yield from added.flush()
            continue
        if merged is None:  # the reference's, from the tensors already fetched (a streamed parent crosses once)
            merged = next(iter(merge_tensors(recipe, *sources, [name], device=device, base=base, pairing=pairing)))[1]
        yield name, merged
    for open_batch in {id(b): b for b in (batch, copies) if b is not None}.values():
        yield from open_batch.flush()


def dare_blend(recipe: Any) -> float | None:
    """The method weight a DARE-TIES row lerps its result from the linear merge by (None: the method's result)."""
    blends = recipe.method_weight < 1.0 and get_method(recipe.method).blends_with_linear
    return recipe.method_weight if blends else None


class _Fetched:
    """A parent's source that keeps the one tensor `name` once fetched: the kernels may refuse a tensor after
    fetching it (an odd dtype, a layout they do not take), and the reference then reads it from here, so a
    host-streamed parent's tensor crosses the host link once. Everything else is the source's own."""

    def __init__(self, source: Any, name: str | None):
        self.source, self.name, self.tensor = source, name, None

    def get(self, name: str, device: Any = None) -> torch.Tensor:
        if name != self.name:
            return self.source.get(name, device)
        if self.tensor is None:
            self.tensor = self.source.get(name, device)
        return self.tensor

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.source, attribute)


def _merge_one(kernels, recipe, plan, batch: TensorBatch | None, father, mother, name: str, mother_name: str,
               device: torch.device, into: torch.Tensor | None) -> tuple[TensorBatch | None, torch.Tensor | None]:
    """A merged tensor: added to `batch` (returned) when the kernels take it, else merged by the per-tensor
    linear kernel (returned second), else (None, None): the reference's."""
    f = _fetch(father, name, device, "father")
    m = _fetch(mother, mother_name, device, "mother")
    target = recipe.torch_dtype or f.dtype
    batched = batch is not None and _fits(f, m, target) and _aligned(f, m)
    in_place = _fits_into(into, f, target) and _aligned(into)
    if batched and recipe.method == Method.DARE_TIES:
        batch.add(name, f, m, into if in_place else None, dare_row(plan.params, dare_blend(recipe)), target)
        return batch, None
    if recipe.method != Method.LINEAR:
        return None, None
    if batched and in_place:
        batch.add(name, f, m, into, linear_weights(plan.params.ratio), target)
        return batch, None
    return None, _fused_linear(kernels, f, m, plan.params.ratio, target, into)


def _copy_one(copies: TensorBatch, recipe, plan, father, mother, name: str, mother_name: str, device: torch.device,
              into: torch.Tensor) -> TensorBatch | None:
    """A tensor the recipe takes whole from one parent, written into `into` by the copy mode of the linear kernel
    (`merge_tensors`' `f.to(target)` / `m.to(target)`: the same bytes); None where the reference must do it."""
    out_dtype = recipe.torch_dtype
    if plan.source == "father":
        source = _fetch(father, name, device, "father")
        target = source.dtype if plan.keep_dtype or out_dtype is None else out_dtype
    else:
        dtype_of = getattr(father, "dtype", None)
        father_dtype = dtype_of(name) if callable(dtype_of) else _fetch(father, name, device, "father").dtype
        source = _fetch(mother, mother_name, device, "mother")
        target = out_dtype or father_dtype
    if not (source.is_floating_point() and _fits(source, source, target) and _fits_into(into, source, target)
            and _aligned(source, into)):
        return None
    copies.add(name, source, source, into, _COPY_WEIGHTS, target)
    return copies


def _batch_for(recipe: Any, kernels: Any, outputs: Mapping[str, torch.Tensor] | None, resident: bool
               ) -> TensorBatch | None:
    """The batch this recipe's tensors go through: DARE-TIES always, linear when written in place."""
    if recipe.method == Method.DARE_TIES:
        return TensorBatch(kernels.dare_ties_multi_cuda, resident=resident)
    if MULTI_TENSOR_LINEAR and outputs is not None and recipe.method == Method.LINEAR:
        return TensorBatch(kernels.linear_multi_cuda, resident=resident)
    return None


def _resident(source: Any, device: torch.device) -> bool:
    """Whether `source` hands out its own tensors on `device` (a fetch is a view, not a copy held by a batch)."""
    home = getattr(source, "device", None)
    return home is not None and torch.device(home) == device  # "cuda" vs "cuda:0" only bounds batches: still right


def dtype_groups(keys: Iterable[Any]) -> list[list[int]]:
    """Positions of `keys` grouped by equal key, groups in order of first appearance, positions ascending."""
    groups: dict[Any, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return list(groups.values())


class TensorBatch:
    """Consecutive tensors merged by one multi-tensor launch per dtype triple: `launch(fathers, mothers, outs, rows)`
    (`linear_multi_cuda` with `linear_weights` rows, `dare_ties_multi_cuda` with `dare_row` rows).

    `flush` launches and yields the (name, output) pairs in the order they were added. Parents that the sources
    copied to the device (host-streamed ones) and fresh outputs are held until the flush, so a batch of them is
    bounded."""

    def __init__(self, launch: Callable[..., Any], *, resident: bool, copied_limit: int | None = None):
        self.launch, self.resident = launch, resident
        self.copied_limit = MULTI_COPIED_BYTES if copied_limit is None else copied_limit
        self.items: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, Any]] = []
        self.copied = 0

    def add(self, name: str, f: torch.Tensor, m: torch.Tensor, into: torch.Tensor | None, row: Any,
            target: torch.dtype) -> None:
        """Merge `name` at the next flush into `into` (None: a fresh tensor of dtype `target`)."""
        if into is None:
            into = torch.empty(f.shape, dtype=target, device=f.device)
            self.copied += into.numel() * into.element_size()
        self.items.append((name, f, m, into, row))
        if not self.resident:
            self.copied += f.numel() * f.element_size()
            if m is not f:  # a whole-parent copy passes its one source as both parents
                self.copied += m.numel() * m.element_size()

    def full(self) -> bool:
        """A batch launches once it holds MULTI_FLUSH_TENSORS tensors (so the GPU merges while the host plans the
        next ones) or MULTI_COPIED_BYTES of copies and fresh outputs."""
        return len(self.items) >= MULTI_FLUSH_TENSORS or self.copied >= self.copied_limit

    def flush(self) -> Iterator[tuple[str, torch.Tensor]]:
        items, self.items, self.copied = self.items, [], 0
        for group in dtype_groups((f.dtype, m.dtype, into.dtype) for _, f, m, into, _ in items):
            self.launch(*([items[k][part] for k in group] for part in (1, 2, 3, 4)))
        for name, _, _, into, _ in items:
            yield name, into


_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _fits(f: torch.Tensor, m: torch.Tensor, target: torch.dtype) -> bool:
    """Whether the fused kernels take these parents to `target` (else the reference does: odd dtypes or shapes)."""
    return (f.is_cuda and m.device == f.device and f.shape == m.shape and f.dtype in _DTYPES and m.dtype in _DTYPES
            and target.is_floating_point and target != torch.float64 and f.is_contiguous() and m.is_contiguous())


def _fits_into(into: torch.Tensor | None, f: torch.Tensor, target: torch.dtype) -> bool:
    """Whether `into` can receive the result of the parents `f`, … in place."""
    return (into is not None and into.dtype == target and into.shape == f.shape and into.device == f.device
            and into.is_contiguous())


def _aligned(*tensors: torch.Tensor) -> bool:
    """Whether every tensor starts on a 16-byte boundary (the multi-tensor kernels' vector accesses assume it)."""
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def _fused_linear(kernels, f: torch.Tensor, m: torch.Tensor, ratio: float, target: torch.dtype,
                  into: torch.Tensor | None = None) -> torch.Tensor | None:
    """A linear tensor by the per-tensor kernel (into `into` when it fits), or None where the reference must do it
    (odd dtypes or shapes)."""
    if not _fits(f, m, target):
        return None
    if not _fits_into(into, f, target):
        into = None
    return _linear(kernels, f, m, ratio, target, into)


def _linear(kernels, f: torch.Tensor, m: torch.Tensor, ratio: float, target: torch.dtype,
            into: torch.Tensor | None = None) -> torch.Tensor:
    mode, w0, w1, total = linear_weights(ratio)
    if mode < 2:
        return (f if mode == 0 else m).to(torch.float32).to(target)
    out = torch.empty(f.shape, dtype=target, device=f.device) if into is None else into
    return kernels.linear_cuda(f, m, w0, w1, total, out)


def dare_ties_one(kernels, f: torch.Tensor, m: torch.Tensor, params, target: torch.dtype,
                  blend: float | None = None) -> torch.Tensor:
    """One DARE-TIES tensor through the batched kernels (a batch of one, into a fresh tensor of dtype `target`)."""
    out = torch.empty(f.shape, dtype=target, device=f.device)
    kernels.dare_ties_multi_cuda([f], [m], [out], [dare_row(params, blend)])
    return out
