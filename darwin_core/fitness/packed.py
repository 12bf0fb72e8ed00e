"""Log-likelihoods on an accelerator with each item's context and all its choices packed into one row segment.

Why: the shared-context path (`loglikelihood._score_shared_contexts`) runs a context once, then copies its KV
cache for every choice row and runs a second, narrow forward; on an H200 those copies, concatenations and the
per-operation element-wise kernels around small matrices took most of the GPU time (docs/benchmarks.md). Here
the same positions run in one forward of full rows: a segment is `ctx[:-1]` followed by each distinct
`[ctx[-1], *cont[:-1]]`, with position ids that continue the context in every branch and a tree attention mask
(a branch sees its context and itself, never another branch or another segment). Each logit is therefore the
one the shared path computes (equal in exact arithmetic: `tests/test_packed_scoring.py` in float64); the LM head
runs only at the positions that are scored. Segments are packed first-fit into rows of `PACK_WIDTH` tokens.

Only decoders whose attention is the plain causal kind take a custom 4-D mask unchanged (no sliding window, no
recurrent state, no logit soft-capping): `packable` names them; every other model keeps the shared path. On CUDA
in half precision the decoder layers are compiled once (`torch.compile` with dynamic shapes, one graph the
layers share), which fuses the norms, rotary embedding and activations between the matrix products.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from darwin_core.fitness.gather import _gather_sums, _read_gathered

PACK_WIDTH = 1024  # tokens per packed row (a longer segment gets a row of its own length, rounded up)
WIDTH_STEP = 128
PACKABLE_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "qwen3_moe"})
PACKABLE_ATTENTION = frozenset({"sdpa", "eager"})
# Devices whose half-precision decoder layers are compiled before packed scoring (a bench turns it off to compare).
COMPILE_LAYERS: dict[str, bool] = {"cuda": True}
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()

Group = tuple[list[int], list[tuple[int, list[int]]]]  # (context tokens, [(request index, continuation tokens)])


@dataclass
class Segment:
    """One item's positions: the context's prefix (branch 0), then one branch per distinct continuation row."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    branches: list[int] = field(default_factory=list)
    reads: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (request, first scored offset, cont)


def segment_of(ctx: list[int], conts: list[tuple[int, list[int]]]) -> Segment:
    """The packed layout of one context and its continuations (what `_score_shared_contexts` runs, in one row)."""
    segment = Segment(list(ctx[:-1]), list(range(len(ctx) - 1)), [0] * (len(ctx) - 1))
    starts: dict[tuple[int, ...], int] = {}
    for index, cont in conts:
        key = tuple(cont[:-1])
        if key not in starts:
            starts[key] = len(segment.tokens)
            branch = [ctx[-1], *cont[:-1]]
            segment.tokens.extend(branch)
            segment.positions.extend(range(len(ctx) - 1, len(ctx) - 1 + len(branch)))
            segment.branches.extend([len(starts)] * len(branch))
        segment.reads.append((index, starts[key], cont))
    return segment


def pack(lengths: list[int], width: int) -> list[list[int]]:
    """Rows of segment indices whose lengths fit in `width` each (first fit, longest first; deterministic)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for s in sorted(range(len(lengths)), key=lambda s: (-lengths[s], s)):
        for r, left in enumerate(room):
            if lengths[s] <= left:
                rows[r].append(s)
                room[r] -= lengths[s]
                break
        else:
            rows.append([s])
            room.append(width - lengths[s])
    return rows


def row_width(lengths: list[int]) -> int:
    longest = max(lengths)
    return max(PACK_WIDTH, -(-longest // WIDTH_STEP) * WIDTH_STEP)


def packable(model) -> bool:
    """Whether `model` scores correctly from a custom 4-D mask with explicit positions (see the module's doc)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in PACKABLE_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", "sdpa") not in PACKABLE_ATTENTION:
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(kind != "full_attention" for kind in layer_types) or getattr(config, "final_logit_softcapping", None):
        return False
    decoder = getattr(model, "model", None)
    return decoder is not None and hasattr(decoder, "layers") and model.get_output_embeddings() is not None


def _tree_mask(segment_ids: torch.Tensor, branch_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[rows, 1, L, L] additive mask: attend within the segment, causally, to the prefix or one's own branch."""
    width = segment_ids.shape[1]
    order = torch.arange(width, device=segment_ids.device)
    allowed = ((segment_ids[:, :, None] == segment_ids[:, None, :]) & (order[:, None] >= order[None, :])
               & ((branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def _compile_layers(model) -> None:
    """Compile the decoder layers once per model (half precision on a device that asks for it)."""
    device = next(model.parameters()).device
    if model in _COMPILED or not COMPILE_LAYERS.get(device.type) or model.dtype not in (torch.bfloat16, torch.float16):
        return
    for layer in model.model.layers:
        layer.compile(dynamic=True)
    _COMPILED[model] = True


def _uncompile_layers(model) -> None:
    for layer in model.model.layers:
        layer._compiled_call_impl = None
    _COMPILED[model] = False


def score_packed(model, groups: list[Group], out: list[float], *, pad_id: int, tokens_per_forward: int
                 ) -> tuple[int, int]:
    """out[request] = the summed log-prob of each continuation, every group packed (see the module's doc).
    Returns (positions that hold a token, positions run including the rows' padding), for a bench's rate."""
    segments = [segment_of(ctx, conts) for ctx, conts in groups]
    lengths = [len(s.tokens) for s in segments]
    width = row_width(lengths)
    rows = pack(lengths, width)
    per_forward = max(1, tokens_per_forward // width)
    forwards = -(-len(rows) // per_forward)
    per_forward = -(-len(rows) // forwards)  # equal shares: fewer distinct shapes, no near-empty last forward
    _compile_layers(model)
    gathered = []
    for start in range(0, len(rows), per_forward):
        gathered.append(_forward(model, segments, rows[start : start + per_forward], width, pad_id))
    _read_gathered(gathered, out)
    return sum(lengths), len(rows) * width


def _row_arrays(segments: list[Segment], rows: list[list[int]], width: int, pad_id: int):
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.int32)
    branch_ids = torch.zeros((len(rows), width), dtype=torch.int32)
    reads = []
    for r, members in enumerate(rows):
        at = 0
        for number, s in enumerate(members):
            segment, n = segments[s], len(segments[s].tokens)
            ids[r, at : at + n] = torch.tensor(segment.tokens, dtype=torch.long)
            positions[r, at : at + n] = torch.tensor(segment.positions, dtype=torch.long)
            segment_ids[r, at : at + n] = number
            branch_ids[r, at : at + n] = torch.tensor(segment.branches, dtype=torch.int32)
            reads.extend((index, r, at + first, cont) for index, first, cont in segment.reads)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return ids, positions, segment_ids, branch_ids, reads


def _forward(model, segments: list[Segment], rows: list[list[int]], width: int, pad_id: int):
    device = next(model.parameters()).device
    ids, positions, segment_ids, branch_ids, reads = _row_arrays(segments, rows, width, pad_id)
    moved = [t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
             for t in (ids, positions, segment_ids, branch_ids)]
    mask = _tree_mask(moved[2], moved[3], model.dtype)
    try:
        hidden = model.model(input_ids=moved[0], attention_mask=mask, position_ids=moved[1], use_cache=False)
    except Exception:
        if not _COMPILED.get(model):
            raise
        _uncompile_layers(model)  # a compiler that fails here must not fail the run: eager scores it
        hidden = model.model(input_ids=moved[0], attention_mask=mask, position_ids=moved[1], use_cache=False)
    states = hidden.last_hidden_state
    head = model.get_output_embeddings()
    return _gather_sums(None, reads, logits_at=lambda r, p: head(states[r, p]), device=device)
