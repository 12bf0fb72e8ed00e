"""DARE's keep mask in Triton: the same hash as `delta.keep_mask`, bit for bit, for the mask kernel here and the
fused DARE-TIES kernels (`_dare_triton`), which compute each element's keep in registers.

The torch version runs the 32-bit mixer as a dozen int64 kernels over 4-million-element chunks (int64 so that no
product overflows); here it runs in uint32, whose multiplication wraps modulo 2^32 exactly as the torch version's
`& 0xFFFFFFFF` does, at a fraction of the int64 instructions. Imported only for CUDA tensors and only when Triton
is installed; `delta.keep_mask` falls back to the torch version otherwise. `tests/test_gpu.py` checks the two
agree exactly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _mix32(x):
    # delta._mix32 on uint32 values: the products wrap modulo 2^32, the shifts are logical
    x = x ^ (x >> 16)
    x = x * tl.full(x.shape, 0x21F0AAAD, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, 0x735A2D97, tl.uint32)
    return x ^ (x >> 15)


@triton.jit
def _hash24(index, seed_low, seed_high, SHIFT: tl.constexpr):
    # delta.keep_mask's hash of the int64 element indices `index` under the uint32 seed halves, as int32
    low = (index & 4294967295).to(tl.uint32)
    high = (index >> 32).to(tl.uint32)
    x = _mix32(low ^ seed_low)
    x = _mix32(x ^ (high ^ seed_high))
    return (x >> SHIFT).to(tl.int32)


@triton.jit
def _keep(index, seed_low, seed_high, threshold, SHIFT: tl.constexpr):
    # the keep mask as float32 (1 kept, 0 dropped): hash < threshold (int32, density · 2^24)
    return (_hash24(index, seed_low, seed_high, SHIFT) < threshold).to(tl.float32)


@triton.jit(do_not_specialize=["n", "seed_low", "seed_high", "threshold"])
def _keep_mask_kernel(out_ptr, n, seed_low, seed_high, threshold, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    keep = _hash24(index, seed_low.to(tl.uint32), seed_high.to(tl.uint32), SHIFT) < threshold
    tl.store(out_ptr + index, keep.to(tl.int8), mask=index < n)


def keep_mask_cuda(n: int, threshold: int, seed_low: int, seed_high: int, bits: int, device: torch.device) -> torch.Tensor:
    """A flat bool mask of n elements on a CUDA device (see delta.keep_mask for the definition)."""
    out = torch.empty(n, dtype=torch.bool, device=device)
    if n:
        with torch.cuda.device(device):
            _keep_mask_kernel[(triton.cdiv(n, BLOCK),)](out.view(torch.int8), n, seed_low, seed_high, threshold,
                                                         SHIFT=32 - bits, BLOCK=BLOCK)
    return out
