"""Task formats: one function `record -> Item` per published schema, shared by local files and Hub datasets.

The same function serves a local file and the Hub dataset in that schema, so ARC from
`ARC-Challenge-Dev.jsonl` and ARC from `allenai/ai2_arc` give the same prompts. Prompts copy
lm-evaluation-harness's task YAMLs (arc_easy/arc_challenge, mmlu, click, leaderboard_musr, gsm8k; piqa,
hellaswag, winogrande and truthfulqa_mc1 in `darwin_core.fitness.benchmark_formats`), so a score here means
what the same score means there. Reading files and datasets into tasks is `darwin_core.fitness.sources`.

User file schema (JSONL, JSON list or CSV, one item per row/line):

    {"id": optional str, "prompt" or "question": str,
     "choices": optional list of str, "answer": index (0-based int), letter (A, B, ...) or text}

With "choices" the item is scored by log-likelihood (the prompt is the context, each
choice is appended after a space); without, by generation and exact match of the
extracted answer. In CSV, choices are a "choices" column holding a JSON list, or
columns choice0, choice1, ...; CSV cells are text, so an answer may be a choice's text, a letter or a
0-based index. When those readings name different choices (a choice "2" and the answer "2"), the reading that
fits every answer of the file decides, else the row is refused as ambiguous (`darwin_core.fitness.fields`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from darwin_core.fitness.benchmark_formats import hellaswag_item, piqa_item, truthfulqa_mc1_item, winogrande_item
from darwin_core.fitness.fields import (
    LETTERS,
    BadRecord,
    Record,
    _answer_index,
    _choices,
    _field,
    _id,
    _text,
    _user_choices,
    readings_of_every_row,
)
from darwin_core.fitness.tasks import Item

__all__ = [
    "FORMATS", "LETTERS", "BadRecord", "Record", "arc_item", "click_item", "click_prompt", "gsm8k_item",
    "hellaswag_item", "mmlu_item", "mmlu_prompt", "musr_item", "piqa_item", "readings_of_every_row",
    "truthfulqa_mc1_item", "user_item", "winogrande_item",
]


# ---------------------------------------------------------------------------------------------
# Formats (record -> Item); `prefix` makes fallback ids unique per source


def user_item(record: Record, index: int, prefix: str = "item", file_readings: frozenset[str] | None = None) -> Item:
    """The user schema (module doc); `file_readings` (from `readings_of_every_row`) settles ambiguous answers."""
    prompt = _text(_field(record, "prompt", "question"), "prompt")
    item_id = _id(record, f"{prefix}-{index}")
    choices = _user_choices(record)
    answer = _field(record, "answer")
    if choices is None:
        return Item(id=item_id, prompt=prompt, answer=_text(answer, "answer").strip())
    return Item(id=item_id, prompt=prompt, answer=str(_answer_index(answer, choices, file_readings)), choices=choices)


def arc_item(record: Record, index: int, prefix: str = "arc") -> Item:
    """ARC: official jsonl (`question.stem`, `question.choices[{text,label}]`) or HF `allenai/ai2_arc`
    (`question`, `choices{text,label}`). lm-eval arc: "Question: {q}\\nAnswer:", choices = texts."""
    question = _field(record, "question")
    if isinstance(question, dict):  # official AI2 jsonl
        stem = _text(question.get("stem"), "question stem")
        raw = question.get("choices")
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise BadRecord("its question.choices is not a list of {text, label}")
        texts, labels = [c.get("text") for c in raw], [str(c.get("label")) for c in raw]
    else:  # Hugging Face allenai/ai2_arc
        stem = _text(question, "question")
        raw = _field(record, "choices")
        if not isinstance(raw, dict):
            raise BadRecord("its choices is not {text: [...], label: [...]}")
        texts, labels = list(raw.get("text") or []), [str(label) for label in raw.get("label") or []]
    choices = _choices(texts)
    if len(labels) != len(choices):
        raise BadRecord("its choices and labels differ in number")
    key = str(_field(record, "answerKey")).strip()
    if key not in labels:
        raise BadRecord(f"its answerKey {key!r} is not one of the labels {labels}")
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=f"Question: {stem}\nAnswer:", answer=str(labels.index(key)), choices=choices)


def mmlu_prompt(question: str, choices: Sequence[str], subject: str | None) -> str:
    """lm-eval's mmlu template (description + question + lettered options + "Answer:")."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)] + ["Answer:"]
    description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n" if subject else ""
    return description + "\n".join(lines)


def mmlu_item(record: Record, index: int, prefix: str = "mmlu", subject: str | None = None) -> Item:
    """MMLU: csv `question,choice0..3,answer` (index) or HF `cais/mmlu` (`question, subject, choices, answer`).
    Choices are the letters, as in lm-eval's mmlu, so acc and acc_norm coincide."""
    question = _text(_field(record, "question"), "question")
    subject = record.get("subject") or subject
    if record.get("choices") not in (None, ""):
        options = _choices(record["choices"])
    else:
        options = _user_choices(record)
        if options is None:
            raise BadRecord("it has neither choices nor choice0..choiceN columns")
    answer = _field(record, "answer")
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())  # MMLU's answer column is an index, even when the choices are numbers
    gold = _answer_index(answer, options)
    fallback = f"{subject or prefix}-{index}"
    return Item(id=_id(record, fallback), prompt=mmlu_prompt(question, options, subject), answer=str(gold), choices=tuple(LETTERS[: len(options)]))


CLICK_SHOWN_OPTIONS = 4  # lm-eval's get_context names A-D and lists four options, also for CSAT's five


def click_prompt(paragraph: str, question: str, options: Sequence[str]) -> str:
    """lm-eval's CLIcK context (click_cul / click_lang utils.get_context), character for character.

    lm-eval always says "A, B, C, D" and lists the first four options, so a CSAT item's fifth option is scored
    as E but never shown; that is copied so scores compare. Only an item with fewer than four options (which
    lm-eval cannot read) is shown all of its options with their letters.
    """
    shown = list(options[:CLICK_SHOWN_OPTIONS])
    letters = LETTERS[: len(shown)]
    listed = f"A:{shown[0]}" + "".join(f", {letters[i]}: {shown[i]}" for i in range(1, len(shown)))
    letter_list = ", ".join(letters)
    if paragraph:
        head = f"주어진 맥락을 천천히 읽고, 질문에 대한 적절한 정답을 {letter_list} 중에 골라 알파벳 하나로 답하시오.\n\n맥락: {paragraph}\n질문: {question}"
    else:
        head = f"주어진 질문을 천천히 읽고, 적절한 정답을 {letter_list} 중에 골라 알파벳 하나로 답하시오.\n\n질문: {question}"
    return f"{head}\n보기:\n{listed}\n정답:"


def click_letters(item_id: str, options: Sequence[str]) -> tuple[str, ...]:
    """The letters scored: lm-eval's rule (A-E when the id names a CSAT item, else A-D) for items of four or
    five options; one letter per option otherwise."""
    if len(options) in (4, 5):
        return tuple(LETTERS[:5] if "CSAT" in item_id else LETTERS[:4])
    return tuple(LETTERS[: len(options)])


def click_item(record: Record, index: int, prefix: str = "click") -> Item:
    """CLIcK: `id, paragraph, question, choices[], answer` where answer is the choice TEXT; scored on letters."""
    question = _text(_field(record, "question"), "question")
    options = _choices(_field(record, "choices"))
    answer = _text(_field(record, "answer"), "answer")
    if answer not in options:
        raise BadRecord("its answer is not the text of one of its choices")
    paragraph = str(record.get("paragraph") or "")
    item_id = _id(record, f"{prefix}-{index}")
    letters = click_letters(str(record.get("id") or ""), options)
    gold = options.index(answer)
    if gold >= len(letters):
        raise BadRecord(f"its answer is option {gold + 1}, but lm-eval's CLIcK scores only {len(letters)} letters "
                        "for an item whose id does not name a CSAT exam")
    return Item(id=item_id, prompt=click_prompt(paragraph, question, options), answer=str(gold), choices=letters)


def musr_item(record: Record, index: int, prefix: str = "musr") -> Item:
    """MuSR (HF `TAUR-Lab/MuSR`): `narrative, question, choices` (stringified list), `answer_index`
    (or `answer_choice`). lm-eval leaderboard_musr prompt; choices are the full option texts."""
    narrative = _text(_field(record, "narrative"), "narrative")
    question = _text(_field(record, "question"), "question")
    options = _choices(_field(record, "choices"))
    if record.get("answer_index") is not None:
        try:
            gold = _answer_index(int(record["answer_index"]), options)
        except (TypeError, ValueError):
            raise BadRecord("its answer_index is not a whole number") from None
    else:
        gold = _answer_index(_text(_field(record, "answer_choice"), "answer_choice"), options)
    listed = "".join(f"{i + 1} - {c}\n" for i, c in enumerate(options))
    prompt = f"{narrative}\n\n{question}\n\n{listed}\nAnswer:"
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=prompt, answer=str(gold), choices=options)


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gsm8k_item(record: Record, index: int, prefix: str = "gsm8k") -> Item:
    """GSM8K: `question`, `answer` ending "#### N" → generative item with gold N (commas dropped)."""
    question = _text(_field(record, "question"), "question")
    match = _GSM8K_FINAL.search(_text(_field(record, "answer"), "answer"))
    if not match:
        raise BadRecord("its answer does not end with '#### <number>'")
    gold = match.group(1).replace(",", "").strip()
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=f"Question: {question}\nAnswer:", answer=gold)


FORMATS: dict[str, Callable[..., Item]] = {
    "user": user_item,
    "arc": arc_item,
    "mmlu": mmlu_item,
    "click": click_item,
    "musr": musr_item,
    "gsm8k": gsm8k_item,
    "piqa": piqa_item,
    "hellaswag": hellaswag_item,
    "winogrande": winogrande_item,
    "truthfulqa_mc1": truthfulqa_mc1_item,
}
