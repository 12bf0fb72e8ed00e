"""PIQA, HellaSwag, Winogrande and TruthfulQA (MC1): `record -> Item` for their published files and Hub datasets.

Prompts and choices copy lm-evaluation-harness 0.4's task YAMLs (piqa, hellaswag, winogrande, truthfulqa_mc1),
so `acc` / `acc_norm` here mean what they mean there; tests/test_formats.py checks them against lm-eval's own
configs. Two knowing differences, both forced by Darwin's choice scorer (one context per item, each choice
appended after a space):

* Winogrande: lm-eval scores the *same* continuation (the sentence after the blank) after two contexts (the
  sentence up to the blank, filled with each option): "partial evaluation". Darwin scores each option *with*
  the rest of the sentence after the shared context before the blank: P(option + rest | start) instead of
  P(rest | start + option). The full texts are the same (but for one space when the blank follows no space,
  as in '"_', since the scorer puts a space between context and choice; a blank that opens the sentence is
  scored after an empty context, the tokenizer's BOS); the number is comparable in direction, not equal.
* TruthfulQA MC2 (several true answers, scored as the probability mass on them) needs a per-item score that
  is not right/wrong, which Darwin's scorer does not have; only MC1 (one true answer) is offered.
"""

from __future__ import annotations

import re
from typing import Any

from darwin_core.fitness.fields import BadRecord, Record, _choices, _field, _id, _text
from darwin_core.fitness.tasks import Item

__all__ = ["TRUTHFULQA_QA_PRIMER", "hellaswag_item", "hellaswag_preprocess", "piqa_item", "truthfulqa_mc1_item",
           "winogrande_item"]


def _label(value: Any, count: int, what: str, *, base: int = 0) -> int:
    """A gold label given as an int or a digit string, `base`-numbered (Winogrande's "1"/"2" is 1-based)."""
    if isinstance(value, bool):
        raise BadRecord(f"its {what} is true/false, not a choice number")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise BadRecord(f"its {what} {value!r} is not a whole number (an unlabelled test split cannot be scored)")
    if not base <= value < base + count:
        raise BadRecord(f"its {what} {value} is out of range for {count} choices")
    return value - base


def piqa_item(record: Record, index: int, prefix: str = "piqa") -> Item:
    """PIQA (`goal, sol1, sol2, label`; the original release keeps labels in `<split>-labels.lst`, which
    `sources.read_items` joins in). lm-eval piqa: "Question: {goal}\\nAnswer:", choices [sol1, sol2]."""
    goal = _text(_field(record, "goal"), "goal")
    choices = _choices([_field(record, "sol1"), _field(record, "sol2")])
    gold = _label(_field(record, "label"), 2, "label")
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=f"Question: {goal}\nAnswer:", answer=str(gold), choices=choices)


def hellaswag_preprocess(text: str) -> str:
    """lm-eval hellaswag utils.preprocess: WikiHow's bracket artifacts dropped, double spaces collapsed once."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_item(record: Record, index: int, prefix: str = "hellaswag") -> Item:
    """HellaSwag (`activity_label, ctx_a, ctx_b, endings[], label`: the published jsonl and `Rowan/hellaswag`).
    lm-eval hellaswag process_docs: query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())."""
    activity = _text(_field(record, "activity_label"), "activity_label")
    ctx_a = str(_field(record, "ctx_a"))
    ctx_b = str(record.get("ctx_b") or "")
    endings = _field(record, "endings")
    if not isinstance(endings, list):
        raise BadRecord("its endings are not a list")
    choices = _choices([hellaswag_preprocess(str(ending)) for ending in endings])
    gold = _label(record.get("label"), len(choices), "label")
    query = hellaswag_preprocess(activity + ": " + ctx_a + " " + ctx_b.capitalize())
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=query, answer=str(gold), choices=choices)


def winogrande_item(record: Record, index: int, prefix: str = "winogrande") -> Item:
    """Winogrande (`qID, sentence` with one `_`, `option1, option2, answer` "1"/"2"; jsonl and `allenai/winogrande`).

    Prompt = the sentence before the blank; choices = each option followed by the rest of the sentence (the
    module doc says how this differs from lm-eval's partial evaluation)."""
    sentence = _text(_field(record, "sentence"), "sentence")
    if "_" not in sentence:
        raise BadRecord("its sentence has no blank ('_')")
    blank = sentence.index("_")  # the first '_', as lm-eval's preprocess_winogrande takes it
    before, after = sentence[:blank], sentence[blank + 1:]
    options = [_text(_field(record, "option1"), "option1"), _text(_field(record, "option2"), "option2")]
    choices = _choices([option + after for option in options])
    gold = _label(_field(record, "answer"), 2, "answer", base=1)
    return Item(id=_id({"id": record.get("qID", record.get("id"))}, f"{prefix}-{index}"), prompt=before.rstrip(),
                answer=str(gold), choices=choices)


TRUTHFULQA_QA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)  # lm-eval truthfulqa_mc1's doc_to_text, before "\n\nQ: {question}\nA:"


def _targets(value: Any) -> tuple[list[str], list[int]]:
    """mc1_targets as published: {answer text: 0/1} (TruthfulQA's data/mc_task.json) or
    {"choices": [...], "labels": [...]} (the Hub's `truthfulqa/truthful_qa`, config multiple_choice)."""
    if isinstance(value, dict) and "choices" in value and "labels" in value:
        texts, labels = list(value["choices"]), list(value["labels"])
    elif isinstance(value, dict):
        texts, labels = list(value), list(value.values())
    else:
        raise BadRecord("its mc1_targets is neither {answer: label} nor {choices, labels}")
    if len(texts) != len(labels) or any(label not in (0, 1) or isinstance(label, bool) for label in labels):
        raise BadRecord("its mc1_targets labels are not one 0/1 per choice")
    return [str(t) for t in texts], [int(label) for label in labels]


def truthfulqa_mc1_item(record: Record, index: int, prefix: str = "truthfulqa_mc1") -> Item:
    """TruthfulQA MC1 (`question, mc1_targets`): one true answer among the choices, lm-eval's six-shot QA primer.

    lm-eval takes the first choice as the gold (the published files put the true one first); the gold here is
    the choice labelled 1, which is the same on the published files and refuses a file with none or several."""
    question = _text(_field(record, "question"), "question")
    texts, labels = _targets(_field(record, "mc1_targets"))
    if labels.count(1) != 1:
        raise BadRecord(f"its mc1_targets has {labels.count(1)} true answers; MC1 needs exactly one")
    choices = _choices(texts)
    prompt = f"{TRUTHFULQA_QA_PRIMER}\n\nQ: {question}\nA:"
    return Item(id=_id(record, f"{prefix}-{index}"), prompt=prompt, answer=str(labels.index(1)), choices=choices)
