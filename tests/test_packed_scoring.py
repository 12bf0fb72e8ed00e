"""The accelerator's packed scorer (every item's context and choices in one row segment, a tree mask) gives the
log-likelihoods of the definition: one unpadded forward per request. Run here on CPU in float64 by calling it
directly (on CPU `loglikelihoods` never packs); tests/test_gpu.py runs it through `loglikelihoods` on CUDA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from darwin_core.fitness import packed
from darwin_core.fitness.loglikelihood import encode_pair
from darwin_core.parents.chartok import build_char_tokenizer
from darwin_core.testing.fixtures import tiny_config
from tests.test_scoring import ALPHABET, REQUESTS, reference_loglik, tiny_llama


@pytest.fixture(scope="module")
def char_tok():
    return build_char_tokenizer(ALPHABET)


def _groups(tokenizer, requests):
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, (context, continuation) in enumerate(requests):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        groups.setdefault(tuple(ctx), []).append((index, cont))
    return [(list(ctx), conts) for ctx, conts in groups.items()]


def _qwen3(vocab_size: int):
    torch.manual_seed(1)
    config = tiny_config("qwen3", {"vocab_size": vocab_size})
    model = AutoModelForCausalLM.from_config(config).to(torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model


MULTIPLE_CHOICE = [(f"Question {q}: which letter follows {q}? Answer:", f" {c}") for q in range(6) for c in "ABCD"]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("budget", [1, 64, 100_000])  # one row per forward, a few, all in one forward
def test_packed_logliks_equal_one_forward_per_request(char_tok, arch, budget, monkeypatch):
    model = tiny_llama(len(char_tok)) if arch == "llama" else _qwen3(len(char_tok))
    monkeypatch.setattr(packed, "PACK_WIDTH", 64)  # several segments per row, several rows
    requests = REQUESTS + MULTIPLE_CHOICE
    out = [0.0] * len(requests)
    assert packed.packable(model)
    with torch.no_grad():
        packed.score_packed(model, _groups(char_tok, requests), out, pad_id=0, tokens_per_forward=budget)
    expected = [reference_loglik(model, char_tok, c, x) for c, x in requests]
    assert out == pytest.approx(expected, abs=1e-9)


def test_a_segment_is_the_prefix_then_one_branch_per_distinct_continuation_row():
    segment = packed.segment_of([5, 6, 7], [(0, [1, 2]), (1, [1, 3]), (2, [4])])
    # branches: [7, 1] for both [1, 2] and [1, 3] (same cont[:-1]), then [7] for [4]
    assert segment.tokens == [5, 6, 7, 1, 7]
    assert segment.positions == [0, 1, 2, 3, 2]
    assert segment.branches == [0, 0, 1, 1, 2]
    assert segment.reads == [(0, 2, [1, 2]), (1, 2, [1, 3]), (2, 4, [4])]


def test_packing_fills_rows_first_fit_longest_first_and_keeps_every_segment_once():
    rows = packed.pack([5, 9, 3, 4, 8], 10)
    assert rows == [[1], [4], [0, 3], [2]]
    assert sorted(s for row in rows for s in row) == [0, 1, 2, 3, 4]


def test_models_whose_attention_a_custom_mask_would_change_are_not_packed():
    from transformers import MistralConfig, MistralForCausalLM

    sliding = MistralForCausalLM(MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1, sliding_window=4))
    gemma = AutoModelForCausalLM.from_config(tiny_config("gemma3_text", {"vocab_size": 32}))
    assert not packed.packable(sliding)
    assert not packed.packable(gemma)


def test_requests_that_need_left_truncation_are_left_to_the_flat_path_and_the_rest_are_packed(char_tok):
    from darwin_core.fitness import loglikelihood

    model = tiny_llama(len(char_tok))
    requests = REQUESTS + MULTIPLE_CHOICE
    encoded = [encode_pair(char_tok, c, x) for c, x in requests]
    window = 40
    too_long = [i for i, (ctx, cont) in enumerate(encoded) if len(ctx) + len(cont) > window + 1]
    assert too_long and len(too_long) < len(requests)
    out = [0.0] * len(requests)
    with torch.no_grad():
        rest = loglikelihood._score_all_packed(model, char_tok, encoded, out, window=window)
    assert rest == too_long
    expected = [reference_loglik(model, char_tok, c, x) for c, x in requests]
    for i in range(len(requests)):
        assert out[i] == (0.0 if i in too_long else pytest.approx(expected[i], abs=1e-9))
