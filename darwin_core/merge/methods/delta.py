"""Task-vector merging (mergekit's "generalized task arithmetic"), the one core behind task_arithmetic, TIES,
DARE-TIES, DARE-linear, breadcrumbs(_ties) and DELLA(-linear) (their sparsifiers live in their own modules).

For one tensor, with `base` = the common ancestor (or the father when the recipe's base is "father"):

    entries   = [father, mother]            (ancestor base)     or  [mother]   (base = father; its delta is 0)
    weights   = [s_f·(1 − ratio), s_m·ratio]                         [s_m·ratio]   (s = weight_signs, ±1)
    densities = [density_father, density_mother]                    [density_mother]
    delta_i   = sparsify(entry_i − base, density_i)   (magnitude top-k for TIES, Bernoulli for DARE, none for TA;
                                                    breadcrumbs' outlier band, DELLA's magnitude-ranked drop)
    delta_i  *= weight_i
    mask_i    = sign(delta_i) == sign-election(Σ delta_i)            (TIES/DARE-TIES only; zeros never agree)
    mixed     = Σ delta_i·mask_i
    mixed    /= Σ weight_i·mask_i   (0 → 1)                          (if normalize)
    child     = base + scale·mixed                                   (scale = mergekit's `lambda`)

This is mergekit 0.1.5's `GeneralizedTaskArithmeticMerge.merge_group` operation for operation, with one
deliberate difference: where DARE's random mask comes from.

mergekit draws `torch.bernoulli(full(density))` from torch's *global* RNG (seeded once by `--random-seed`), so a
tensor's mask depends on how many tensors were drawn before it (processing order, batching, threads), and on
the device (CPU and CUDA generators give different streams; on GPUs and for bfloat16 it even draws in the
tensor's dtype, so a density of 0.9617 becomes 0.9609). Darwin's mask is a pure function of
(seed, element index): `seed` comes from sha256(recipe_hash, tensor name, parent) (`Recipe.mask_seed`), and each
element gets a 24-bit uniform number u from a counter-based integer hash (two rounds of the "lowbias32" mixer,
computed with int64 arithmetic that never overflows); the element is kept when u < density·2^24. So a mask is

- reproducible and independent of processing order (each tensor's seed is its own),
- identical on CPU and GPU (integer arithmetic is exact on both), so the child the evolution scores on the GPU
  and the one `merge_to_disk` writes on a CPU drop the same entries (and differ at most by float rounding),
- fast on the GPU: a DARE-TIES candidate merge of two resident 1 GB bf16 parents ran at 6.5 GB/s of parent
  weights on an H100, against 0.3 GB/s with masks drawn by a CPU `torch.Generator` and 41 GB/s for linear
  (`bench/merge.py --device cuda`); on a CPU the hash costs about 6× a `torch.bernoulli` draw,
- nested across densities for one seed (the entries kept at density 0.5 are kept at 0.7 too). Note that
  `Recipe.mask_seed` derives the seed from the recipe hash, so a recipe with any other value also gets other
  masks.

With the same densities, mergekit's and Darwin's DARE children therefore differ where their masks differ;
with density 1 (no drop) they agree to float rounding, and so do all deterministic methods (tested).
Rescaling after DARE follows mergekit: the kept entries are scaled to restore the delta's L1 norm
(`rescale`, default on for DARE), not the paper's 1/density; both have the same expectation. The two L1 sums
are added in one fixed order (`pairwise_sum`) rather than torch's, so the factor has the same bits on a CPU,
on a GPU and in the fused kernels; mergekit's factor (torch's order) differs from it by float rounding.
TIES' magnitude pruning keeps k = max(1, int(density·numel)) entries of largest |delta|; mergekit breaks
ties among equal magnitudes by an unstable argsort, we keep the earliest ones (deterministic on every device).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from darwin_core.merge.methods.registry import MergeMethod, TensorParams, register, work_dtype

RESCALE_EPS = 1e-7


def pairwise_sum(values: torch.Tensor) -> torch.Tensor:
    """Σ values (float32, none negative) in one fixed order: the values zero-padded to a power of two, then
    adjacent pairs added, level by level, down to one (a 0-dim tensor).

    torch's own `sum` adds in an order of its implementation (another on a CPU, on a GPU, per tensor size), so a
    fused kernel cannot give its bits; this order is a definition that every device and kernel repeats exactly:
    each addition is one IEEE operation, and the tree over any aligned power-of-two block is a subtree of it, so a
    GPU kernel sums its blocks and then the blocks' sums (`_dare_triton`) and gets the same bits."""
    x = values.reshape(-1)
    n = x.numel()
    if n <= PAIRWISE_BLOCK:  # one small block, padded to a power of two
        size = 1 << max(n - 1, 0).bit_length()
        if x.device.type == "cpu":  # numpy's float32 additions are the same IEEE additions, at less per call
            padded = np.zeros(size, dtype=x.numpy().dtype)
            padded[:n] = x.numpy()
            return torch.from_numpy(_pairwise_levels(padded)).reshape(())
        return _pairwise_levels(torch.nn.functional.pad(x, (0, size - n)))[0]
    whole = n - n % PAIRWISE_BLOCK
    blocks = x[:whole].view(-1, PAIRWISE_BLOCK)  # aligned blocks, a level at a time over all of them: a view
    while blocks.shape[1] > 1:
        blocks = blocks[:, 0::2] + blocks[:, 1::2]
    sums = blocks.reshape(-1)
    if whole < n:  # the last, partial block, zero-padded
        tail = torch.nn.functional.pad(x[whole:], (0, PAIRWISE_BLOCK - (n - whole)))
        sums = torch.cat((sums, pairwise_sum(tail).reshape(1)))
    return _pairwise_levels(sums)[0]


PAIRWISE_BLOCK = 1 << 16  # how `pairwise_sum` splits the work (any power of two gives the same bits)


def _pairwise_levels(x):
    """Adjacent pairs added level by level (an odd level padded with a zero) down to one value, shape (1,);
    `x` a 1-D torch tensor or numpy array."""
    while x.shape[0] > 1:
        if x.shape[0] % 2:
            x = np.append(x, x.dtype.type(0)) if isinstance(x, np.ndarray) else torch.nn.functional.pad(x, (0, 1))
        x = x[0::2] + x[1::2]
    return x


def l1_sum(values: torch.Tensor) -> torch.Tensor:
    return values.abs().sum()


def rescale_l1(delta: torch.Tensor, masked: torch.Tensor, total: Callable[[torch.Tensor], torch.Tensor] = l1_sum
               ) -> torch.Tensor:
    """`masked` scaled so its L1 norm matches `delta`'s (mergekit's RescaleNorm.l1), unless either is ~0;
    `total` sums the magnitudes (`l1_sum`: torch's order, as mergekit; DARE passes its fixed order)."""
    before = total(delta)
    after = total(masked)
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked * (before / after)


def magnitude_prune(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep the k = max(1, int(density·n)) entries of largest magnitude (earliest first among equal ones)."""
    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    magnitudes = delta.abs().reshape(-1)
    threshold = torch.kthvalue(magnitudes, n - k + 1).values
    above = magnitudes > threshold
    at = magnitudes == threshold
    missing = k - int(above.sum())
    keep = above | (at & (torch.cumsum(at, 0) <= missing))
    masked = delta * keep.reshape(delta.shape).to(delta.dtype)
    return rescale_l1(delta, masked) if rescale else masked


_M32 = 0xFFFFFFFF
_MASK_BITS = 24
_CHUNK = 1 << 22  # elements per pass: bounds the int64 scratch (≈100 MB) whatever the tensor size; divides 2^32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A full-avalanche bijection of 32-bit integers (lowbias32 with the constants 0x21f0aaad / 0x735a2d97 from
    C. Wellons' hash-prospector), in int64 arithmetic: x < 2^32 and both constants < 2^31, so no product
    reaches 2^63 and the result is exact on every device."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def keep_mask(shape: torch.Size | tuple[int, ...], density: float, seed: int, device: torch.device | str) -> torch.Tensor:
    """A bool mask with P(True) = density: element i is kept when hash(seed, i) < density·2^24.

    hash(seed, i) = mix32(mix32((i mod 2^32) XOR seed_low) XOR (i div 2^32) XOR seed_high), top 24 bits.
    A pure function of (shape, density, seed), bit-identical on every device; nested across densities.
    """
    shape = tuple(shape)
    n = 1
    for d in shape:
        n *= d
    device = torch.device(device)
    threshold = int(density * (1 << _MASK_BITS))
    seed_low, seed_high = seed & _M32, (seed >> 32) & _M32
    if device.type == "cuda":
        try:
            from darwin_core.merge.methods._mask_triton import keep_mask_cuda
        except ImportError:  # no Triton: the torch version below gives the same bits, more slowly
            pass
        else:
            return keep_mask_cuda(n, threshold, seed_low, seed_high, _MASK_BITS, device).reshape(shape)
    out = torch.empty(n, dtype=torch.bool, device=device)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out[start:stop] = _hash24_chunk(start, stop, seed_low, seed_high, device) < threshold
    return out.reshape(shape)


def _hash24_chunk(start: int, stop: int, seed_low: int, seed_high: int, device: torch.device) -> torch.Tensor:
    """The 24-bit hashes of elements start..stop−1 (int64); a chunk never crosses a multiple of 2^32."""
    low = start & _M32
    x = _mix32(torch.arange(low, low + stop - start, dtype=torch.int64, device=device) ^ seed_low)
    x = _mix32(x ^ ((start >> 32) ^ seed_high))
    return x >> (32 - _MASK_BITS)


def hash24(n: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """The 24-bit counter hash of elements 0..n−1 under `seed` (see `keep_mask`), as int32: a uniform number
    per element that is the same on every device, for masks with per-element probabilities (DELLA)."""
    device = torch.device(device)
    seed_low, seed_high = seed & _M32, (seed >> 32) & _M32
    out = torch.empty(n, dtype=torch.int32, device=device)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out[start:stop] = _hash24_chunk(start, stop, seed_low, seed_high, device)
    return out


def dare_drop(delta: torch.Tensor, density: float, rescale: bool, seed: int) -> torch.Tensor:
    """DARE's random drop: keep each entry with probability `density`, then (optionally) restore the L1 norm."""
    if density >= 1:
        return delta
    masked = delta * keep_mask(delta.shape, density, seed, delta.device)
    return rescale_l1(delta, masked, fixed_order_l1) if rescale else masked


def fixed_order_l1(values: torch.Tensor) -> torch.Tensor:
    """The L1 norm summed in `pairwise_sum`'s order: DARE's rescale then has the same bits on a CPU, through
    torch on a GPU and in the fused kernels (which cannot repeat torch's own order)."""
    return pairwise_sum(values.abs())


Sparsifier = Callable[[torch.Tensor, float, bool, TensorParams, int], torch.Tensor]
"""(delta, density, rescale, params, mask seed) -> the sparsified delta (a new tensor or `delta` itself)."""


def _magnitude(delta: torch.Tensor, density: float, rescale: bool, params: TensorParams, seed: int) -> torch.Tensor:
    return magnitude_prune(delta, density, rescale)


def _random(delta: torch.Tensor, density: float, rescale: bool, params: TensorParams, seed: int) -> torch.Tensor:
    return dare_drop(delta, density, rescale, seed)


BUILTIN_SPARSIFIERS: dict[str, Sparsifier] = {"magnitude": _magnitude, "random": _random}


def task_vector_merge(
    father: torch.Tensor,
    mother: torch.Tensor,
    base: torch.Tensor | None,
    params: TensorParams,
    *,
    sparsify: Sparsifier | None,
    consensus: bool,
    default_normalize: bool,
    default_rescale: bool,
) -> torch.Tensor:
    """The shared core; see the module docstring for the exact formula. A parent's weight is multiplied by
    its `weight_signs` entry (−1: that task vector enters negatively), as a negative mergekit `weight`."""
    dtype = work_dtype(father)
    normalize = default_normalize if params.normalize is None else params.normalize
    rescale = default_rescale if params.rescale is None else params.rescale
    sign_father, sign_mother = params.weight_signs
    if base is None:
        base_t = father.to(dtype)
        entries = [(mother, sign_mother * params.ratio, params.density_mother, params.mask_seeds[1])]
    else:
        base_t = base.to(dtype)
        entries = [
            (father, sign_father * (1.0 - params.ratio), params.density_father, params.mask_seeds[0]),
            (mother, sign_mother * params.ratio, params.density_mother, params.mask_seeds[1]),
        ]

    deltas: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for tensor, weight, density, seed in entries:
        delta = tensor.to(dtype) - base_t
        if sparsify is not None:
            delta = sparsify(delta, density, rescale, params, seed)
        w = torch.tensor(weight, dtype=dtype, device=delta.device)
        delta.mul_(w)  # delta is always a fresh tensor here, never a parent's storage
        deltas.append(delta)
        weights.append(w)

    if consensus:
        election = deltas[0] if len(deltas) == 1 else deltas[0] + deltas[1]
        positive = election >= 0
        del election
        mixed = None
        divisor = None
        for delta, w in zip(deltas, weights):
            agree = torch.where(positive, delta > 0, delta < 0)
            part = delta * agree
            mixed = part if mixed is None else mixed.add_(part)
            share = w * agree
            divisor = share if divisor is None else divisor.add_(share)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas[0] if len(deltas) == 1 else deltas[0] + deltas[1]
        divisor = weights[0] if len(weights) == 1 else weights[0] + weights[1]
        if divisor.abs() < 1e-8:
            divisor = torch.ones_like(divisor)
    if normalize:
        mixed = mixed / divisor
    if params.scale != 1:
        mixed = mixed * params.scale
    return base_t + mixed


ModelOptions = Callable[[TensorParams, float], dict[str, float]]
"""(params, one model's density) -> that model's mergekit options (e.g. DELLA's epsilon for that density)."""


def mergekit_delta_params(params: TensorParams, defaults: Mapping[str, bool], *, with_density: bool,
                          options: tuple[str, ...] = (), model_options: ModelOptions | None = None):
    """The mergekit parameters of one tensor for any task-vector method (TA, TIES, DARE, breadcrumbs, DELLA):
    weights with their signs, densities, and the per-model options (`gamma`, `epsilon`) the method reads."""
    shared = {
        "normalize": defaults["normalize"] if params.normalize is None else params.normalize,
        "rescale": defaults["rescale"] if params.rescale is None else params.rescale,
        "lambda": params.scale,
    }
    father = {"weight": params.weight_signs[0] * (1.0 - params.ratio)}
    mother = {"weight": params.weight_signs[1] * params.ratio}
    if with_density:
        father["density"] = params.density_father
        mother["density"] = params.density_mother
    for model, density in ((father, params.density_father), (mother, params.density_mother)):
        if model_options is not None:
            model.update(model_options(params, density))
        else:
            model.update({option: getattr(params, option) for option in options})
    return shared, {"father": father, "mother": mother}


def register_task_vector_method(name: str, summary: str, *, sparsification: str | None, consensus: bool,
                                normalize: bool, rescale: bool, whole_tensor_step: str | None = None,
                                genome_normalize: bool | None = None, sparsifier: Sparsifier | None = None,
                                options: tuple[str, ...] = (), model_options: ModelOptions | None = None,
                                random_masks: bool | None = None) -> MergeMethod:
    """Register one task-vector method: `task_vector_merge` with its sparsification, sign election and
    mergekit defaults, and the same method's mergekit name and parameters. Returns the MergeMethod.

    `sparsification` names the sparsifier (mergekit's name: "magnitude", "random", or a method's own, which
    then passes it as `sparsifier`); `options` are the further `TensorParams` fields it reads and exports
    per model (breadcrumbs' `gamma`, DELLA's `epsilon`; `model_options` computes their values per model where
    they depend on its density). The parameters it reads follow: every task-vector
    method reads the ratio (its weights), their signs, `normalize` and `scale`; sparsifying ones also the
    densities and `rescale`, random ones the mask seeds."""
    defaults = {"normalize": normalize, "rescale": rescale}
    sparsify = sparsifier if sparsifier is not None else BUILTIN_SPARSIFIERS.get(sparsification or "")
    if sparsification is not None and sparsify is None:
        raise ValueError(f"merge method {name!r}: unknown sparsification {sparsification!r}")
    random_masks = sparsification == "random" if random_masks is None else random_masks
    parameters = ("ratio", "weight_signs", "normalize", "scale")
    if sparsification is not None:
        parameters += ("density_father", "density_mother", "rescale")
    if random_masks:
        parameters += ("mask_seeds",)
    parameters += options

    def kernel(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None, params: TensorParams) -> torch.Tensor:
        return task_vector_merge(father, mother, base, params, sparsify=sparsify, consensus=consensus,
                                 default_normalize=normalize, default_rescale=rescale)

    kernel.__name__ = kernel.__qualname__ = str(name)
    kernel.__doc__ = summary
    with_density = sparsification is not None
    return register(MergeMethod(
        name=name, kernel=kernel, summary=summary, parameters=parameters, delta=True, default_normalize=normalize,
        default_rescale=rescale, genome_normalize=genome_normalize, whole_tensor_step=whole_tensor_step,
        mergekit_name=name,
        mergekit_params=lambda p: mergekit_delta_params(p, defaults, with_density=with_density, options=options,
                                                        model_options=model_options),
        mergekit_base=True, random_masks=random_masks,
    ))
