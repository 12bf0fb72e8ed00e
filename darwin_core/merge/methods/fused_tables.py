"""The host side of the multi-tensor merge kernels: the tables that tell one launch which tensors to merge how.

Pure numpy, so the layout is tested on any machine (`tests/test_fused_multi.py`); the kernels that read these
tables (`_fused_triton`, `_dare_triton`) run only on CUDA devices with Triton.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from darwin_core.merge.methods.delta import _M32, _MASK_BITS
from darwin_core.merge.methods.registry import Method, TensorParams, get_method

BLOCK = 2048  # elements per block of the kernels (a power of two: DARE's sums are trees over blocks)
MULTI_CHUNK = BLOCK * 16  # elements per program of the multi-tensor kernels (a multiple of BLOCK)
INT_ROW = 10  # int64 per tensor in a DARE table: father, mother, out, numel, first block, seed low/high, threshold, flags, linear mode
FLOAT_ROW = 8  # float32 per tensor in a DARE table: weight, scale, w0, w1, total, method weight, 2 unused


def chunk_starts(numels: Iterable[int], chunk: int | None = None) -> np.ndarray:
    """Each tensor's first chunk in `chunk_table`'s numbering, then the chunk count (int64, one more than tensors)."""
    numels = np.asarray(list(numels), dtype=np.int64).reshape(-1)
    starts = np.zeros(len(numels) + 1, dtype=np.int64)
    starts[1:] = np.cumsum(-(-numels // (MULTI_CHUNK if chunk is None else chunk)))
    return starts


def chunk_table(numels: Iterable[int], chunk: int | None = None) -> np.ndarray:
    """int32 rows (tensor index, chunk number): chunk k of tensor i is its elements [k·chunk, (k+1)·chunk), so
    every element of every tensor is in exactly one chunk (`chunk` elements, MULTI_CHUNK), tensors in order, an
    empty tensor in none."""
    starts = chunk_starts(numels, chunk)
    firsts, counts = starts[:-1], np.diff(starts)
    owner = np.repeat(np.arange(len(numels), dtype=np.int32), counts)
    table = np.empty((len(owner), 2), dtype=np.int32)
    table[:, 0] = owner
    table[:, 1] = np.arange(len(owner), dtype=np.int64) - np.repeat(firsts, counts)
    return table


def _with_chunks(head: np.ndarray, numels: list[int]) -> tuple[np.ndarray, int]:
    """`head` (int64 rows) followed by `chunk_table(numels)`'s int32 rows padded to a whole int64; the chunk count."""
    chunks = chunk_table(numels)
    buffer = np.zeros(head.size + (chunks.size + 1) // 2, dtype=np.int64)
    buffer[:head.size] = head.reshape(-1)
    buffer[head.size:].view(np.int32)[:chunks.size] = chunks.reshape(-1)
    return buffer, len(chunks)


def linear_tables(fathers, mothers, outs, weights) -> tuple[np.ndarray, int]:
    """The multi-tensor linear kernel's tables in one int64 host buffer, and its chunk count: per tensor an
    int64 row (father, mother, out address, numel, mode), then per tensor a float32 row (w0, w1, total, 0),
    then `chunk_table`'s int32 rows (padded to a whole int64)."""
    count = len(outs)
    numels = [out.numel() for out in outs]
    head = np.zeros(count * 7, dtype=np.int64)
    rows = head[:count * 5].reshape(count, 5)
    rows[:, 0] = [f.data_ptr() for f in fathers]
    rows[:, 1] = [m.data_ptr() for m in mothers]
    rows[:, 2] = [out.data_ptr() for out in outs]
    rows[:, 3] = numels
    rows[:, 4] = [mode for mode, _, _, _ in weights]
    floats = head[count * 5:].view(np.float32).reshape(count, 4)
    floats[:, :3] = np.asarray([w[1:] for w in weights], dtype=np.float32).reshape(count, 3)
    return _with_chunks(head, numels)


def linear_weights(ratio: float) -> tuple[int, float, float, float]:
    """(mode, w0, w1, total) of `linear.linear` at `ratio`: mode 0/1 = the father's/mother's values exactly,
    2 = the weighted sum, whose weights and divisor are float32 as the reference's tensors are."""
    w0, w1 = np.float32(1.0 - ratio), np.float32(ratio)
    return (0 if ratio == 0.0 else 1 if ratio == 1.0 else 2), float(w0), float(w1), float(np.float32(w0 + w1))


class DareFlag(enum.IntFlag):
    """What a DARE-TIES tensor's row asks of the kernels."""

    DROP = 1  # density < 1: entries dropped by the keep mask
    RESCALE = 2  # dropped and rescaled to the task vector's L1 norm (the sums pass runs for it)
    NORMALIZE = 4  # divided by the agreeing weight
    BLEND = 8  # lerped from the linear merge by the recipe's method weight
    TASK_VECTOR = 16  # DARE-TIES; a row without it is the linear kernel's by its mode (copy, linear, or SKIP_MODE)


SKIP_MODE = 3  # a row's linear mode for a tensor the launch leaves as it is (0/1 copy a parent, 2 linear)
SCRATCH_PIECES = MULTI_CHUNK // BLOCK  # block sums per chunk the DARE scratch holds (sums blocks of BLOCK or more)


@dataclass(frozen=True)
class RowKinds:
    """Which of the DARE-TIES launches a table's rows need: the sums and factors (a row rescales), the DARE-TIES
    merge (a row has TASK_VECTOR), the linear kernel's (a row copies a parent or merges linearly)."""

    rescales: bool
    task_vectors: bool
    linear: bool
    keep_bits: bool = False  # every dropping row rescales: the merge reads the sums kernel's keep masks


def keep_bits(flags: np.ndarray) -> bool:
    """Whether a DARE-TIES merge may read every dropping row's keep mask from the sums kernel: all of them rescale
    (a recipe's rescale is all or nothing, so a launch's rows are all one way or the other)."""
    drops = (flags & DareFlag.DROP) != 0
    return bool(drops.any()) and bool(np.all((flags[drops] & DareFlag.RESCALE) != 0))


def scratch_size(count: int, chunks: int) -> int:
    """float32 scratch of a DARE-TIES launch over `count` tensors in `chunks` chunks: a factor per tensor, two
    block sums per block (SCRATCH_PIECES per chunk), two chunk sums per chunk."""
    return count + 2 * max(chunks, 1) * (SCRATCH_PIECES + 1)


@dataclass(frozen=True)
class DareRow:
    """One tensor's DARE-TIES with the father as base, as the fused kernels read it (`dare_row` builds it)."""

    flags: DareFlag
    seed_low: int = 0
    seed_high: int = 0
    threshold: int = 1 << _MASK_BITS
    weight: float = 0.0
    scale: float = 1.0
    linear: tuple[int, float, float, float] = (2, 0.5, 0.5, 1.0)
    blend: float = 1.0


def dare_row(params: TensorParams, blend: float | None = None) -> DareRow:
    """The row of `delta.task_vector_merge` for the mother's task vector alone (`dare_ties`, base = father):
    weight = sign·ratio in float32, the mother's density and mask seed; `blend` (a method weight < 1) lerps the
    result from the linear merge at the same ratio, as `merge_tensors` does. A row of `dare_columns` (the batch
    path builds rows one tensor at a time, where numpy per row would cost more; the tests hold the two equal)."""
    method = get_method(Method.DARE_TIES)
    normalize = method.default_normalize if params.normalize is None else params.normalize
    rescale = method.default_rescale if params.rescale is None else params.rescale
    density, seed = params.density_mother, params.mask_seeds[1]
    flags = int(DareFlag.TASK_VECTOR)
    if density < 1:
        flags |= int(DareFlag.DROP) | (int(DareFlag.RESCALE) if rescale else 0)
    if normalize:
        flags |= int(DareFlag.NORMALIZE)
    if blend is not None:
        flags |= int(DareFlag.BLEND)
    return DareRow(
        flags=DareFlag(flags), seed_low=seed & _M32, seed_high=(seed >> 32) & _M32,
        threshold=int(density * (1 << _MASK_BITS)) if density < 1 else 1 << _MASK_BITS,
        weight=float(np.float32(params.weight_signs[1] * params.ratio)), scale=float(np.float32(params.scale)),
        linear=linear_weights(params.ratio), blend=1.0 if blend is None else float(np.float32(blend)))


def dare_columns(ratio: np.ndarray, density: np.ndarray, seeds: np.ndarray, normalize: Any, rescale: Any,
                 scale: Any, sign: Any, blend: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`dare_row` of many tensors at once (the resident layout's candidates), as the tables hold them: int64
    columns (seed low, seed high, threshold, flags, linear mode) and float32 columns (weight, scale, w0, w1, total,
    method weight), a row per tensor. `ratio`, the mother's `density` (float64) and her mask `seeds` (uint64) are
    columns; `normalize` / `rescale` (None: the method's default), `scale` and the mother's weight `sign` are
    columns or one value for every row."""
    method = get_method(Method.DARE_TIES)
    normalize = method.default_normalize if normalize is None else normalize
    rescale = method.default_rescale if rescale is None else rescale
    drop = density < 1
    flags = (int(DareFlag.TASK_VECTOR) + np.where(drop, int(DareFlag.DROP), 0)
             + np.where(drop & rescale, int(DareFlag.RESCALE), 0) + np.where(normalize, int(DareFlag.NORMALIZE), 0)
             + (int(DareFlag.BLEND) if blend is not None else 0))
    modes, w0, w1, total = linear_columns(ratio)
    ints = np.empty((len(ratio), 5), dtype=np.int64)
    ints[:, 0] = (seeds & np.uint64(_M32)).astype(np.int64)
    ints[:, 1] = ((seeds >> np.uint64(32)) & np.uint64(_M32)).astype(np.int64)
    ints[:, 2] = np.where(drop, (density * (1 << _MASK_BITS)).astype(np.int64), 1 << _MASK_BITS)  # int(): truncation
    ints[:, 3], ints[:, 4] = flags, modes
    values = np.empty((len(ratio), 6), dtype=np.float32)
    values[:, 0] = np.asarray(sign, dtype=np.float64) * ratio
    values[:, 1] = scale
    values[:, 2], values[:, 3], values[:, 4] = w0, w1, total
    values[:, 5] = 1.0 if blend is None else blend
    return ints, values


def linear_columns(ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`linear_weights` of many ratios (float64) at once: the modes and the float32 w0, w1 and total."""
    w0, w1 = (1.0 - ratios).astype(np.float32), ratios.astype(np.float32)
    return np.where(ratios == 0.0, 0, np.where(ratios == 1.0, 1, 2)).astype(np.int64), w0, w1, w0 + w1


def dare_tables(fathers, mothers, outs, rows: list[DareRow]) -> tuple[np.ndarray, int]:
    """The DARE-TIES kernels' tables in one int64 host buffer and its chunk count: per tensor an int64 row
    (INT_ROW: father, mother, out address, numel, its first chunk, seed low, seed high, threshold, flags, linear
    mode), then per tensor a float32 row (FLOAT_ROW: weight, scale, w0, w1, total, method weight, 0, 0), then
    `chunk_table`'s rows."""
    count = len(outs)
    numels = [out.numel() for out in outs]
    head = np.zeros(count * (INT_ROW + FLOAT_ROW // 2), dtype=np.int64)
    ints = head[:count * INT_ROW].reshape(count, INT_ROW)
    ints[:, 0] = [f.data_ptr() for f in fathers]
    ints[:, 1] = [m.data_ptr() for m in mothers]
    ints[:, 2] = [out.data_ptr() for out in outs]
    ints[:, 3] = numels
    ints[:, 4] = chunk_starts(numels)[:-1]
    ints[:, 5:10] = [(r.seed_low, r.seed_high, r.threshold, int(r.flags), r.linear[0]) for r in rows] or np.zeros((0, 5))
    floats = head[count * INT_ROW:].view(np.float32).reshape(count, FLOAT_ROW)
    floats[:, :6] = np.asarray([(r.weight, r.scale, *r.linear[1:], r.blend) for r in rows], dtype=np.float32).reshape(count, 6)
    return _with_chunks(head, numels)
