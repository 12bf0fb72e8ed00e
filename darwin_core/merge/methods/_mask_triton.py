"""DARE's keep mask as one fused GPU kernel: the same hash as `delta.keep_mask`, bit for bit.

The torch version runs the 32-bit mixer as a dozen int64 kernels over 4-million-element chunks; here each
element's hash is computed in registers and only the mask byte is written. Imported only for CUDA tensors and
only when Triton is installed; `delta.keep_mask` falls back to the torch version otherwise.
`tests/test_gpu.py` checks the two agree exactly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _mix32(x):
    # delta._mix32 in int64: x < 2^32 and both constants < 2^31, so no product overflows.
    x = x ^ (x >> 16)
    x = (x * 569420461) & 4294967295  # 0x21F0AAAD
    x = x ^ (x >> 15)
    x = (x * 1935289751) & 4294967295  # 0x735A2D97
    return x ^ (x >> 15)


@triton.jit(do_not_specialize=["n", "seed_low", "seed_high", "threshold"])
def _keep_mask_kernel(out_ptr, n, seed_low, seed_high, threshold, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    x = _mix32((index & 4294967295) ^ seed_low.to(tl.int64))
    x = _mix32(x ^ ((index >> 32) ^ seed_high.to(tl.int64)))
    keep = (x >> SHIFT) < threshold.to(tl.int64)
    tl.store(out_ptr + index, keep.to(tl.int8), mask=index < n)


def keep_mask_cuda(n: int, threshold: int, seed_low: int, seed_high: int, bits: int, device: torch.device) -> torch.Tensor:
    """A flat bool mask of n elements on a CUDA device (see delta.keep_mask for the definition)."""
    out = torch.empty(n, dtype=torch.bool, device=device)
    if n:
        with torch.cuda.device(device):
            _keep_mask_kernel[(triton.cdiv(n, BLOCK),)](out.view(torch.int8), n, seed_low, seed_high, threshold,
                                                         SHIFT=32 - bits, BLOCK=BLOCK)
    return out
