"""Field helpers every task format shares, and the rule that decides what an answer cell names.

A string answer can name a choice three ways: by the choice's text, by a letter (A, B, ...) or by a 0-based
index. Usually at most one reading fits, or they agree. When they point at different choices (MMLU's test CSV:
choices "1", "2", "3", "4" and the answer "2", which is choice C by index and choice B by text), the row is
decided by the file: the reading that fits *every* multiple-choice row of the file wins (MMLU's answer column
is an index on every row, so it is read as an index). When no single reading fits every row, the row is refused
as ambiguous with a sentence that says how to write the answer. Nothing is guessed silently.
"""

from __future__ import annotations

import ast
import json
import string
from collections.abc import Iterable, Sequence
from typing import Any

LETTERS = string.ascii_uppercase

Record = dict[str, Any]

READINGS = ("text", "letter", "index")  # the ways a string answer can name a choice


class BadRecord(ValueError):
    """A row that does not fit its format; turned into a DarwinError that names the file and line."""


def _field(record: Record, *names: str) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    raise BadRecord(f"it has no {' or '.join(repr(n) for n in names)} field")


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"its {what} is not text")
    text = str(value)
    if not text.strip():
        raise BadRecord(f"its {what} is empty")
    return text


def _choices(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # a stringified list (MuSR on the Hub, a CSV "choices" cell)
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise BadRecord("its choices are not a list") from None
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise BadRecord("its choices are not a list of at least two options")
    choices = tuple(str(c) for c in value)
    if any(not c.strip() for c in choices):
        raise BadRecord("one of its choices is empty")
    return choices


def _id(record: Record, fallback: str) -> str:
    value = record.get("id")
    if value is None or str(value).strip() == "":
        return fallback
    return str(value)


def _user_choices(record: Record) -> tuple[str, ...] | None:
    if record.get("choices") not in (None, ""):
        return _choices(record["choices"])
    numbered = []
    while record.get(f"choice{len(numbered)}") not in (None, ""):
        numbered.append(record[f"choice{len(numbered)}"])
    return _choices(numbered) if numbered else None


# ---------------------------------------------------------------------------------------------
# What an answer names


def answer_readings(answer: Any, choices: Sequence[str]) -> dict[str, int]:
    """Every way `answer` names one of `choices`: {"text" | "letter" | "index": choice index}.

    A JSON number is an index and nothing else; a string may be a choice's text, a letter or a digit string.
    """
    if isinstance(answer, bool):
        return {}
    if isinstance(answer, int) or (isinstance(answer, float) and answer.is_integer()):
        return {"index": int(answer)} if 0 <= int(answer) < len(choices) else {}
    if not isinstance(answer, str):
        return {}
    text = answer.strip()
    readings: dict[str, int] = {}
    if text in choices:
        readings["text"] = choices.index(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        readings["letter"] = LETTERS.index(text.upper())
    if text.isdigit() and int(text) < len(choices):
        readings["index"] = int(text)
    return readings


def readings_of_every_row(records: Iterable[Record]) -> frozenset[str]:
    """The readings that fit the answer of every multiple-choice row (the file's rule for ambiguous rows).

    Rows that cannot be read (no choices, bad choices) are skipped here; reading them reports the problem.
    """
    fitting = set(READINGS)
    for record in records:
        try:
            choices = _user_choices(record) if isinstance(record, dict) else None
        except BadRecord:
            continue
        if choices is None or record.get("answer") is None:
            continue
        fitting &= set(answer_readings(record["answer"], choices))
    return frozenset(fitting)


def _answer_index(answer: Any, choices: Sequence[str], file_readings: frozenset[str] | None = None) -> int:
    """The choice `answer` names: its only reading, the readings' common choice, or the file's rule (module doc)."""
    if isinstance(answer, bool):
        raise BadRecord("its answer is true/false, not a choice")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        if isinstance(answer, float) and not answer.is_integer():
            raise BadRecord("its answer is not an index, a letter or a choice")
        if not 0 <= int(answer) < len(choices):
            raise BadRecord(f"its answer index {int(answer)} is out of range for {len(choices)} choices")
        return int(answer)
    if not isinstance(answer, str):
        raise BadRecord("its answer is not an index, a letter or a choice")
    readings = answer_readings(answer, choices)
    if not readings:
        text = answer.strip()
        if text.isdigit():
            raise BadRecord(f"its answer index {int(text)} is out of range for {len(choices)} choices")
        raise BadRecord(f"its answer {answer!r} is not one of its choices, a letter or an index")
    if len(set(readings.values())) == 1:
        return next(iter(readings.values()))
    deciding = [kind for kind in readings if file_readings and kind in file_readings]
    if len(deciding) == 1:
        return readings[deciding[0]]
    meanings = " or ".join(f"choice {LETTERS[i]} by its {kind}" for kind, i in readings.items())
    raise BadRecord(
        f"its answer {answer.strip()!r} is ambiguous ({meanings}) and the file's other answers do not settle which; "
        "write answers as JSON numbers (0-based) or letters, or use the format of the benchmark (format: mmlu)"
    )
