"""Scorers: log-likelihood multiple choice (lm-eval's `acc` / `acc_norm`) and generative exact match (+ maj@k).

Multiple choice follows lm-evaluation-harness's HFLM (v0.4.x) to the letter, so a
number Darwin shows means what the same number means on a leaderboard:

* request = (context, target_delimiter + choice), the delimiter being " ";
* the log-likelihood of each request is lm-eval's, tokenisation, truncation and batching included
  (`darwin_core.fitness.loglikelihood`, which says how and where we knowingly differ);
* `acc` = argmax of the summed log-likelihoods, `acc_norm` = argmax of loglik divided
  by `len(choice)` in characters (lm-eval's `completion_len`; `acc_bytes` would use
  UTF-8 bytes); ties go to the first choice, as with `np.argmax`.

The log-likelihood machinery's public names (`loglikelihoods`, `encode_pair`, `max_length`, ...) are
re-exported here, where callers have always imported them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

import torch

from darwin_core.errors import DarwinError
from darwin_core.fitness.loglikelihood import (
    DEFAULT_MAX_LENGTH,
    SHARE_CONTEXT_FROM,
    encode_pair,
    loglikelihoods,
    max_length,
    model_device,
    prefix_token_id,
)
from darwin_core.fitness.tasks import Item, seeded_rng

__all__ = [
    "DEFAULT_MAX_LENGTH", "SHARE_CONTEXT_FROM", "STOP_STRINGS", "TARGET_DELIMITER", "ItemResult", "cut_at_stop",
    "encode_pair", "extract_answer", "is_numeric", "judge", "loglikelihoods", "majority_answer", "max_length",
    "normalize_answer", "predictions", "prefix_token_id", "score_choices", "score_generative", "score_majority",
]

TARGET_DELIMITER = " "


@dataclass(frozen=True)
class ItemResult:
    """What one item scored; kept per item so the report can pair child and parent on the same questions.

    `correct` is `acc` for multiple choice and exact match (or maj@k) for generation;
    `chosen` is the picked choice index as a string, or the extracted answer.
    """

    id: str
    correct: bool
    chosen: str
    logliks: tuple[float, ...] = ()
    correct_norm: bool | None = None
    chosen_norm: str | None = None
    output: str = ""
    samples: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ItemResult:
        return cls(
            id=str(data["id"]),
            correct=bool(data["correct"]),
            chosen=str(data["chosen"]),
            logliks=tuple(float(x) for x in data.get("logliks", ())),
            correct_norm=None if data.get("correct_norm") is None else bool(data["correct_norm"]),
            chosen_norm=data.get("chosen_norm"),
            output=str(data.get("output", "")),
            samples=tuple(data.get("samples", ())),
        )


# ---------------------------------------------------------------------------------------------
# Log-likelihood multiple choice


def _argmax(values: Sequence[float]) -> int:
    """First index of the maximum (np.argmax's tie rule)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def predictions(logliks: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(acc pick, acc_norm pick): argmax of loglik, and of loglik / len(choice) in characters (first on ties)."""
    normed = [ll / len(c) if c else (-math.inf if ll < 0 else math.inf) for ll, c in zip(logliks, choices, strict=True)]
    return _argmax(logliks), _argmax(normed)


def score_choices(
    model,
    tokenizer,
    items: Sequence[Item],
    *,
    batch_size: int = 32,
    target_delimiter: str = TARGET_DELIMITER,
    share_context_from: int | None | Literal["auto"] = "auto",
) -> list[ItemResult]:
    """acc and acc_norm per item: every choice is scored as `prompt` + delimiter + choice."""
    requests: list[tuple[str, str]] = []
    for item in items:
        if not item.choices:
            raise DarwinError(f"Item {item.id!r} has no choices, so it cannot be scored as multiple choice.")
        if not (item.answer.isdigit() and int(item.answer) < len(item.choices)):
            raise DarwinError(f"Item {item.id!r} has the answer {item.answer!r}, which is not the index of one of its choices.")
        requests.extend((item.prompt, f"{target_delimiter}{choice}") for choice in item.choices)
    lls = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, share_context_from=share_context_from)
    results, at = [], 0
    for item in items:
        k = len(item.choices)
        item_lls = tuple(lls[at : at + k])
        at += k
        pred, pred_norm = predictions(item_lls, item.choices)
        gold = int(item.answer)
        results.append(
            ItemResult(
                id=item.id,
                correct=pred == gold,
                chosen=str(pred),
                logliks=item_lls,
                correct_norm=pred_norm == gold,
                chosen_norm=str(pred_norm),
            )
        )
    return results


# ---------------------------------------------------------------------------------------------
# Generative exact match

STOP_STRINGS = ("Question:", "</s>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
_ANSWER_RE = re.compile(r"ANSWER\s*[:：]", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?")


def _as_number(text: str) -> str | None:
    """Canonical form of a numeric string ("1,000.50" -> "1000.5", "$18" -> "18"), or None if not a number."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned):
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalize_answer(text: str, *, ignore_case: bool = False) -> str:
    """What two answers must share to be equal: stripped, inner whitespace collapsed, a final period dropped,
    numbers in canonical form (commas, "$" and trailing zeros gone), case folded only when asked.

    Case is kept by default because for some tasks it is the skill (the demo zoo's "uppercase").
    """
    number = _as_number(text)
    if number is not None:
        return number
    text = " ".join(text.split()).rstrip(".")
    return text.casefold() if ignore_case else text


def is_numeric(text: str) -> bool:
    return _as_number(text) is not None


def cut_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """The generation up to the first stop string (the model running on into a next question)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def extract_answer(output: str, *, numeric: bool) -> str:
    """The answer a generation gives: the last "ANSWER: X", else the last number (numeric golds), else the first line."""
    text = cut_at_stop(output)
    tags = list(_ANSWER_RE.finditer(text))
    if tags:
        answer = text[tags[-1].end() :].split("\n", 1)[0].strip()
        if numeric:
            numbers = _NUMBER_RE.findall(answer)
            return numbers[0] if numbers else answer
        return answer
    if numeric:
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1] if numbers else ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def judge(output: str, gold: str, *, ignore_case: bool = False) -> tuple[bool, str]:
    """(correct, extracted answer) for one generation."""
    answer = extract_answer(output, numeric=is_numeric(gold))
    same = normalize_answer(answer, ignore_case=ignore_case) == normalize_answer(gold, ignore_case=ignore_case)
    return same, answer


def score_generative(
    model,
    tokenizer,
    items: Sequence[Item],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 64,
    ignore_case: bool = False,
) -> list[ItemResult]:
    """Exact match of the extracted answer of one greedy generation per item (one token budget, or one per item)."""
    try:
        from darwin_core.fitness.generate import generate_greedy
    except ImportError as error:  # owned by the zoo module; absent only in a partial checkout
        raise DarwinError("Generative tasks need darwin_core.fitness.generate, which is not installed.") from error
    outputs = generate_greedy(model, tokenizer, [i.prompt for i in items], max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = []
    for item, output in zip(items, outputs, strict=True):
        correct, answer = judge(output, item.answer, ignore_case=ignore_case)
        results.append(ItemResult(id=item.id, correct=correct, chosen=answer, output=output))
    return results


def majority_answer(answers: Sequence[str], *, ignore_case: bool = False) -> str:
    """Most frequent normalised answer; ties go to the one seen first; empty answers never win over a real one."""
    normed = [normalize_answer(a, ignore_case=ignore_case) for a in answers]
    counts = Counter(a for a in normed if a)
    if not counts:
        return ""
    top = max(counts.values())
    return next(a for a in normed if a and counts[a] == top)


@torch.no_grad()
def score_majority(
    model,
    tokenizer,
    items: Sequence[Item],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    ignore_case: bool = False,
) -> list[ItemResult]:
    """maj@k: k sampled generations per item, the majority extracted answer is compared with the gold one.

    Each item's k samples come from one `generate` call under a torch RNG seeded from
    (seed, item id) inside `fork_rng`, so an item's samples do not depend on which
    other items are evaluated, and the caller's global RNG is left untouched.
    """
    if k < 1:
        raise DarwinError("maj@k needs k of at least 1.")
    if temperature <= 0:
        raise DarwinError("maj@k samples need a temperature above 0.")
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    devices = [device] if device.type == "cuda" else []
    results = []
    for item in items:
        encoded = tokenizer(item.prompt, return_tensors="pt")
        input_ids = encoded["input_ids"].to(device)
        item_seed = seeded_rng("maj", seed, item.id).getrandbits(63)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(item_seed)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                num_return_sequences=k,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
            )
        outputs = tokenizer.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)
        numeric = is_numeric(item.answer)
        answers = tuple(extract_answer(o, numeric=numeric) for o in outputs)
        voted = majority_answer(answers, ignore_case=ignore_case)
        results.append(
            ItemResult(
                id=item.id,
                correct=bool(voted) and voted == normalize_answer(item.answer, ignore_case=ignore_case),
                chosen=voted,
                output=outputs[0],
                samples=answers,
            )
        )
    return results
