"""The accelerator's batched read of continuation log-probs (`_gather_sums`: one index upload, per-request sums
over a zero-padded matrix) gives the per-request sums of the CPU path (`_sum_at`), and encodings are memoised
without changing a token."""

from __future__ import annotations

import torch

from darwin_core.fitness import loglikelihood as ll


def test_gathered_sums_equal_the_per_request_sums():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 9, 50, generator=generator, dtype=torch.float64)
    reads = [(3, 0, 0, [4, 7, 1]), (0, 2, 4, [9]), (1, 4, 1, [1, 2, 3, 4, 5, 6, 7, 8]), (2, 0, 6, [0, 49])]
    indices, sums = ll._gather_sums(logits, reads)
    assert indices == [3, 0, 1, 2] and sums.dtype == torch.float64
    for (request, row, first, tokens), value in zip(reads, sums.tolist()):
        expected = ll._sum_at(ll._log_probs(logits[row, first : first + len(tokens)]), tokens).item()
        assert abs(value - expected) <= 1e-12 * max(1.0, abs(expected)), request
    out = [0.0] * 4
    ll._read_gathered([(indices, sums)], out)
    assert out == [sums.tolist()[1], sums.tolist()[2], sums.tolist()[3], sums.tolist()[0]]


def test_half_precision_logits_are_summed_in_float32():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    _, sums = ll._gather_sums(logits, [(0, 1, 0, [3, 4, 5])])
    expected = ll._sum_at(ll._log_probs(logits[1, :3]), [3, 4, 5]).item()
    assert sums.dtype == torch.float32 and abs(sums.item() - expected) < 1e-5


def test_encodings_are_memoised_per_tokenizer_and_unchanged():
    from darwin_core.parents.chartok import build_char_tokenizer
    from darwin_core.testing.shapes import ALPHABET

    tokenizer = build_char_tokenizer(ALPHABET)
    first = ll.encode_pair(tokenizer, "the question: ", "an answer")
    assert (tokenizer in ll._ENCODED) and ll._encode_pair(tokenizer, "the question: ", "an answer") == first
    again = ll.encode_pair(tokenizer, "the question: ", "an answer")
    assert again == first and again[0] is not first[0]  # a fresh list: a caller may modify it
