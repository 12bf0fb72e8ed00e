"""DARE-TIES with the father as base for many tensors at once on a GPU: a few launches per batch, whatever its size.

1. `_dare_sums_kernel`: per block of BLOCK elements of every tensor that rescales, the `pairwise_sum` of |Δ| and of
   |Δ·keep| (Δ = float(m) − float(f)), then per chunk (MULTI_CHUNK elements) the tree over its blocks' sums,
   written as two float32 partials per chunk, and the keep mask, one bit per element (`KEEP_BYTES` a chunk);
2. `_dare_factor_kernel`: per tensor, the same tree over its chunks' partials (a chunk's tree is a subtree of the
   whole one, so the two sums have `delta.fixed_order_l1`'s bits) and the rescale factor before / after (1 where
   either is below RESCALE_EPS, as `delta.rescale_l1`);
3. `_dare_merge_kernel`: the child, element by element in `delta.task_vector_merge`'s order of float32 operations
   (drop, rescale, weight, sign election, normalize, scale, base + mixed, and `merge_tensors`' lerp from linear
   when the recipe's method weight is below 1), in the child's dtype. Where every dropping row rescales (a
   recipe's rescale is all or nothing) the compiled variant `KEEP_BITS` reads the keep mask the sums kernel left
   instead of hashing it again: the hash is some twenty integer operations an element, and without it the kernel
   compiles to 60 registers instead of 80 (Triton 3.6, sm_90). A second compiled variant takes the rows that copy
   a parent's tensor or merge linearly (the resident layout's candidates: `fused_layout`).

So a candidate reads both parents twice and writes the child once (10 bytes per bf16 element, and a quarter byte
for the mask written and read; the rescale is a whole-tensor reduction that every element needs before it can be
written), instead of the ~26 bytes and three launches plus torch's reductions per tensor of the per-tensor path it
replaces. The tables (`fused_tables.dare_tables`) travel in one pinned copy. Launched with `enable_fp_fusion=False`:
every step is rounded on its own, as the reference's torch kernels are (`_fused_triton` says why). `stride` varies
with the batch and is not specialised on (Triton would compile a variant per divisibility class of it in the
middle of a breeding).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from darwin_core.merge.methods._fused_triton import BLOCK, PIECES, _lerp, _linear_part, _linear_piece, _upload
from darwin_core.merge.methods._mask_triton import _hash24, _keep
from darwin_core.merge.methods.delta import _MASK_BITS, RESCALE_EPS
from darwin_core.merge.methods.fused_tables import (FLOAT_ROW, INT_ROW, MULTI_CHUNK, SCRATCH_PIECES, SKIP_MODE,
                                                   DareFlag, RowKinds, dare_tables, keep_bits, scratch_size)

SHIFT = 32 - _MASK_BITS
KEEP_BYTES = MULTI_CHUNK // 8  # a chunk's keep mask as the sums kernel leaves it for the merge: 8 elements a byte


@triton.jit
def _tree(x, LEVELS: tl.constexpr):
    # delta.pairwise_sum on one power-of-two block: adjacent pairs added, level by level, to a [1] tensor
    for _ in tl.static_range(LEVELS):
        left, right = tl.split(tl.reshape(x, [x.shape[0] // 2, 2]))
        x = left + right
    return x


@triton.jit
def _tree_pair(a, b, LEVELS: tl.constexpr):
    # `_tree` of a and of b side by side ([2, N] → [2, 1]): one layout change per level for both sums
    z = tl.permute(tl.join(a, b), (1, 0))
    for _ in tl.static_range(LEVELS):
        left, right = tl.split(tl.reshape(z, [2, z.shape[1] // 2, 2]))
        z = left + right
    return z


@triton.jit
def _pack_bits(keep):
    # [8N] zeros and ones (int32) → [N], bit k of value j = keep[8j + k]: adjacent pairs joined level by level as
    # `_tree` adds them, so each thread packs its own eight contiguous elements without a layout change (a
    # reshape to [N, 8] and a sum moved the mask between threads through shared memory)
    for level in tl.static_range(3):
        low, high = tl.split(tl.reshape(keep, [keep.shape[0] // 2, 2]))
        keep = low | (high << (1 << level))
    return keep


@triton.jit
def _unpack_bits(bits):
    # `_pack_bits` undone: [N] (int32) → [8N] zeros and ones, each value's halves split apart level by level
    bits = tl.reshape(tl.join(bits & 15, bits >> 4), [bits.shape[0] * 2])
    bits = tl.reshape(tl.join(bits & 3, bits >> 2), [bits.shape[0] * 2])
    return tl.reshape(tl.join(bits & 1, bits >> 1), [bits.shape[0] * 2])


@triton.jit
def _sum_block(f_ptr, m_ptr, partials, stride, block, index, inside, keep_bytes, seed_low, seed_high, threshold,
               LEVELS: tl.constexpr, SHIFT: tl.constexpr, TAIL: tl.constexpr, JOINED: tl.constexpr,
               BEFORE: tl.constexpr):
    # one block's two partials (|Δ| at partials[block], |Δ·keep| at partials[stride + block]; BEFORE False: only
    # the second); inside: the tail's mask (outside it Δ = 0, as the reference's zero padding), None for a whole
    # block, whose 16-byte aligned accesses stay vectorised. The keep mask goes to keep_bytes (`_pack_bits`)
    f = tl.load(tl.multiple_of(f_ptr + index, 16), mask=inside).to(tl.float32)
    m = tl.load(tl.multiple_of(m_ptr + index, 16), mask=inside).to(tl.float32)
    delta = m - f
    if TAIL:
        delta = tl.where(inside, delta, 0.0)
    keep = _hash24(index, seed_low, seed_high, SHIFT) < threshold  # `_keep`, kept as bits for the merge kernel
    tl.store(keep_bytes + tl.arange(0, index.shape[0] // 8), _pack_bits(keep.to(tl.int32)).to(tl.uint8))
    kept = tl.abs(delta * keep.to(tl.float32))
    if not BEFORE:
        tl.store(partials + stride + block + tl.arange(0, 1), _tree(kept, LEVELS))
    elif JOINED:
        at = tl.arange(0, 2)[:, None] * stride + tl.arange(0, 1)[None, :]
        tl.store(partials + block + at, _tree_pair(tl.abs(delta), kept, LEVELS))
    else:
        at = tl.arange(0, 1)
        tl.store(partials + block + at, _tree(tl.abs(delta), LEVELS))
        tl.store(partials + stride + block + at, _tree(kept, LEVELS))


@triton.jit(do_not_specialize=["stride", "chunk_stride"])
def _dare_sums_kernel(tensors, chunks, partials, stride, chunk_partials, chunk_stride, keeps, f_witness, m_witness,
                      INT_ROW: tl.constexpr, BLOCK: tl.constexpr, PIECES: tl.constexpr, LEVELS: tl.constexpr,
                      PIECE_LEVELS: tl.constexpr, SHIFT: tl.constexpr, RESCALE: tl.constexpr, JOINED: tl.constexpr,
                      BEFORE: tl.constexpr, KEEP_BYTES: tl.constexpr):
    # BEFORE False: only the |Δ·keep| sums (a resident layout keeps each chunk's |Δ| sum, which no recipe changes).
    # one program = one chunk of PIECES blocks of BLOCK elements of one tensor (chunks: int32 rows (tensor row,
    # chunk number)); tensors: int64 rows (father, mother, out address, numel, its first chunk, seed low, seed high,
    # threshold, flags, linear mode). Each block's two sums go to partials (PIECES slots per chunk, zeros past the
    # tensor's end, as the reference's padding), then the chunk's tree over them to chunk_partials: an aligned
    # subtree of the tensor's, so the factor kernel reduces one value per chunk instead of one per block; the
    # chunk's keep mask to keeps (KEEP_BYTES a chunk, by its index among the table's chunks)
    chunk = tl.program_id(0).to(tl.int64)
    row = tensors + INT_ROW * tl.load(chunks + 2 * chunk).to(tl.int64)
    flags = tl.load(row + 8)
    if (flags & RESCALE) != 0:
        f_ptr = tl.load(row).to(tl.pointer_type(f_witness.dtype.element_ty))
        m_ptr = tl.load(row + 1).to(tl.pointer_type(m_witness.dtype.element_ty))
        n = tl.load(row + 3)
        number = tl.load(chunks + 2 * chunk + 1).to(tl.int64)
        slot = tl.load(row + 4) + number  # this chunk's index among all chunks of the table
        seed_low = tl.load(row + 5).to(tl.uint32)
        seed_high = tl.load(row + 6).to(tl.uint32)
        threshold = tl.load(row + 7).to(tl.int32)
        offsets = tl.arange(0, BLOCK).to(tl.int64)
        zero = tl.zeros([1], tl.float32)
        for piece in range(PIECES):
            start = (number * PIECES + piece) * BLOCK
            at = slot * PIECES + piece
            keep_bytes = keeps + slot * KEEP_BYTES + piece * (BLOCK // 8)
            if start + BLOCK <= n:
                _sum_block(f_ptr, m_ptr, partials, stride, at, start + offsets, None, keep_bytes, seed_low, seed_high,
                           threshold, LEVELS, SHIFT, False, JOINED, BEFORE)
            elif start < n:
                index = start + offsets
                _sum_block(f_ptr, m_ptr, partials, stride, at, index, index < n, keep_bytes, seed_low, seed_high,
                           threshold, LEVELS, SHIFT, True, JOINED, BEFORE)
            else:
                tl.store(partials + at + tl.arange(0, 1), zero)
                tl.store(partials + stride + at + tl.arange(0, 1), zero)
        tl.debug_barrier()  # the blocks' sums, stored by this program's threads, read back by all of them
        leaves = slot * PIECES + tl.arange(0, PIECES)
        if BEFORE:
            both = _tree_pair(tl.load(partials + leaves), tl.load(partials + stride + leaves), PIECE_LEVELS)
            tl.store(chunk_partials + slot + tl.arange(0, 2)[:, None] * chunk_stride + tl.arange(0, 1)[None, :], both)
        else:
            kept = _tree(tl.load(partials + stride + leaves), PIECE_LEVELS)
            tl.store(chunk_partials + chunk_stride + slot + tl.arange(0, 1), kept)


@triton.jit
def _reduce_in_place(ptr, count, BLOCK: tl.constexpr, LEVELS: tl.constexpr):
    # the tree over count ≥ 1 partials: each level sums aligned groups of BLOCK (zeros past the end) into the
    # group's index, which no later group of the level reads; the barrier orders the levels
    offsets = tl.arange(0, BLOCK)
    while count > 1:
        for group in range(0, tl.cdiv(count, BLOCK)):
            index = group * BLOCK + offsets
            x = tl.load(ptr + index, mask=index < count, other=0.0)
            tl.store(ptr + group + tl.arange(0, 1), _tree(x, LEVELS))
        tl.debug_barrier()
        count = tl.cdiv(count, BLOCK)
    return tl.load(ptr + tl.arange(0, 1))


@triton.jit(do_not_specialize=["chunk_stride"])
def _dare_factor_kernel(tensors, chunk_partials, chunk_stride, factors, INT_ROW: tl.constexpr, CHUNK: tl.constexpr,
                        GROUP: tl.constexpr, LEVELS: tl.constexpr, RESCALE: tl.constexpr, EPS: tl.constexpr):
    # one program per tensor: factors[t] = before / after, or 1 (no rescale, an empty tensor, a sum below EPS);
    # its chunk partials: one per CHUNK elements from its first chunk on, reduced in groups of GROUP
    t = tl.program_id(0).to(tl.int64)
    n = tl.load(tensors + INT_ROW * t + 3)
    first_chunk = tl.load(tensors + INT_ROW * t + 4)
    flags = tl.load(tensors + INT_ROW * t + 8)
    factor = tl.full([1], 1.0, tl.float32)
    if ((flags & RESCALE) != 0) & (n > 0):
        count = tl.cdiv(n, CHUNK)
        before = factor
        after = factor
        for half in range(2):  # one loop, not two inlined trees: half the code for ptxas (a first compile)
            total = _reduce_in_place(chunk_partials + half * chunk_stride + first_chunk, count, GROUP, LEVELS)
            before = tl.where(half == 0, total, before)
            after = tl.where(half == 1, total, after)
        factor = tl.where((before < EPS) | (after < EPS), factor, tl.math.div_rn(before, after))
    tl.store(factors + t + tl.arange(0, 1), factor)


@triton.jit
def _merge_block(f_ptr, m_ptr, out_ptr, index, inside, keep_bytes, seed_low, seed_high, threshold, flags, mode,
                 factor, weight, scale, w0, w1, total, blend, SHIFT: tl.constexpr, DROP: tl.constexpr,
                 RESCALE: tl.constexpr, NORMALIZE: tl.constexpr, BLEND: tl.constexpr, KEEP_BITS: tl.constexpr):
    # delta.task_vector_merge for the mother's task vector alone (the father is the base), step by step; KEEP_BITS:
    # the keep mask is the sums kernel's, at keep_bytes (a tail block's bytes past the tensor's end are there too)
    f = tl.load(tl.multiple_of(f_ptr + index, 16), mask=inside).to(tl.float32)
    m = tl.load(tl.multiple_of(m_ptr + index, 16), mask=inside).to(tl.float32)
    delta = m - f
    if (flags & DROP) != 0:  # dare_drop: delta * keep_mask, then (rescale) * (before / after)
        if KEEP_BITS:
            bits = tl.load(keep_bytes + tl.arange(0, index.shape[0] // 8)).to(tl.int32)
            delta = delta * _unpack_bits(bits).to(tl.float32)
        else:
            delta = delta * _keep(index, seed_low, seed_high, threshold, SHIFT)
        if (flags & RESCALE) != 0:
            delta = delta * factor
    delta = delta * weight
    agree = tl.where(delta >= 0, delta > 0, delta < 0).to(tl.float32)  # one task vector: its own sign elects
    mixed = delta * agree
    if (flags & NORMALIZE) != 0:
        divisor = weight * agree
        divisor = tl.where(divisor == 0, 1.0, divisor)
        mixed = tl.math.div_rn(mixed, divisor)
    if scale != 1.0:
        mixed = mixed * scale
    result = f + mixed
    if (flags & BLEND) != 0:  # merge_tensors: torch.lerp(linear(f, m), result, method_weight)
        result = _lerp(_linear_part(f, m, mode, w0, w1, total), result, blend)
    tl.store(tl.multiple_of(out_ptr + index, 16), result.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _dare_merge_kernel(tensors, floats, chunks, factors, keeps, f_witness, m_witness, out_witness,
                       INT_ROW: tl.constexpr, FLOAT_ROW: tl.constexpr, BLOCK: tl.constexpr, PIECES: tl.constexpr,
                       SHIFT: tl.constexpr, DROP: tl.constexpr, RESCALE: tl.constexpr, NORMALIZE: tl.constexpr,
                       BLEND: tl.constexpr, TASK_VECTOR: tl.constexpr, SKIP: tl.constexpr, TASK_VECTORS: tl.constexpr,
                       KEEP_BITS: tl.constexpr, KEEP_BYTES: tl.constexpr):
    # one program = PIECES blocks of one tensor; floats: float32 rows (weight, scale, w0, w1, total, method weight).
    # TASK_VECTORS: this variant merges the rows with the TASK_VECTOR flag (DARE-TIES) and skips the others; else
    # the others, by `_linear_piece` and their linear mode (a parent's tensor copied, the linear merge), skipping
    # SKIP rows (a tensor this candidate keeps). Two compiled variants, so the copies and linear tensors do not
    # run in the registers DARE-TIES needs. KEEP_BITS: every dropping row's keep mask is in keeps (`_merge_block`)
    chunk = tl.program_id(0).to(tl.int64)
    t = tl.load(chunks + 2 * chunk).to(tl.int64)
    number = tl.load(chunks + 2 * chunk + 1).to(tl.int64)
    start = number * (BLOCK * PIECES)
    row = tensors + INT_ROW * t
    flags = tl.load(row + 8)
    mode = tl.load(row + 9)
    if TASK_VECTORS:
        active = (flags & TASK_VECTOR) != 0
    else:
        active = ((flags & TASK_VECTOR) == 0) & (mode != SKIP)
    if active:
        f_ptr = tl.load(row).to(tl.pointer_type(f_witness.dtype.element_ty))
        m_ptr = tl.load(row + 1).to(tl.pointer_type(m_witness.dtype.element_ty))
        out_ptr = tl.load(row + 2).to(tl.pointer_type(out_witness.dtype.element_ty))
        n = tl.load(row + 3)
        seed_low = tl.load(row + 5).to(tl.uint32)
        seed_high = tl.load(row + 6).to(tl.uint32)
        threshold = tl.load(row + 7).to(tl.int32)
        weight = tl.load(floats + FLOAT_ROW * t)
        scale = tl.load(floats + FLOAT_ROW * t + 1)
        w0 = tl.load(floats + FLOAT_ROW * t + 2)
        w1 = tl.load(floats + FLOAT_ROW * t + 3)
        total = tl.load(floats + FLOAT_ROW * t + 4)
        blend = tl.load(floats + FLOAT_ROW * t + 5)
        factor = tl.load(factors + t)
        keep_at = keeps + (tl.load(row + 4) + number) * KEEP_BYTES
        offsets = tl.arange(0, BLOCK).to(tl.int64)
        for piece in range(PIECES):
            first = start + piece * BLOCK
            keep_bytes = keep_at + piece * (BLOCK // 8)
            if first + BLOCK <= n:
                if TASK_VECTORS:
                    _merge_block(f_ptr, m_ptr, out_ptr, first + offsets, None, keep_bytes, seed_low, seed_high,
                                 threshold, flags, mode, factor, weight, scale, w0, w1, total, blend, SHIFT, DROP,
                                 RESCALE, NORMALIZE, BLEND, KEEP_BITS)
                else:
                    _linear_piece(f_ptr, m_ptr, out_ptr, first + offsets, None, mode, w0, w1, total)
            elif first < n:
                index = first + offsets
                if TASK_VECTORS:
                    _merge_block(f_ptr, m_ptr, out_ptr, index, index < n, keep_bytes, seed_low, seed_high, threshold,
                                 flags, mode, factor, weight, scale, w0, w1, total, blend, SHIFT, DROP, RESCALE,
                                 NORMALIZE, BLEND, KEEP_BITS)
                else:
                    _linear_piece(f_ptr, m_ptr, out_ptr, index, index < n, mode, w0, w1, total)


SUMS_BLOCK = 2048  # elements summed per block by the sums kernel (a power of two dividing MULTI_CHUNK)
SUMS_WARPS = 8
SUMS_JOINED = True  # both trees in one [2, N] tensor (one layout change per level) or one after the other
# The factor kernel's tree over a tensor's chunk sums, GROUP partials at a time (any power of two gives the same
# bits: aligned subtrees). 2048 with 8 warps and two inlined trees took 36–38 s to compile for sm_90 on the 2-core
# machine (65–75 s on the H200 hosts); 1024 with 4 warps and the one loop 2.1–2.5 s (bench/kernel_resources.py)
FACTOR_GROUP = 1024
FACTOR_WARPS = 4


def dare_ties_multi_cuda(fathers, mothers, outs, rows) -> list[torch.Tensor]:
    """outs[i] ← DARE-TIES of mothers[i]'s task vector on fathers[i] with rows[i] (a `fused_tables.DareRow`).

    Contiguous, 16-byte aligned CUDA tensors on one device, of one dtype per list (`fused.TensorBatch` groups them)."""
    if not outs:
        return list(outs)
    buffer, chunk_count = dare_tables(fathers, mothers, outs, rows)
    count, device = len(outs), outs[0].device
    with torch.cuda.device(device):
        table = _upload(buffer, device)
        chunks = table[count * (INT_ROW + FLOAT_ROW // 2):].view(torch.int32)
        scratch = torch.empty(scratch_size(count, chunk_count), dtype=torch.float32, device=device)
        flags = np.asarray([row.flags for row in rows], dtype=np.int64)
        kinds = RowKinds(bool(np.any(flags & DareFlag.RESCALE)), True, False, keep_bits(flags))
        launch_rows(table, count, chunks, chunk_count, chunk_count, scratch,
                    keep_buffer(chunk_count, device, kinds.rescales), kinds, (fathers[0], mothers[0], outs[0]))
    return list(outs)


def layout_launch(table, group, kinds: RowKinds, chunk_range: tuple[int, int]) -> None:
    """One candidate's rows for a `fused_layout.LayoutGroup`: its table up in one pinned copy, then the launches
    over the chunks in `chunk_range` (the tensors the candidate keeps are skipped by their rows). The chunks' |Δ|
    sums depend on the parents alone: made once per group (`_before_sums`), then only the kept sums are summed."""
    device = group.scratch.device
    low, high = chunk_range
    chunk_count = int(group.chunk_starts[-1])
    with torch.cuda.device(device):
        if kinds.rescales and group.befores is None:
            group.keeps = keep_buffer(chunk_count, device, True)
            group.befores = _before_sums(group, device)
        keeps = group.keeps if group.keeps is not None else keep_buffer(chunk_count, device, False)
        launch_rows(_upload(table, device), len(group.names), group.chunks[2 * low:2 * high], high - low,
                    chunk_count, group.scratch, keeps, kinds, group.witnesses, group.befores, low)


def _before_sums(group, device: torch.device) -> torch.Tensor:
    """Each chunk's |Δ| sum over every tensor of `group` (the first half of the sums kernel's chunk partials)."""
    count, chunk_count = len(group.names), int(group.chunk_starts[-1])
    table = group.template.copy()
    table[:count * INT_ROW].reshape(count, INT_ROW)[:, 8] = int(DareFlag.RESCALE)
    ints = _upload(table, device)[:count * INT_ROW]
    chunk_partials = _launch_sums(ints, group.chunks, chunk_count, count, chunk_count, group.scratch, group.keeps,
                                  group.witnesses, before=True)
    return chunk_partials[:chunk_count].clone()


def keep_buffer(chunk_count: int, device: torch.device, rescales: bool) -> torch.Tensor:
    """Where the sums kernel leaves the keep masks of `chunk_count` chunks for the merge kernel (KEEP_BYTES a
    chunk); a launch that rescales nothing reads none and gets a token buffer of the same dtype (one compiled
    variant)."""
    return torch.empty(max(chunk_count, 1) * KEEP_BYTES if rescales else 16, dtype=torch.uint8, device=device)


def _launch_sums(ints: torch.Tensor, chunks: torch.Tensor, chunk_count: int, count: int, table_chunks: int,
                 scratch: torch.Tensor, keeps: torch.Tensor, witnesses, *, before: bool) -> torch.Tensor:
    """The sums kernel over `chunk_count` chunk rows (both sums, or `before` False the kept ones only), the keep
    masks into `keeps`; returns the scratch's chunk partials (|Δ| sums first, |Δ·keep| sums `table_chunks` further
    on)."""
    pieces = MULTI_CHUNK // SUMS_BLOCK
    assert pieces <= SCRATCH_PIECES, "the scratch holds SCRATCH_PIECES block sums per chunk"
    all_chunks = max(table_chunks, 1)
    partials = scratch[count:count + 2 * all_chunks * SCRATCH_PIECES]
    chunk_partials = scratch[count + 2 * all_chunks * SCRATCH_PIECES:]
    if chunk_count:
        _dare_sums_kernel[(chunk_count,)](ints, chunks, partials, all_chunks * SCRATCH_PIECES, chunk_partials,
                                          all_chunks, keeps, witnesses[0], witnesses[1], INT_ROW=INT_ROW,
                                          BLOCK=SUMS_BLOCK, PIECES=pieces, LEVELS=SUMS_BLOCK.bit_length() - 1,
                                          PIECE_LEVELS=pieces.bit_length() - 1, SHIFT=SHIFT,
                                          RESCALE=int(DareFlag.RESCALE), JOINED=SUMS_JOINED, BEFORE=before,
                                          KEEP_BYTES=KEEP_BYTES, num_warps=SUMS_WARPS, enable_fp_fusion=False)
    return chunk_partials


def launch_factors(ints: torch.Tensor, count: int, chunk_partials: torch.Tensor, chunk_stride: int,
                   factors: torch.Tensor) -> None:
    """The factor kernel: `factors[t]` of each of `count` int64 rows from its chunk sums in `chunk_partials` (the
    |Δ| sums first, the |Δ·keep| sums `chunk_stride` further on)."""
    _dare_factor_kernel[(count,)](ints, chunk_partials, chunk_stride, factors, INT_ROW=INT_ROW, CHUNK=MULTI_CHUNK,
                                  GROUP=FACTOR_GROUP, LEVELS=FACTOR_GROUP.bit_length() - 1,
                                  RESCALE=int(DareFlag.RESCALE), EPS=RESCALE_EPS, num_warps=FACTOR_WARPS,
                                  enable_fp_fusion=False)


def launch_rows(table: torch.Tensor, count: int, chunks: torch.Tensor, chunk_count: int, table_chunks: int,
                scratch: torch.Tensor, keeps: torch.Tensor, kinds: RowKinds,
                witnesses: tuple[torch.Tensor, torch.Tensor, torch.Tensor], befores: torch.Tensor | None = None,
                first_chunk: int = 0) -> None:
    """The launches over `count` tensor rows on the current device: `table` holds the int64 rows (INT_ROW) and
    then the float32 rows (FLOAT_ROW), `chunks` the int32 chunk rows of `chunk_count` programs (some or all of the
    table's `table_chunks`, from chunk `first_chunk` on), `scratch` (float32, `fused_tables.scratch_size(count,
    table_chunks)`) the factors and the partial sums, `keeps` (`keep_buffer`) the keep masks of the rows that
    rescale; `kinds` says which launches any row needs (the sums and factors only for rows that rescale) and
    whether the merge reads the keep masks (`RowKinds.keep_bits`). `befores`: every chunk's |Δ| sum, known
    (`_before_sums`): copied in instead of summed again (the same bits: the same kernel over the same parents)."""
    ints, floats = table[:count * INT_ROW], table[count * INT_ROW:count * (INT_ROW + FLOAT_ROW // 2)]
    assert scratch.numel() >= scratch_size(count, table_chunks)
    factors = scratch[:count]
    chunk_stride = max(table_chunks, 1)
    rescale = int(DareFlag.RESCALE)
    f_witness, m_witness, out_witness = witnesses
    if kinds.rescales:
        chunk_partials = _launch_sums(ints, chunks, chunk_count, count, table_chunks, scratch, keeps, witnesses,
                                      before=befores is None)
        if befores is not None:
            span = slice(first_chunk, first_chunk + chunk_count)
            chunk_partials[span].copy_(befores[span])
        launch_factors(ints, count, chunk_partials, chunk_stride, factors)
    for task_vectors in (True, False):
        if chunk_count and (kinds.task_vectors if task_vectors else kinds.linear):
            _dare_merge_kernel[(chunk_count,)](ints, floats.view(torch.float32), chunks, factors, keeps, f_witness,
                                               m_witness, out_witness, INT_ROW=INT_ROW, FLOAT_ROW=FLOAT_ROW,
                                               BLOCK=BLOCK, PIECES=PIECES, SHIFT=SHIFT, DROP=int(DareFlag.DROP),
                                               RESCALE=rescale, NORMALIZE=int(DareFlag.NORMALIZE),
                                               BLEND=int(DareFlag.BLEND), TASK_VECTOR=int(DareFlag.TASK_VECTOR),
                                               SKIP=SKIP_MODE, TASK_VECTORS=task_vectors,
                                               KEEP_BITS=task_vectors and kinds.keep_bits, KEEP_BYTES=KEEP_BYTES,
                                               num_warps=8, enable_fp_fusion=False)
