"""Log-likelihoods of (context, continuation) requests, tokenised and batched exactly as lm-eval's HFLM (v0.4.x).

The multiple-choice scorer (`darwin_core.fitness.scoring.score_choices`) is built on `loglikelihoods`, so
its `acc` / `acc_norm` mean what lm-evaluation-harness's do:

* trailing whitespace of the context moves to the front of the continuation;
* tokens: `context_enc = encode(context)`, `continuation_enc = encode(context + continuation)[len(context_enc):]`
  (so a BPE merge across the boundary is scored the way lm-eval scores it), where
  `encode` adds the tokenizer's special tokens unless the text already starts with
  the prefix token's string; an empty context is replaced by the prefix token (BOS, else EOS);
* the model sees `(context_enc + continuation_enc)[-(max_length + 1):][:-1]` (left
  truncation), and the log-likelihood is the sum of the continuation tokens' log-probs.

Speed without changing a definition: requests whose model input is identical (letter
answers " A"/" B"/... share `context + continuation[:-1]`) are run once, rows are
sorted by length and right-padded (harmless for a causal model, no attention mask
needed, which is also what lm-eval does), only the positions that are scored go
through the LM head (`logits_to_keep`), and on CPU a long context is run once per
item, batched with other items' contexts, its KV cache shared by the choices
(`loglikelihoods` has the measurements).
Where we knowingly differ from lm-eval: half-precision logits are soft-maxed in float32
(lm-eval soft-maxes in the model's dtype unless told otherwise), and an empty
continuation is refused with a sentence instead of an assertion.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from typing import Literal

import torch

from darwin_core.errors import DarwinError
from darwin_core.fitness.gather import (  # noqa: F401  (re-exported: one read path for every scorer)
    GATHER_POSITIONS, _gather_sums, _log_probs, _read_gathered, _read_sums, _sum_at,
)
from darwin_core.fitness import packed

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer gives one
_TOKENIZER_INFINITY = 1000000000000000019884624838656
_SEQLEN_CONFIG_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
# Context length (tokens) from which one cached context forward per item beats flat rows, by device
# type; a device type missing here (mps) always goes flat. Measured, see `loglikelihoods`.
SHARE_CONTEXT_FROM: dict[str, int] = {"cpu": 128, "cuda": 128}


# ---------------------------------------------------------------------------------------------
# Tokenisation, exactly as lm-eval's HFLM does it


def max_length(model, tokenizer) -> int:
    """The context window lm-eval assumes: text_config/config attrs, then tokenizer.model_max_length, then 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in _SEQLEN_CONFIG_ATTRS:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max != _TOKENIZER_INFINITY:
        return int(model_max)
    return DEFAULT_MAX_LENGTH


def prefix_token_id(tokenizer) -> int:
    """The token that stands in for an empty context (BOS, else EOS), as lm-eval's `prefix_token_id`."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is None:
        raise DarwinError("The tokenizer has neither a BOS nor an EOS token, so an empty prompt cannot be scored.")
    return int(tokenizer.eos_token_id)


def _encode(tokenizer, text: str, prefix_text: str) -> list[int]:
    # lm-eval: special tokens as the tokenizer adds them, unless the text already starts with the BOS string.
    if prefix_text and text.startswith(prefix_text):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


# Encoded requests per tokenizer (a search scores the same proxy items every generation; tokenising them again
# each time is host work the accelerator waits for). Keyed by the tokenizer object, bounded per tokenizer.
_ENCODED: "weakref.WeakKeyDictionary[object, dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...]]]]" = (
    weakref.WeakKeyDictionary())
_ENCODED_MOST = 200_000


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) for one loglikelihood request, lm-eval's `_encode_pair` semantics
    (memoised per tokenizer: the same request always encodes to the same tokens)."""
    try:
        cache = _ENCODED.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        cache = None
    key = (context, continuation)
    if cache is not None and key in cache:
        ctx, cont = cache[key]
        return list(ctx), list(cont)
    ctx, cont = _encode_pair(tokenizer, context, continuation)
    if cache is not None:
        if len(cache) >= _ENCODED_MOST:
            cache.clear()
        cache[key] = (tuple(ctx), tuple(cont))
    return ctx, cont


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    prefix_id = prefix_token_id(tokenizer)
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        if not cont:
            raise DarwinError("A choice is empty, so there is nothing to score.")
        return ([prefix_id], cont) if cont[0] != prefix_id else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    prefix_text = tokenizer.decode([prefix_id])
    whole = _encode(tokenizer, context + continuation, prefix_text)
    ctx = _encode(tokenizer, context, prefix_text)
    return ctx, whole[len(ctx) :]


# ---------------------------------------------------------------------------------------------
# Log-likelihoods: shared contexts and flat rows


def _supports_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# Token positions per forward pass on an accelerator: rows are packed up to this many positions (at most
# `batch_size` rows on a CPU, where a bigger forward does not run faster); with shared contexts, the cache
# positions copied for the choice rows. On an H200, 4B: 16k 1.36 s, 32k 1.30 s, 64k 1.25 s, 128k 1.23 s for 200
# items (bench/breed_kernels.py); 32k keeps the copies near 5 GB, which a capped (host-streamed) run needs.
TOKENS_PER_FORWARD: dict[str, int] = {"cuda": 32768}


def rows_per_forward(width: int, batch_size: int, device: torch.device) -> int:
    """How many right-padded rows of `width` positions one forward takes: by tokens on an accelerator, by
    `batch_size` rows elsewhere."""
    budget = TOKENS_PER_FORWARD.get(device.type)
    if budget is None:
        return batch_size
    return max(batch_size, budget // max(width, 1))


def _forkable(cache) -> bool:
    """Whether a prefilled cache can be copied row by row for continuations: only plain key/value layers can.

    Recurrent (linear-attention) state has no row selection in transformers 5, so hybrid models take the flat path."""
    from transformers import cache_utils

    linear = getattr(cache_utils, "LinearAttentionCacheLayerMixin", ())
    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, cache_utils.DynamicCache)
        and bool(layers)
        and all(isinstance(layer, cache_utils.DynamicLayer) and not (linear and isinstance(layer, linear)) for layer in layers)
    )


def _pads_safely(cache) -> bool:
    """Whether right-padded contexts can share one prefill: a sliding-window layer counts the padding as positions,
    so its window would shift; those models prefill one context at a time (no padding, same numbers)."""
    from transformers import cache_utils

    return not any(isinstance(layer, cache_utils.DynamicSlidingWindowLayer) for layer in cache.layers)


def _first_chunk(groups: list[tuple[list[int], list[tuple[int, list[int]]]]], batch_size: int, most: int,
                 token_budget: int | None = None) -> int:
    """How many leading groups (at most `most`, at least one) have continuation rows (distinct `cont[:-1]`
    per context) that fit in `batch_size` rows, or, given a token budget (an accelerator), whose contexts'
    cache positions, once copied for each of their continuation rows, fit in `token_budget` (the copies are
    what the continuation forward holds in memory: 4 choices of a 200-token context are 800 positions)."""
    rows = 0
    for count, (ctx, conts) in enumerate(groups[:most]):
        distinct = len({tuple(cont[:-1]) for _, cont in conts})
        rows += len(ctx) * distinct if token_budget else distinct
        if count and rows > (token_budget or batch_size):
            return count
    return min(len(groups), most)


def _score_shared_contexts(
    model, groups: list[tuple[list[int], list[tuple[int, list[int]]]]], out: list[float], *, pad_id: int, batch_size: int
) -> bool:
    """Each context's KV cache computed once, every continuation scored from a copy; False if the cache cannot be copied.

    Contexts are batched: `ctx[:-1]` right-padded into one prefill (no mask needed, a causal model never looks
    ahead), then one row per distinct `ctx[-1:] + cont[:-1]`, attending to its own context's real positions only
    (a 2-D attention mask over cache + row) at explicit positions, so padding changes no number. The whole
    context-to-continuation boundary lives in the second forward, so only its logits are ever needed.
    """
    device = model_device(model)
    keep = {"logits_to_keep": 1} if _supports_logits_to_keep(model) else {}
    start, most = 0, len(groups)
    gathered: list[tuple[list[int], torch.Tensor]] = []
    while start < len(groups):
        chunk = groups[start : start + _first_chunk(groups[start:], batch_size, most, TOKENS_PER_FORWARD.get(device.type))]
        prefixes = [ctx[:-1] for ctx, _ in chunk]
        width = max(len(p) for p in prefixes)
        batch = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for g, prefix in enumerate(prefixes):
            batch[g, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        cache = model(input_ids=batch.to(device), use_cache=True, **keep).past_key_values
        if not _forkable(cache):
            return False
        if len(chunk) > 1 and not _pads_safely(cache):
            most = 1  # redo this chunk one context at a time
            continue
        row_group: list[int] = []
        row_tokens: list[list[int]] = []
        reads: list[tuple[int, int, list[int]]] = []  # (request index, row, continuation)
        for g, (ctx, conts) in enumerate(chunk):
            local: dict[tuple[int, ...], int] = {}
            for index, cont in conts:
                key = tuple(cont[:-1])
                if key not in local:
                    local[key] = len(row_tokens)
                    row_group.append(g)
                    row_tokens.append([ctx[-1], *cont[:-1]])
                reads.append((index, local[key], cont))
        span = max(len(r) for r in row_tokens)
        ids = torch.full((len(row_tokens), span), pad_id, dtype=torch.long)
        mask = torch.zeros((len(row_tokens), width + span), dtype=torch.long)
        positions = torch.empty((len(row_tokens), span), dtype=torch.long)
        for r, (g, tokens) in enumerate(zip(row_group, row_tokens)):
            ids[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[r, : len(prefixes[g])] = 1
            mask[r, width:] = 1
            positions[r] = len(prefixes[g]) + torch.arange(span)
        cache.batch_select_indices(torch.tensor(row_group, device=device))
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
            past_key_values=cache, use_cache=True,
        ).logits
        if device.type == "cpu":
            _read_sums([(index, _sum_at(_log_probs(logits[r, : len(cont)]), cont)) for index, r, cont in reads], out)
        else:
            gathered.append(_gather_sums(logits, [(index, r, 0, cont) for index, r, cont in reads]))
        del logits, cache
        start += len(chunk)
    _read_gathered(gathered, out)
    return True


@torch.no_grad()
def loglikelihoods(
    model,
    tokenizer,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    share_context_from: int | None | Literal["auto"] = "auto",
) -> list[float]:
    """Summed log-probability of each continuation given its context, lm-eval's `loglikelihood` (float part).

    Three ways to the same numbers (equal in exact arithmetic; float32 results differ by ~1e-5):
    * flat (lm-eval's way): every distinct model input is one right-padded row, `batch_size`
      rows per forward;
    * shared context: requests whose context has at least `share_context_from` tokens run the
      context once (KV cache), then their continuations from copies of it; contexts are batched
      (`_score_shared_contexts`), at most `batch_size` continuation rows per forward;
    * packed (an accelerator, a model `packed.packable` accepts, sharing not turned off): each context and its
      continuations in one row segment under a tree mask, compiled layers in half precision; 0.76 s for the
      200 items below, 68% of the bf16 peak (docs/benchmarks.md).
    "auto" shares contexts of 128+ tokens on CPU and CUDA. On an H200 (bench/breed_kernels.py, random
    Qwen3-4B bf16, 200 items of 200-token context x 4 choices of 13 tokens, contexts batched by tokens): flat
    3.21 s (170,400 positions), shared 1.30 s (50,880 positions), 2.5x faster (1.47 s before the
    accelerator's batched gathers and cache-copy budget; docs/benchmarks.md has the table and the profile). Earlier, measured with one
    context per forward (before contexts were batched, which only saves forward passes) on an
    H100 host (scripted, 64 items of ~200-token context x 4 choices of ~25 tokens, and 12 items
    of ~2,900-token context x 3 choices, random Llama, float32): on 2 CPU threads shared was
    1.4-3.8x faster (25M params: 33.2 s -> 11.4 s and 78.3 s -> 20.8 s); on 16 threads 2-3x faster
    for 25M params, slower for a 0.1M-param model on short contexts (0.14 s -> 0.31 s); on the
    GPU flat was 4-5x faster on short contexts and about equal on long ones (0.35 s vs 0.30 s).
    Batching the contexts, 16 items of 200 tokens x 4 choices, 2 CPU threads: random Qwen3 100M
    6.93 s -> 6.45 s, demo zoo 0.26 s -> 0.23 s.
    `None` turns sharing off; models whose cache cannot be copied (hybrid linear attention) stay flat.
    """
    if batch_size < 1:
        raise DarwinError("The batch size must be at least 1.")
    window = max_length(model, tokenizer)
    encoded: list[tuple[list[int], list[int]]] = []
    for context, continuation in requests:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not cont:
            raise DarwinError(f"The choice {continuation!r} adds no token after its prompt, so it cannot be scored.")
        if len(cont) > window:
            raise DarwinError(f"A choice is {len(cont)} tokens long, more than the model's window of {window}.")
        encoded.append((ctx, cont))

    out = [0.0] * len(requests)
    flat = list(range(len(requests)))
    device = model_device(model)
    if share_context_from == "auto":
        share_context_from = SHARE_CONTEXT_FROM.get(device.type)
    if share_context_from is not None and device.type != "cpu" and packed.packable(model):
        flat = _score_all_packed(model, tokenizer, encoded, out, window=window)
    elif share_context_from is not None:
        groups = _by_context(encoded, range(len(encoded)))
        shared = [
            (ctx, indices)
            for ctx, indices in groups.items()
            if len(indices) > 1
            and len(ctx) >= max(share_context_from, 2)  # the prefill runs ctx[:-1]
            and all(len(ctx) + len(encoded[i][1]) <= window + 1 for i in indices)  # no left truncation
        ]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        groups = [(list(ctx), [(i, encoded[i][1]) for i in indices]) for ctx, indices in shared]
        done: set[int] = set()
        if groups and _score_shared_contexts(model, groups, out, pad_id=pad_id, batch_size=batch_size):
            done = {i for _, indices in shared for i in indices}
        flat = [i for i in flat if i not in done]
    _score_flat(model, tokenizer, [(i, *encoded[i]) for i in flat], out, window=window, batch_size=batch_size)
    return out


def _by_context(encoded: list[tuple[list[int], list[int]]], indices) -> dict[tuple[int, ...], list[int]]:
    """The request indices of each distinct context, in the order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index in indices:
        groups.setdefault(tuple(encoded[index][0]), []).append(index)
    return groups


def _score_all_packed(model, tokenizer, encoded: list[tuple[list[int], list[int]]], out: list[float], *,
                      window: int) -> list[int]:
    """Every request that needs no left truncation scored by `packed.score_packed`, grouped by context (on an
    accelerator a context of any length is worth sharing: nothing is copied); the others' indices come back for
    the flat path."""
    fits = [len(ctx) + len(cont) <= window + 1 for ctx, cont in encoded]
    rest = [i for i, ok in enumerate(fits) if not ok]
    groups = _by_context(encoded, (i for i, ok in enumerate(fits) if ok))
    if groups:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        budget = TOKENS_PER_FORWARD.get(model_device(model).type) or packed.PACK_WIDTH
        packed.score_packed(model, [(list(ctx), [(i, encoded[i][1]) for i in indices]) for ctx, indices in groups.items()],
                            out, pad_id=pad_id, tokens_per_forward=budget)
    return rest


def _score_flat(model, tokenizer, requests: list[tuple[int, list[int], list[int]]], out: list[float], *, window: int, batch_size: int) -> None:
    """lm-eval's way: one right-padded row per distinct input `(ctx + cont)[-(window + 1):][:-1]`."""
    device = model_device(model)
    keep_ok = _supports_logits_to_keep(model)
    row_of: dict[tuple[int, ...], int] = {}
    rows: list[tuple[int, ...]] = []
    reads: list[list[tuple[int, list[int]]]] = []  # per row: (request index, continuation tokens)
    for index, ctx, cont in requests:
        inp = tuple((ctx + cont)[-(window + 1) :][:-1])
        if inp not in row_of:
            row_of[inp] = len(rows)
            rows.append(inp)
            reads.append([])
        reads[row_of[inp]].append((index, cont))

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda r: (-len(rows[r]), rows[r]))
    pending: list[tuple[int, torch.Tensor]] = []
    gathered: list[tuple[list[int], torch.Tensor]] = []
    start = 0
    while start < len(order):
        width = len(rows[order[start]])
        chunk = order[start : start + rows_per_forward(width, batch_size, device)]
        start += len(chunk)
        batch = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        need = {r: max(len(cont) for _, cont in reads[r]) for r in chunk}
        for b, r in enumerate(chunk):
            batch[b, : len(rows[r])] = torch.tensor(rows[r], dtype=torch.long)
        first_scored = min(len(rows[r]) - need[r] for r in chunk)
        kwargs = {"logits_to_keep": width - first_scored} if keep_ok else {}
        logits = model(input_ids=batch.to(device), use_cache=False, **kwargs).logits
        offset = width - logits.shape[1]  # absolute position of logits[:, 0] in the padded row
        if device.type != "cpu":
            gathered.append(_gather_sums(logits, [(index, b, len(rows[r]) - offset - len(cont), cont)
                                                  for b, r in enumerate(chunk) for index, cont in reads[r]]))
            del logits
            continue
        for b, r in enumerate(chunk):
            end = len(rows[r]) - offset
            logprobs = _log_probs(logits[b, end - need[r] : end])
            for index, cont in reads[r]:
                pending.append((index, _sum_at(logprobs[-len(cont) :], cont)))
        del logits
    _read_sums(pending, out)
    _read_gathered(gathered, out)
