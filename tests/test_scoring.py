"""Scorers: lm-eval's tokenisation and acc/acc_norm definitions, exact match with answer extraction, maj@k."""

from __future__ import annotations

import json
import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from darwin_core.parents.chartok import build_char_tokenizer
from darwin_core.errors import DarwinError
from darwin_core.fitness.scoring import (
    encode_pair,
    extract_answer,
    judge,
    loglikelihoods,
    majority_answer,
    max_length,
    normalize_answer,
    predictions,
    score_choices,
    score_generative,
    score_majority,
)
from darwin_core.fitness.tasks import Item

ALPHABET = string.ascii_letters + string.digits + " .,:;?!'+-=\n"


def tiny_llama(vocab_size: int, *, seed: int = 0, dtype=torch.float64, window: int = 512) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=window, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)  # sharper than the default init, so choices get clearly different scores
    return model


@pytest.fixture(scope="module")
def char_tok():
    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def model(char_tok):
    return tiny_llama(len(char_tok))


def merging_bpe() -> PreTrainedTokenizerFast:
    """A BPE without pre-tokenizer: merges run across spaces, so the context/continuation boundary matters."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"], initial_alphabet=list(ALPHABET))
    core.train_from_iterator(["Answer: yes", "Answer: no", "Answer:\n yes", "Question: is it? Answer: no"] * 20, trainer)
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", core.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def reference_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """The definition, computed the slow way: one unpadded forward per request."""
    ctx, cont = encode_pair(tokenizer, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    return float(sum(logprobs[len(ctx) - 1 + t, tok] for t, tok in enumerate(cont)))


# --- tokenisation ------------------------------------------------------------------------------


def test_trailing_whitespace_of_the_context_moves_to_the_continuation(char_tok):
    ctx_a, cont_a = encode_pair(char_tok, "Answer:", " yes")
    ctx_b, cont_b = encode_pair(char_tok, "Answer: ", "yes")
    assert ctx_a == ctx_b and cont_a == cont_b
    assert char_tok.decode(cont_a) == " yes"
    assert ctx_a[0] == char_tok.bos_token_id  # the tokenizer's own special tokens are kept, as lm-eval does


def test_encode_pair_agrees_with_lm_eval_on_a_tokenizer_that_merges_across_the_boundary():
    huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is a test extra")
    tok = merging_bpe()
    oracle = huggingface.HFLM.__new__(huggingface.HFLM)  # only its tokenisation, no model loaded
    oracle.tokenizer, oracle.add_bos_token, oracle.custom_prefix_token_id, oracle.backend = tok, None, None, "causal"
    cases = [("Answer:", " yes"), ("Answer: ", "yes"), ("Answer:\n", " yes"), ("Question: is it?", " Answer: no"),
             ("<bos>Answer:", " no"), ("A", "nswer: yes")]
    merged = False
    for context, continuation in cases:
        ours = encode_pair(tok, context, continuation)
        assert ours == tuple(map(list, oracle._encode_pair(context, continuation))), (context, continuation)
        whole = tok.encode(context.rstrip() + continuation)
        merged |= whole[: len(ours[0])] != ours[0]
    assert merged, "no case exercised a merge across the context/continuation boundary"


def test_empty_context_is_scored_after_the_prefix_token(char_tok):
    ctx, cont = encode_pair(char_tok, "", " yes")
    assert ctx == [char_tok.bos_token_id] and char_tok.decode(cont) == " yes"


def test_max_length_follows_lm_eval(model, char_tok):
    assert max_length(model, char_tok) == 512


# --- log-likelihoods -----------------------------------------------------------------------------


REQUESTS = [
    ("Question: what is two plus two?\nAnswer:", " four"),
    ("Question: what is two plus two?\nAnswer:", " twentytwo"),
    ("Question: what is two plus two?\nAnswer:", " 4"),
    ("Pick a letter:", " A"),
    ("Pick a letter:", " B"),
    ("Pick a letter: ", "C"),
    ("Q", " a much longer continuation that spans many tokens"),
]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("share_context_from", [None, 0])
def test_batched_logliks_equal_one_forward_per_request(model, char_tok, batch_size, share_context_from):
    ours = loglikelihoods(model, char_tok, REQUESTS, batch_size=batch_size, share_context_from=share_context_from)
    expected = [reference_loglik(model, char_tok, c, x) for c, x in REQUESTS]
    assert ours == pytest.approx(expected, abs=1e-9)


def test_contexts_longer_than_the_window_are_truncated_from_the_left_like_lm_eval(char_tok):
    small = tiny_llama(len(char_tok), window=24)
    long_context = "Question: " + "blah " * 20 + "Answer:"
    ours = loglikelihoods(small, char_tok, [(long_context, " yes")])[0]
    ctx, cont = encode_pair(char_tok, long_context, " yes")
    inp = (ctx + cont)[-25:][:-1]
    with torch.no_grad():
        logprobs = torch.log_softmax(small(input_ids=torch.tensor([inp])).logits[0], dim=-1)
    expected = sum(float(logprobs[len(inp) - len(cont) + t, tok]) for t, tok in enumerate(cont))
    assert ours == pytest.approx(expected, abs=1e-9)


def test_float32_model_scores_close_to_its_float64_self(char_tok):
    m64 = tiny_llama(len(char_tok))
    m32 = tiny_llama(len(char_tok)).float()
    a = loglikelihoods(m64, char_tok, REQUESTS)
    b = loglikelihoods(m32, char_tok, REQUESTS)
    assert b == pytest.approx(a, abs=1e-4)


# --- acc / acc_norm --------------------------------------------------------------------------------


def test_acc_picks_the_highest_loglik_and_acc_norm_divides_by_characters():
    # -4 over 2 chars = -2 per char; -6 over 6 chars = -1 per char: acc and acc_norm disagree.
    assert predictions([-4.0, -6.0], ["ab", "abcdef"]) == (0, 1)
    # Characters, not UTF-8 bytes: "서울" is 2 characters (6 bytes), "Seoul" 5.
    assert predictions([-3.0, -5.5], ["서울", "Seoul"]) == (0, 1)


def test_ties_go_to_the_first_choice_as_with_numpy_argmax():
    assert predictions([-1.0, -1.0, -2.0], ["a", "b", "cc"]) == (0, 0)


def test_score_choices_keeps_per_item_logliks_and_picks(model, char_tok):
    items = [
        Item(id="q1", prompt="Question: what is two plus two?\nAnswer:", answer="0", choices=("four", "twentytwo", "4")),
        Item(id="q2", prompt="Pick a letter:", answer="1", choices=("A", "B")),
    ]
    results = score_choices(model, char_tok, items, batch_size=2)
    assert [r.id for r in results] == ["q1", "q2"]
    for item, result in zip(items, results):
        expected = [reference_loglik(model, char_tok, item.prompt, " " + c) for c in item.choices]
        assert list(result.logliks) == pytest.approx(expected, abs=1e-9)
        pred, pred_norm = predictions(result.logliks, item.choices)
        assert result.chosen == str(pred) and result.correct == (pred == int(item.answer))
        assert result.chosen_norm == str(pred_norm) and result.correct_norm == (pred_norm == int(item.answer))


def test_an_item_without_choices_is_refused(model, char_tok):
    with pytest.raises(DarwinError, match="no choices"):
        score_choices(model, char_tok, [Item(id="x", prompt="p", answer="a")])


# --- generative exact match ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "numeric", "expected"),
    [
        ("Let me think. ANSWER: B\nmore text", False, "B"),
        ("first answer: 3 ... Answer: 12", True, "12"),
        ("She has 3 apples, then 5 more, so 8.\n\nQuestion: next one has 99", True, "8"),
        ("The total is $1,250.", True, "$1,250"),
        ("no digits here", True, ""),
        ("\n  olleh  \nrev: abc = cba", False, "olleh"),
        ("ANSWER: $18 dollars", True, "$18"),
    ],
)
def test_answer_extraction(output, numeric, expected):
    assert extract_answer(output, numeric=numeric) == expected


def test_normalisation_of_numbers_case_and_spaces():
    assert normalize_answer("1,250") == normalize_answer("$1250") == normalize_answer("1250.00") == "1250"
    assert normalize_answer("0.50") == "0.5"
    assert normalize_answer("  Paris. ") == "Paris"
    assert normalize_answer("ABC") != normalize_answer("abc")  # case is the skill in some tasks
    assert normalize_answer("ABC", ignore_case=True) == normalize_answer("abc", ignore_case=True)


def test_judge_compares_the_extracted_answer_with_the_gold_one():
    assert judge("... so she makes 18 dollars.", "18") == (True, "18")
    assert judge("ANSWER: 1,000", "1000") == (True, "1,000")
    assert judge("ABC\nrest", "abc") == (False, "ABC")
    assert judge("ABC\nrest", "abc", ignore_case=True) == (True, "ABC")


def test_majority_vote_ties_go_to_the_answer_seen_first_and_blanks_never_win():
    assert majority_answer(["7", "8", "8", "7"]) == "7"
    assert majority_answer(["", "", "5"]) == "5"
    assert majority_answer(["1,000", "1000", "999"]) == "1000"


def test_score_generative_judges_the_greedy_outputs(model, char_tok):
    from darwin_core.fitness.generate import generate_greedy

    items = [Item(id=f"g{i}", prompt=f"Q: {w}\nA:", answer=w) for i, w in enumerate(["abc", "12", "xyz"])]
    results = score_generative(model, char_tok, items, max_new_tokens=6, batch_size=2)
    outputs = generate_greedy(model, char_tok, [i.prompt for i in items], max_new_tokens=6)
    assert [r.output for r in results] == outputs
    for item, result, output in zip(items, results, outputs):
        assert (result.correct, result.chosen) == judge(output, item.answer)


def test_maj_at_k_is_seeded_per_item_and_leaves_the_global_rng_alone(model, char_tok):
    items = [Item(id=f"m{i}", prompt=f"Q: {w}\nA:", answer=w) for i, w in enumerate(["ab", "7", "cd"])]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = score_majority(model, char_tok, items, k=4, max_new_tokens=4, temperature=1.0, seed=5)
    assert torch.rand(1) == before  # the caller's random stream is untouched
    again = score_majority(model, char_tok, items[1:], k=4, max_new_tokens=4, temperature=1.0, seed=5)
    assert again == first[1:]  # an item's samples do not depend on the other items
    other_seed = score_majority(model, char_tok, items, k=4, max_new_tokens=4, temperature=1.0, seed=6)
    assert [r.samples for r in other_seed] != [r.samples for r in first]
    for result, item in zip(first, items):
        assert len(result.samples) == 4
        assert result.chosen == majority_answer(result.samples)
        assert result.correct == (bool(result.chosen) and result.chosen == normalize_answer(item.answer))


# --- evaluate: per-task scores, per-item vectors, composite ----------------------------------------


def two_tasks():
    from darwin_core.fitness.sources import task_from_items

    choice = task_from_items("quiz", [
        Item(id=f"c{n}", prompt=f"Question: is {n} even?\nAnswer:", answer=str(n % 2), choices=("yes", "no")) for n in range(10)
    ], seed=1)
    gen = task_from_items("echo", [Item(id=f"g{n}", prompt=f"say {w}:", answer=w) for n, w in enumerate(["ab", "cd", "ef", "gh"])],
                          seed=1, max_new_tokens=3)
    return choice, gen


def test_evaluate_scores_each_task_keeps_items_and_is_deterministic(model, char_tok):
    from darwin_core.fitness.evaluate import EvalResult, evaluate

    choice, gen = two_tasks()
    model.train()  # evaluate must not depend on (or change) the caller's mode
    result = evaluate(model, char_tok, [choice, gen], split="search", batch_size=4)
    assert model.training
    assert result.split == "search" and list(result.tasks) == ["quiz", "echo"]
    quiz = result.tasks["quiz"]
    assert quiz.ids == tuple(i.id for i in choice.search) and quiz.metric == "acc"
    assert quiz.score == sum(quiz.correct) / len(choice.search)
    assert result.tasks["echo"].metric == "exact_match" and len(result.tasks["echo"].items) == len(gen.search)
    again = evaluate(model, char_tok, [choice, gen], split="search", batch_size=1)
    assert [r.correct for r in again.tasks["quiz"].items] == [r.correct for r in quiz.items]
    assert again.tasks["echo"].items == result.tasks["echo"].items
    restored = EvalResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored.tasks["quiz"].items == quiz.items and restored.scores == result.scores


def test_composite_is_the_normalised_weighted_sum_of_task_scores(model, char_tok):
    from darwin_core.fitness.evaluate import evaluate

    choice, gen = two_tasks()
    result = evaluate(model, char_tok, [choice, gen], split="heldout", metrics={"quiz": "acc_norm"})
    quiz, echo = result.tasks["quiz"], result.tasks["echo"]
    assert quiz.metric == "acc_norm" and quiz.score == quiz.accuracy("acc_norm")
    assert result.composite({"quiz": 0.6, "echo": 0.4}) == pytest.approx(0.6 * quiz.score + 0.4 * echo.score)
    assert result.composite({"quiz": 3, "echo": 2}) == pytest.approx(result.composite({"quiz": 0.6, "echo": 0.4}))
    assert result.composite() == pytest.approx((quiz.score + echo.score) / 2)
    with pytest.raises(DarwinError, match="not one of the evaluated tasks"):
        result.composite({"musr": 1.0})


def test_evaluate_limit_and_bad_arguments(model, char_tok):
    from darwin_core.fitness.evaluate import evaluate

    choice, gen = two_tasks()
    limited = evaluate(model, char_tok, [choice], split="search", limit=2)
    assert limited.tasks["quiz"].ids == tuple(i.id for i in choice.search[:2])
    with pytest.raises(DarwinError, match="'search' or 'heldout'"):
        evaluate(model, char_tok, [choice], split="train")
    with pytest.raises(DarwinError, match="generative"):
        evaluate(model, char_tok, [gen], split="search", metrics={"echo": "acc_norm"})


def test_shared_contexts_on_a_sliding_window_model_equal_one_forward_per_request(char_tok):
    """Right-padding would shift a sliding window, so such models prefill one context at a time: same numbers."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(char_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, sliding_window=6, tie_word_embeddings=False,
    )
    sliding = MistralForCausalLM(config).to(torch.float64).eval()
    cache = sliding(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).past_key_values
    from darwin_core.fitness.loglikelihood import _pads_safely

    assert not _pads_safely(cache)  # the case under test: a sliding-window cache layer
    ours = loglikelihoods(sliding, char_tok, REQUESTS, batch_size=64, share_context_from=0)
    expected = [reference_loglik(sliding, char_tok, c, x) for c, x in REQUESTS]
    assert ours == pytest.approx(expected, abs=1e-9)


def test_per_prompt_token_budgets_give_what_each_prompt_gets_alone(model, char_tok):
    from darwin_core.fitness.generate import generate_greedy

    prompts = ["Q: abc\nA:", "say hi:", "Q: a much longer prompt here\nA:", "x"]
    budgets = [1, 5, 3, 8]
    together = generate_greedy(model, char_tok, prompts, max_new_tokens=budgets, batch_size=4)
    alone = [generate_greedy(model, char_tok, [p], max_new_tokens=b)[0] for p, b in zip(prompts, budgets)]
    assert together == alone
    assert len(together[0]) <= 1 and any(len(t) > 1 for t in together)
    with pytest.raises(ValueError, match="one max_new_tokens per prompt"):
        generate_greedy(model, char_tok, prompts, max_new_tokens=[1, 2])


def test_generative_tasks_decoded_together_score_as_each_task_alone(model, char_tok):
    from darwin_core.fitness.evaluate import evaluate
    from darwin_core.fitness.sources import task_from_items

    short = task_from_items("short", [Item(id=f"s{n}", prompt=f"say {w}:", answer=w) for n, w in enumerate(["ab", "cd", "ef", "gh"])],
                            seed=1, max_new_tokens=2)
    long = task_from_items("long", [Item(id=f"l{n}", prompt=f"Q: {w}\nA:", answer=w) for n, w in enumerate(["abcdef", "xyz", "12345"])],
                           seed=1, max_new_tokens=7)
    both = evaluate(model, char_tok, [short, long], split="search", batch_size=8)
    assert list(both.tasks) == ["short", "long"]
    for task in (short, long):
        alone = evaluate(model, char_tok, [task], split="search", batch_size=8)
        assert both.tasks[task.name].items == alone.tasks[task.name].items
    assert all(len(r.output) <= 2 for r in both.tasks["short"].items)


def test_choices_after_an_empty_prompt_share_nothing_and_score_as_alone(model, char_tok):
    requests = [("", "abc"), ("", "xyz"), ("", "q")]  # one context, the prefix token alone: nothing to prefill
    ours = loglikelihoods(model, char_tok, requests, batch_size=4, share_context_from=0)
    assert ours == pytest.approx([reference_loglik(model, char_tok, c, x) for c, x in requests], abs=1e-9)
