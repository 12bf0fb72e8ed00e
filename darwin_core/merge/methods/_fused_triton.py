"""One-pass GPU kernels for the candidate merge: parents in their dtype in, the child in its dtype out.

Each kernel repeats, element by element and in the same order, the float32 operations of its reference kernel
(`linear.linear`, `delta.task_vector_merge` for DARE-TIES with the father as base), so the child's bytes are
the reference's: `tests/test_gpu.py` compares them. What changes is the traffic: the reference writes and reads
a float32 temporary per operation (about 40 bytes per element for linear); these read each parent once and
write the child once (6 bytes per bf16 element). Imported only for CUDA tensors and only when Triton is
installed (`darwin_core.merge.methods.fused` falls back to the reference otherwise).

Rounding: PyTorch's CUDA `addcmul` computes `a + alpha·b·c`, which nvcc contracts into one fused multiply-add,
so the linear kernel uses `tl.fma` for those two steps; every other step of the references is a kernel of its
own (no contraction), so the kernels are launched with `enable_fp_fusion=False` and divide with `div_rn`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from darwin_core.merge.methods._mask_triton import _mix32

BLOCK = 2048


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


@triton.jit
def _linear_part(f, m, w0, w1, total, MODE: tl.constexpr):
    # linear.linear: the father (MODE 0), the mother (MODE 1), or zeros.addcmul_(f, w0).addcmul_(m, w1).div_(total)
    if MODE == 0:
        return f
    elif MODE == 1:
        return m
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


@triton.jit(do_not_specialize=["n", "seed_low", "seed_high", "threshold", "weight", "scale", "w0", "w1", "total", "blend"])
def _dare_ties_kernel(f_ptr, m_ptr, factor_ptr, out_ptr, n, seed_low, seed_high, threshold, weight, scale,
                      w0, w1, total, blend, SHIFT: tl.constexpr, DROP: tl.constexpr, RESCALE: tl.constexpr,
                      NORMALIZE: tl.constexpr, SCALE: tl.constexpr, BLEND: tl.constexpr, LINEAR_MODE: tl.constexpr,
                      BLOCK: tl.constexpr):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    f = tl.load(f_ptr + index, mask=inside).to(tl.float32)
    m = tl.load(m_ptr + index, mask=inside).to(tl.float32)
    delta = m - f
    if DROP:  # dare_drop: delta * keep_mask, then (rescale) * (before / after)
        x = _mix32((index & 4294967295) ^ seed_low.to(tl.int64))
        x = _mix32(x ^ ((index >> 32) ^ seed_high.to(tl.int64)))
        keep = ((x >> SHIFT) < threshold.to(tl.int64)).to(tl.float32)
        delta = delta * keep
        if RESCALE:
            delta = delta * tl.load(factor_ptr)
    delta = delta * weight
    agree = tl.where(delta >= 0, delta > 0, delta < 0).to(tl.float32)  # one task vector: its own sign elects
    mixed = delta * agree
    if NORMALIZE:
        divisor = weight * agree
        divisor = tl.where(divisor == 0, 1.0, divisor)
        mixed = tl.math.div_rn(mixed, divisor)
    if SCALE:
        mixed = mixed * scale
    result = f + mixed
    if BLEND:  # merge_tensors: torch.lerp(linear(f, m), result, method_weight)
        result = _lerp(_linear_part(f, m, w0, w1, total, LINEAR_MODE), result, blend)
    tl.store(out_ptr + index, result.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit(do_not_specialize=["n", "seed_low", "seed_high", "threshold"])
def _dare_magnitudes_kernel(f_ptr, m_ptr, whole_ptr, kept_ptr, n, seed_low, seed_high, threshold,
                            SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    # |delta| and |delta * keep_mask| in float32, delta = float(m) - float(f): the two tensors whose torch sums
    # are DARE's L1 rescale (`delta.rescale_l1`), written in one pass instead of a chain of float32 temporaries
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    delta = tl.load(m_ptr + index, mask=inside).to(tl.float32) - tl.load(f_ptr + index, mask=inside).to(tl.float32)
    x = _mix32((index & 4294967295) ^ seed_low.to(tl.int64))
    x = _mix32(x ^ ((index >> 32) ^ seed_high.to(tl.int64)))
    keep = ((x >> SHIFT) < threshold.to(tl.int64)).to(tl.float32)
    tl.store(whole_ptr + index, tl.abs(delta), mask=inside)
    tl.store(kept_ptr + index, tl.abs(delta * keep), mask=inside)


def dare_magnitudes_cuda(father: torch.Tensor, mother: torch.Tensor, drop: tuple[int, int, int, int]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(|m − f|, |(m − f)·keep|) as float32 tensors of the parents' shape, for the reference's own torch sums."""
    whole = torch.empty(father.shape, dtype=torch.float32, device=father.device)
    kept = torch.empty_like(whole)
    n = father.numel()
    if n:
        seed_low, seed_high, threshold, bits = drop
        with torch.cuda.device(father.device):
            _dare_magnitudes_kernel[(triton.cdiv(n, BLOCK),)](father, mother, whole, kept, n, seed_low, seed_high,
                                                              threshold, SHIFT=32 - bits, BLOCK=BLOCK,
                                                              enable_fp_fusion=False)
    return whole, kept


def linear_cuda(father: torch.Tensor, mother: torch.Tensor, w0: float, w1: float, total: float,
                out: torch.Tensor, *, fma: bool = True) -> torch.Tensor:
    """`out` (any float dtype) ← ((0 + f·w0) + m·w1) / total in float32, total = 1 skipping the division."""
    n = father.numel()
    if n:
        with torch.cuda.device(father.device):
            _linear_kernel[(triton.cdiv(n, BLOCK),)](father, mother, out, n, w0, w1, total, FMA=fma,
                                                     DIVIDE=total != 1.0, BLOCK=BLOCK, enable_fp_fusion=False)
    return out


def dare_ties_cuda(father: torch.Tensor, mother: torch.Tensor, out: torch.Tensor, *, factor: torch.Tensor | None,
                   drop: tuple[int, int, int, int] | None, weight: float, normalize: bool, scale: float,
                   blend: tuple[float, int, float, float, float] | None = None) -> torch.Tensor:
    """`out` ← DARE-TIES of the mother's task vector on the father (see the module docstring).

    drop: (seed_low, seed_high, threshold, mask bits), None for density 1 (nothing dropped, no rescale);
    factor: a one-element float32 device tensor (before / after, or 1), None without rescale;
    blend: (method weight, linear mode 0/1/2 = father/mother/weighted, w0, w1, total) to lerp from linear."""
    n = father.numel()
    if n:
        seed_low, seed_high, threshold, bits = drop if drop is not None else (0, 0, 0, 24)
        factor_arg = factor if factor is not None else out  # never read when RESCALE is off
        method_weight, mode, w0, w1, total = blend if blend is not None else (1.0, 2, 0.5, 0.5, 1.0)
        with torch.cuda.device(father.device):
            _dare_ties_kernel[(triton.cdiv(n, BLOCK),)](
                father, mother, factor_arg, out, n, seed_low, seed_high, threshold, weight, scale, w0, w1, total,
                method_weight, SHIFT=32 - bits, DROP=drop is not None, RESCALE=drop is not None and factor is not None,
                NORMALIZE=normalize, SCALE=scale != 1.0, BLEND=blend is not None, LINEAR_MODE=mode, BLOCK=BLOCK,
                enable_fp_fusion=False)
    return out
