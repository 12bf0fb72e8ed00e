"""One-pass GPU kernels for the candidate merge: parents in their dtype in, the child in its dtype out.

Each kernel repeats, element by element and in the same order, the float32 operations of its reference kernel
(`linear.linear`; DARE-TIES is `_dare_triton`), so the child's bytes are the reference's: `tests/test_gpu.py`
compares them. What changes is the traffic: the reference writes and reads a float32 temporary per operation
(about 40 bytes per element for linear); these read each parent once and write the child once (6 bytes per bf16
element). Imported only for CUDA tensors and only when Triton is installed (`darwin_core.merge.methods.fused`
falls back to the reference otherwise).

Rounding: PyTorch's CUDA `addcmul` computes `a + alpha·b·c`, which nvcc contracts into one fused multiply-add,
so the linear kernel uses `tl.fma` for those two steps; every other step of the references is a kernel of its
own (no contraction), so the kernels are launched with `enable_fp_fusion=False` and divide with `div_rn`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from darwin_core.merge.methods.fused_tables import BLOCK, MULTI_CHUNK, linear_tables

PIECES = MULTI_CHUNK // BLOCK  # a program of the multi-tensor linear kernel merges PIECES blocks of one tensor


@triton.jit(do_not_specialize=["n", "w0", "w1", "total"])
def _linear_kernel(f_ptr, m_ptr, out_ptr, n, w0, w1, total, FMA: tl.constexpr, DIVIDE: tl.constexpr,
                   BLOCK: tl.constexpr):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    f = tl.load(f_ptr + index, mask=inside).to(tl.float32)
    m = tl.load(m_ptr + index, mask=inside).to(tl.float32)
    if FMA:  # zeros.addcmul_(father, w0).addcmul_(mother, w1)
        r = tl.fma(f, w0, 0.0)
        r = tl.fma(m, w1, r)
    else:
        r = f * w0 + 0.0
        r = r + m * w1
    if DIVIDE:  # .div_(w0 + w1)
        r = tl.math.div_rn(r, total)
    tl.store(out_ptr + index, r.to(out_ptr.dtype.element_ty), mask=inside)


def linear_cuda(father: torch.Tensor, mother: torch.Tensor, w0: float, w1: float, total: float,
                out: torch.Tensor, *, fma: bool = True) -> torch.Tensor:
    """`out` (any float dtype) ← ((0 + f·w0) + m·w1) / total in float32, total = 1 skipping the division."""
    n = father.numel()
    if n:
        with torch.cuda.device(father.device):
            _linear_kernel[(triton.cdiv(n, BLOCK),)](father, mother, out, n, w0, w1, total, FMA=fma,
                                                     DIVIDE=total != 1.0, BLOCK=BLOCK, enable_fp_fusion=False)
    return out


@triton.jit
def _linear_part(f, m, mode, w0, w1, total):
    # linear.linear: the father (mode 0), the mother (1), or zeros.addcmul_(f, w0).addcmul_(m, w1).div_(total)
    if mode == 0:
        r = f
    elif mode == 1:
        r = m
    else:
        r = tl.math.div_rn(tl.fma(m, w1, tl.fma(f, w0, 0.0)), total)
    return r


@triton.jit
def _lerp(start, end, weight):
    # torch.lerp(start, end, weight) on CUDA: nvcc contracts both branches of at::lerp into one FMA
    diff = end - start
    if tl.abs(weight) < 0.5:
        r = tl.fma(tl.zeros_like(diff) + weight, diff, start)
    else:
        r = tl.fma(-diff, 1.0 - weight, end)
    return r


@triton.jit
def _linear_piece(f_ptr, m_ptr, out_ptr, index, inside, mode, w0, w1, total):
    # `_linear_part` on one block, reading only the parent a copy needs (mode 0/1); inside: the tail's mask, None
    # for a whole block. The 16-byte alignment hints are true (the caller batches only 16-byte aligned
    # tensors, blocks start at multiples of BLOCK): without them pointers read from a table get scalar accesses
    f_at = tl.multiple_of(f_ptr + index, 16)
    m_at = tl.multiple_of(m_ptr + index, 16)
    if mode == 0:
        r = tl.load(f_at, mask=inside).to(tl.float32)
    elif mode == 1:
        r = tl.load(m_at, mask=inside).to(tl.float32)
    else:
        f = tl.load(f_at, mask=inside).to(tl.float32)
        m = tl.load(m_at, mask=inside).to(tl.float32)
        r = tl.math.div_rn(tl.fma(m, w1, tl.fma(f, w0, 0.0)), total)  # x / 1.0 is exact: always dividing is safe
    tl.store(tl.multiple_of(out_ptr + index, 16), r.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit(do_not_specialize_on_alignment=["weights", "chunks"])
def _linear_multi_kernel(tensors, weights, chunks, f_witness, m_witness, out_witness, BLOCK: tl.constexpr,
                         PIECES: tl.constexpr):
    # one program = PIECES blocks of one tensor; tensors: int64 rows (father, mother, out address, numel, mode),
    # weights: float32 rows (w0, w1, total, unused), chunks: int32 rows (tensor row, chunk number in it); the
    # witnesses are the first tensors of each list, for the element types the addresses point to; the weights' and
    # chunks' slices of the table are 16-byte aligned for an even tensor count only, and are read a scalar at a
    # time: not specialised on alignment, so a batch's parity does not compile a second variant
    chunk = tl.program_id(0).to(tl.int64)
    t = tl.load(chunks + 2 * chunk).to(tl.int64)
    start = tl.load(chunks + 2 * chunk + 1).to(tl.int64) * (BLOCK * PIECES)
    f_ptr = tl.load(tensors + 5 * t).to(tl.pointer_type(f_witness.dtype.element_ty))
    m_ptr = tl.load(tensors + 5 * t + 1).to(tl.pointer_type(m_witness.dtype.element_ty))
    out_ptr = tl.load(tensors + 5 * t + 2).to(tl.pointer_type(out_witness.dtype.element_ty))
    n = tl.load(tensors + 5 * t + 3)
    mode = tl.load(tensors + 5 * t + 4)
    w0 = tl.load(weights + 4 * t)
    w1 = tl.load(weights + 4 * t + 1)
    total = tl.load(weights + 4 * t + 2)
    offsets = tl.arange(0, BLOCK).to(tl.int64)
    for piece in range(PIECES):
        first = start + piece * BLOCK
        if first + BLOCK <= n:  # a whole block: no bounds mask, so the accesses stay vectorised
            _linear_piece(f_ptr, m_ptr, out_ptr, first + offsets, None, mode, w0, w1, total)
        elif first < n:
            index = first + offsets
            _linear_piece(f_ptr, m_ptr, out_ptr, index, index < n, mode, w0, w1, total)


STAGING_SLOTS = 32  # pinned table buffers per device, used in turn: the host runs up to this many launches ahead
STAGING_SLOT = 1 << 16  # int64 per buffer (a batch of 48 tensors of 25M elements needs 37k)


class _StagingRing:
    """Pinned host buffers for the kernels' tables, used in turn, each with the event of the copy out of it.

    A new table waits only for the copy made STAGING_SLOTS uploads ago. With one buffer, each upload waited for
    the previous one, which the stream runs only after every kernel launched before it: the host could not
    plan a batch while the GPU merged the last (a DARE-TIES candidate took 18 ms for 4.5 ms of kernels and
    4.9 ms of host work). The buffers are views of one pinned allocation (a pinned allocation costs
    milliseconds; one per upload would cost more than the copy)."""

    def __init__(self):
        arena = torch.empty(STAGING_SLOTS * STAGING_SLOT, dtype=torch.int64, pin_memory=True)
        self.slots: list[tuple[torch.Tensor, torch.cuda.Event | None]] = [
            (arena[k * STAGING_SLOT:(k + 1) * STAGING_SLOT], None) for k in range(STAGING_SLOTS)]
        self.turn = 0

    def upload(self, buffer, device: torch.device) -> torch.Tensor:
        staging, done = self.slots[self.turn]
        if done is not None:
            done.synchronize()
        if staging.numel() < len(buffer):  # a table bigger than a slot: this slot grows for good
            staging = torch.empty(len(buffer), dtype=torch.int64, pin_memory=True)
        staging[:len(buffer)].numpy()[:] = buffer
        table = staging[:len(buffer)].to(device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(device))
        self.slots[self.turn] = (staging, done)
        self.turn = (self.turn + 1) % STAGING_SLOTS
        return table


_STAGING: dict[torch.device, _StagingRing] = {}


def _upload(buffer, device: torch.device) -> torch.Tensor:
    """`buffer` (int64) on `device` by one asynchronous copy through the device's `_StagingRing`."""
    ring = _STAGING.get(device)
    if ring is None:
        ring = _STAGING[device] = _StagingRing()
    return ring.upload(buffer, device)


def linear_multi_cuda(fathers, mothers, outs, weights) -> list[torch.Tensor]:
    """`linear_cuda` (or the exact copy of ratio 0 / 1) for many tensors in one launch: outs[i] ← the linear
    merge of fathers[i] and mothers[i] by weights[i] = (mode, w0, w1, total) of `fused_tables.linear_weights`.

    Contiguous, 16-byte aligned CUDA tensors on one device, of one dtype per list; the tables travel in one
    pinned host → device copy."""
    if not outs:
        return list(outs)
    buffer, count = linear_tables(fathers, mothers, outs, weights)
    if count:
        tensors = len(outs)
        device = outs[0].device
        with torch.cuda.device(device):
            table = _upload(buffer, device)
            _linear_multi_kernel[(count,)](table[:tensors * 5], table[tensors * 5:tensors * 7].view(torch.float32),
                                           table[tensors * 7:].view(torch.int32), fathers[0], mothers[0], outs[0],
                                           BLOCK=BLOCK, PIECES=PIECES, num_warps=8, enable_fp_fusion=False)
    return list(outs)
