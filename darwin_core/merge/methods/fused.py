"""The candidate merge in one pass per tensor on a GPU: `fused_merge_tensors`, a drop-in for `merge_tensors`.

`merge_tensors` runs each kernel as a chain of float32 torch operations and then casts the result to the
child's dtype: for a linear bf16 merge about 40 bytes of memory traffic per element and a dozen launches per
tensor, where reading both parents and writing the child needs 6. Here the tensors the evolution merges most
(linear; DARE-TIES and TIES-free DARE with the father as base, the darwin-v6 default) go through one Triton
kernel each (`_fused_triton`) that reads both parents in their dtype, computes in float32 in the reference's
order and writes the child's dtype. Everything else (other methods, a common ancestor, blends with
`method_weight`, CPU tensors, float64, machines without Triton) is the reference `merge_tensors`, tensor by
tensor, so the yielded (name, tensor) pairs are always the reference's, byte for byte (`tests/test_gpu.py`).

Linear tensors written in place (`outputs`) are batched: each run of consecutive ones is one multi-tensor launch
per dtype triple (`LinearBatch`, `_fused_triton.linear_multi_cuda`), same bytes, without a launch and its Python
per tensor (a 4B candidate on an H200: 11.8 ms instead of 17.6 ms with a launch per tensor, docs/benchmarks.md).

DARE's L1 rescale needs two sums over the whole task vector; they are computed with the reference's own torch
reductions (so the factor has the same bits) but without its host synchronisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from darwin_core.merge.methods.apply import _fetch, _names_of, merge_tensors, paired_plan
from darwin_core.merge.methods.delta import _M32, _MASK_BITS, RESCALE_EPS, keep_mask
from darwin_core.merge.methods.registry import Method, get_method

FUSED_METHODS = (Method.LINEAR, Method.DARE_TIES)
# DARE's rescale sums read |delta| and |delta·keep| written by one kernel (False: built by torch operations, as
# the reference does; the bench compares the two and tests/test_gpu.py checks the bytes either way).
FUSED_MAGNITUDES = True
# Linear tensors written in place (`outputs`) go through one multi-tensor launch per run of consecutive ones
# (False: one launch per tensor, as before; the bench compares the two, tests/test_gpu.py checks the bytes).
MULTI_TENSOR_LINEAR = True
MULTI_CHUNK = 2048 * 16  # elements per program of the multi-tensor kernel (a multiple of its BLOCK)
MULTI_COPIED_BYTES = 256 << 20  # parents a batch holds as device copies (host-streamed parents) before it flushes
MULTI_FLUSH_TENSORS = 48  # tensors per launch at most: the launch overlaps the host's planning of the next ones


def _triton_kernels():
    try:
        from darwin_core.merge.methods import _fused_triton
    except ImportError:
        return None
    return _fused_triton


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
    of a linear merge's traffic); a tensor that does not match, or is not fused, is yielded as usual."""
    device = torch.device(device)
    names = _names_of(father) if names is None else list(names)
    if not fusable(recipe, device):
        yield from merge_tensors(recipe, father, mother, names, device=device, base=base, pairing=pairing)
        return
    kernels = _triton_kernels()
    out_dtype = recipe.torch_dtype
    blend = recipe.method_weight if recipe.method_weight < 1.0 and get_method(recipe.method).blends_with_linear else None
    batch = None
    if MULTI_TENSOR_LINEAR and outputs is not None and recipe.method == Method.LINEAR:
        batch = LinearBatch(kernels, resident=_resident(father, device) and _resident(mother, device))
    for name in names:
        plan, mother_name = paired_plan(recipe, name, pairing)
        merged = None
        if plan.source is None and mother_name is not None:
            f = _fetch(father, name, device, "father")
            m = _fetch(mother, mother_name, device, "mother")
            into = None if outputs is None else outputs.get(name)
            target = out_dtype or f.dtype
            if batch is not None and _fits(f, m, target) and _fits_into(into, f, target) and _aligned(f, m, into):
                batch.add(name, f, m, into, _linear_weights(plan.params.ratio))
                if batch.full():
                    yield from batch.flush()
                continue
            merged = _fused_one(kernels, recipe.method, f, m, plan.params, target, blend, into)
        if batch is not None:
            yield from batch.flush()
        if merged is None:
            merged = next(iter(merge_tensors(recipe, father, mother, [name], device=device, base=base, pairing=pairing)))[1]
        yield name, merged
    if batch is not None:
        yield from batch.flush()


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


class LinearBatch:
    """Consecutive linear tensors written in place, merged by one multi-tensor launch per dtype triple.

    `flush` launches and yields the (name, output) pairs in the order they were added. Parents that the sources
    copied to the device (host-streamed ones) are held until the flush, so a batch of copies is bounded."""

    def __init__(self, kernels: Any, *, resident: bool, copied_limit: int | None = None):
        self.kernels, self.resident = kernels, resident
        self.copied_limit = MULTI_COPIED_BYTES if copied_limit is None else copied_limit
        self.items: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, float, float, float]]] = []
        self.copied = 0

    def add(self, name: str, f: torch.Tensor, m: torch.Tensor, into: torch.Tensor,
            weights: tuple[int, float, float, float]) -> None:
        self.items.append((name, f, m, into, weights))
        if not self.resident:
            self.copied += f.numel() * f.element_size() + m.numel() * m.element_size()

    def full(self) -> bool:
        """A batch launches once it holds MULTI_FLUSH_TENSORS tensors (so the GPU merges while the host plans the
        next ones) or, with copied parents, MULTI_COPIED_BYTES of copies."""
        return len(self.items) >= MULTI_FLUSH_TENSORS or (not self.resident and self.copied >= self.copied_limit)

    def flush(self) -> Iterator[tuple[str, torch.Tensor]]:
        items, self.items, self.copied = self.items, [], 0
        for group in dtype_groups((f.dtype, m.dtype, into.dtype) for _, f, m, into, _ in items):
            self.kernels.linear_multi_cuda([items[k][1] for k in group], [items[k][2] for k in group],
                                           [items[k][3] for k in group], [items[k][4] for k in group])
        for name, _, _, into, _ in items:
            yield name, into


def linear_tables(fathers, mothers, outs, weights) -> tuple[np.ndarray, int]:
    """The multi-tensor linear kernel's tables in one int64 host buffer, and its chunk count: per tensor an
    int64 row (father, mother, out address, numel, mode), then per tensor a float32 row (w0, w1, total, 0),
    then `chunk_table`'s int32 rows (padded to a whole int64)."""
    count = len(outs)
    numels = [out.numel() for out in outs]
    chunks = chunk_table(numels)
    buffer = np.zeros(count * 7 + (chunks.size + 1) // 2, dtype=np.int64)
    rows = buffer[:count * 5].reshape(count, 5)
    rows[:, 0] = [f.data_ptr() for f in fathers]
    rows[:, 1] = [m.data_ptr() for m in mothers]
    rows[:, 2] = [out.data_ptr() for out in outs]
    rows[:, 3] = numels
    rows[:, 4] = [mode for mode, _, _, _ in weights]
    floats = buffer[count * 5:count * 7].view(np.float32).reshape(count, 4)
    floats[:, :3] = np.asarray([w[1:] for w in weights], dtype=np.float32).reshape(count, 3)
    buffer[count * 7:].view(np.int32)[:chunks.size] = chunks.reshape(-1)
    return buffer, len(chunks)


def chunk_table(numels: Iterable[int], chunk: int | None = None) -> np.ndarray:
    """int32 rows (tensor index, chunk number): chunk k of tensor i is its elements [k·chunk, (k+1)·chunk), so
    every element of every tensor is in exactly one chunk (`chunk` elements, MULTI_CHUNK), tensors in order, an
    empty tensor in none."""
    chunk = MULTI_CHUNK if chunk is None else chunk
    numels = np.asarray(list(numels), dtype=np.int64).reshape(-1)
    counts = -(-numels // chunk)
    firsts = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(len(numels), dtype=np.int32), counts)
    table = np.empty((len(owner), 2), dtype=np.int32)
    table[:, 0] = owner
    table[:, 1] = np.arange(len(owner), dtype=np.int64) - np.repeat(firsts, counts)
    return table


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
    """Whether every tensor starts on a 16-byte boundary (the multi-tensor kernel's vector accesses assume it)."""
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def _fused_one(kernels, method: str, f: torch.Tensor, m: torch.Tensor, params, target: torch.dtype,
               blend: float | None = None, into: torch.Tensor | None = None) -> torch.Tensor | None:
    """The child's tensor by the fused kernel (written into `into` when it has the result's dtype, shape and
    device and is contiguous), or None where the reference must do it (odd dtypes or shapes)."""
    if not _fits(f, m, target):
        return None
    if not _fits_into(into, f, target):
        into = None
    if method == Method.LINEAR:
        return _linear(kernels, f, m, params.ratio, target, into)
    return _dare_ties(kernels, f, m, params, target, blend, into)


def _linear_weights(ratio: float) -> tuple[int, float, float, float]:
    """(mode, w0, w1, total) of `linear.linear` at `ratio`: mode 0/1 = the father's/mother's values exactly,
    2 = the weighted sum, whose weights and divisor are float32 as the reference's tensors are."""
    w0, w1 = np.float32(1.0 - ratio), np.float32(ratio)
    return (0 if ratio == 0.0 else 1 if ratio == 1.0 else 2), float(w0), float(w1), float(np.float32(w0 + w1))


def _linear(kernels, f: torch.Tensor, m: torch.Tensor, ratio: float, target: torch.dtype,
            into: torch.Tensor | None = None) -> torch.Tensor:
    mode, w0, w1, total = _linear_weights(ratio)
    if mode < 2:
        return (f if mode == 0 else m).to(torch.float32).to(target)
    out = torch.empty(f.shape, dtype=target, device=f.device) if into is None else into
    return kernels.linear_cuda(f, m, w0, w1, total, out)


def _dare_ties(kernels, f: torch.Tensor, m: torch.Tensor, params, target: torch.dtype,
               blend: float | None = None, into: torch.Tensor | None = None) -> torch.Tensor:
    """DARE-TIES with the father as base: only the mother has a task vector (`delta.task_vector_merge`);
    `blend` (the recipe's method weight < 1) lerps from the linear merge, as `merge_tensors` does."""
    method = get_method(Method.DARE_TIES)
    normalize = method.default_normalize if params.normalize is None else params.normalize
    rescale = method.default_rescale if params.rescale is None else params.rescale
    weight = params.weight_signs[1] * params.ratio
    density, seed = params.density_mother, params.mask_seeds[1]
    drop, factor = None, None
    if density < 1:
        drop = (seed & _M32, (seed >> 32) & _M32, int(density * (1 << _MASK_BITS)), _MASK_BITS)
        if rescale:  # the reference's sums, bit for bit; its `if` on them becomes a where (no host sync)
            if FUSED_MAGNITUDES:  # the summed tensors in one pass, then the same torch sums
                whole, kept = kernels.dare_magnitudes_cuda(f, m, drop)
                before, after = whole.sum(), kept.sum()
                del whole, kept
            else:
                delta = m.to(torch.float32) - f.to(torch.float32)
                before = delta.abs().sum()
                after = (delta * keep_mask(delta.shape, density, seed, delta.device)).abs().sum()
                del delta
            skip = (before < RESCALE_EPS) | (after < RESCALE_EPS)
            factor = torch.where(skip, torch.ones_like(before), before / after).reshape(1)
    out = torch.empty(f.shape, dtype=target, device=f.device) if into is None else into
    return kernels.dare_ties_cuda(f, m, out, factor=factor, drop=drop, weight=float(np.float32(weight)),
                                  normalize=normalize, scale=float(params.scale),
                                  blend=None if blend is None else (float(blend), *_linear_weights(params.ratio)))
