"""Where fitness tasks come from: user files, benchmark files in their own published formats, Hub datasets,
and lm-evaluation-harness tasks. Every source ends as a `Task` with a seeded search / held-out split.

A *format* is a function `record -> Item`; the same function serves a local file and the
Hub dataset in that schema, so ARC from `ARC-Challenge-Dev.jsonl` and ARC from
`allenai/ai2_arc` give the same prompts. Prompts copy lm-evaluation-harness's task
YAMLs (arc_easy/arc_challenge, mmlu, click, leaderboard_musr, gsm8k), so a score here
means what the same score means there.

User file schema (JSONL, JSON list or CSV, one item per row/line):

    {"id": optional str, "prompt" or "question": str,
     "choices": optional list of str, "answer": index (0-based int), letter (A, B, ...) or text}

With "choices" the item is scored by log-likelihood (the prompt is the context, each
choice is appended after a space); without, by generation and exact match of the
extracted answer. In CSV, choices are a "choices" column holding a JSON list, or
columns choice0, choice1, ...; CSV cells are text, so an answer is read as a choice's
text first, then as a letter, then as an index. Rows must be all multiple choice or
all generative.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.fitness.tasks import Item, Task, split_items

HELDOUT_FRACTION = 0.5
GENERATE_MAX_NEW_TOKENS = 256  # room for a chain of thought before the final number (GSM8K)
LETTERS = string.ascii_uppercase

Record = dict[str, Any]


class BadRecord(ValueError):
    """A row that does not fit its format; turned into a DarwinError that names the file and line."""


# ---------------------------------------------------------------------------------------------
# Field helpers


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


def _answer_index(answer: Any, choices: Sequence[str]) -> int:
    """An answer given as 0-based index (int), as a choice's text, as a letter, or as a digit string (in that order)."""
    if isinstance(answer, bool):
        raise BadRecord("its answer is true/false, not a choice")
    if isinstance(answer, int):
        index = answer
    elif isinstance(answer, float) and answer.is_integer():
        index = int(answer)
    elif isinstance(answer, str):
        text = answer.strip()
        if text in choices:
            return choices.index(text)
        if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
            return LETTERS.index(text.upper())
        if text.isdigit():
            index = int(text)
        else:
            raise BadRecord(f"its answer {answer!r} is not one of its choices, a letter or an index")
    else:
        raise BadRecord("its answer is not an index, a letter or a choice")
    if not 0 <= index < len(choices):
        raise BadRecord(f"its answer index {index} is out of range for {len(choices)} choices")
    return index


def _id(record: Record, fallback: str) -> str:
    value = record.get("id")
    if value is None or str(value).strip() == "":
        return fallback
    return str(value)


# ---------------------------------------------------------------------------------------------
# Formats (record -> Item); `prefix` makes fallback ids unique per source


def user_item(record: Record, index: int, prefix: str = "item") -> Item:
    prompt = _text(_field(record, "prompt", "question"), "prompt")
    item_id = _id(record, f"{prefix}-{index}")
    choices = _user_choices(record)
    answer = _field(record, "answer")
    if choices is None:
        return Item(id=item_id, prompt=prompt, answer=_text(answer, "answer").strip())
    return Item(id=item_id, prompt=prompt, answer=str(_answer_index(answer, choices)), choices=choices)


def _user_choices(record: Record) -> tuple[str, ...] | None:
    if record.get("choices") not in (None, ""):
        return _choices(record["choices"])
    numbered = []
    while record.get(f"choice{len(numbered)}") not in (None, ""):
        numbered.append(record[f"choice{len(numbered)}"])
    return _choices(numbered) if numbered else None


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


def click_prompt(paragraph: str, question: str, options: Sequence[str]) -> str:
    """lm-eval's CLIcK context (click_cul / click_lang utils.get_context), listing every option."""
    letters = LETTERS[: len(options)]
    listed = f"A:{options[0]}" + "".join(f", {letters[i]}: {options[i]}" for i in range(1, len(options)))
    letter_list = ", ".join(letters)
    if paragraph:
        head = f"주어진 맥락을 천천히 읽고, 질문에 대한 적절한 정답을 {letter_list} 중에 골라 알파벳 하나로 답하시오.\n\n맥락: {paragraph}\n질문: {question}"
    else:
        head = f"주어진 질문을 천천히 읽고, 적절한 정답을 {letter_list} 중에 골라 알파벳 하나로 답하시오.\n\n질문: {question}"
    return f"{head}\n보기:\n{listed}\n정답:"


def click_item(record: Record, index: int, prefix: str = "click") -> Item:
    """CLIcK: `id, paragraph, question, choices[], answer` where answer is the choice TEXT; scored on letters."""
    question = _text(_field(record, "question"), "question")
    options = _choices(_field(record, "choices"))
    answer = _text(_field(record, "answer"), "answer")
    if answer not in options:
        raise BadRecord("its answer is not the text of one of its choices")
    paragraph = str(record.get("paragraph") or "")
    return Item(
        id=_id(record, f"{prefix}-{index}"),
        prompt=click_prompt(paragraph, question, options),
        answer=str(options.index(answer)),
        choices=tuple(LETTERS[: len(options)]),
    )


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
}

# Hub dataset id -> (format, config, split); split None = all splits in order.
HUB_DATASETS: dict[str, tuple[str, str | None, str | None]] = {
    "allenai/ai2_arc": ("arc", "ARC-Challenge", "test"),
    "cais/mmlu": ("mmlu", "all", "test"),
    "EunsuKim/CLIcK": ("click", None, "train"),
    "TAUR-Lab/MuSR": ("musr", None, None),
    "openai/gsm8k": ("gsm8k", "main", "test"),
}


# ---------------------------------------------------------------------------------------------
# Records -> Task


def task_from_items(
    name: str,
    items: Sequence[Item],
    *,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    max_new_tokens: int | None = None,
    description: str = "",
) -> Task:
    """A Task over `items` with the seeded search / held-out split (kind from whether items have choices)."""
    if len(items) < 2:
        raise DarwinError(f"Task {name!r} has {len(items)} item(s); it needs at least two to split into search and held-out parts.")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DarwinError(f"Task {name!r} has two items with the id {item.id!r}; ids must be unique.")
        seen.add(item.id)
    with_choices = sum(item.choices is not None for item in items)
    if 0 < with_choices < len(items):
        raise DarwinError(f"Task {name!r} mixes multiple-choice and generative items; put them in separate tasks.")
    kind = "choice" if with_choices else "generate"
    if not 0 < heldout_fraction < 1:
        raise DarwinError("The held-out fraction must be between 0 and 1.")
    search, heldout = split_items(list(items), heldout_fraction, seed)
    if not search:
        raise DarwinError(f"Task {name!r} is too small to keep items for the search after the held-out split.")
    tokens = max_new_tokens if max_new_tokens is not None else (16 if kind == "choice" else GENERATE_MAX_NEW_TOKENS)
    return Task(name=name, kind=kind, search=search, heldout=heldout, max_new_tokens=tokens, description=description)


def _items_from_records(
    records: Iterable[tuple[int, Record]], adapter: Callable[..., Item], where: Callable[[int], str], **kwargs: Any
) -> list[Item]:
    items = []
    for number, record in records:
        if not isinstance(record, dict):
            raise DarwinError(f"{where(number)} is not an object with named fields.")
        try:
            items.append(adapter(record, number, **kwargs))
        except BadRecord as error:
            raise DarwinError(f"{where(number)} cannot be read: {error}.") from None
    return items


def read_records(path: Path) -> list[tuple[int, Record]]:
    """(line number or position, record) of a .jsonl, .json (list) or .csv file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DarwinError(f"The task file {path} does not exist.") from None
    except UnicodeDecodeError:
        raise DarwinError(f"The task file {path.name} is not UTF-8 text.") from None
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError:
                raise DarwinError(f"{path.name} line {number} is not valid JSON.") from None
        return records
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DarwinError(f"{path.name} is not valid JSON (line {error.lineno}).") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DarwinError(f"{path.name} must hold a JSON list of items.")
        return list(enumerate(data, start=1))
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise DarwinError(f"{path.name} has no header row.")
        records = []
        for row in reader:
            if None in row:
                raise DarwinError(f"{path.name} line {reader.line_num} has more cells than the header.")
            records.append((reader.line_num, dict(row)))
        return records
    raise DarwinError(f"{path.name} is not a .jsonl, .json or .csv file.")


def read_items(path: str | Path, *, format: str = "user", limit: int | None = None) -> list[Item]:
    """The items of one file in `format` ("user", "arc", "mmlu", "click", "musr", "gsm8k"), in file order.

    Bad rows raise a DarwinError naming the file and the line (JSONL/CSV) or position (JSON list).
    For MMLU csv files named `<subject>_dev.csv` / `<subject>_test.csv`, the subject comes from the name.
    """
    path = Path(path)
    if format not in FORMATS:
        raise DarwinError(f"Unknown task format {format!r}; use one of {', '.join(FORMATS)}.")
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    unit = "item" if path.suffix.lower() == ".json" else "line"
    kwargs: dict[str, Any] = {"prefix": path.stem}
    if format == "mmlu":
        kwargs["subject"] = re.sub(r"_(dev|val|test)$", "", path.stem)
    return _items_from_records(records, FORMATS[format], lambda n: f"{path.name} {unit} {n}", **kwargs)


def load_task(
    paths: str | Path | Sequence[str | Path],
    *,
    format: str = "user",
    name: str | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    limit: int | None = None,
    max_new_tokens: int | None = None,
) -> Task:
    """A task from one file, or from several files of one format (all MMLU subjects, all CLIcK categories).

    `limit` keeps the first items of each file. The task is named after the (first) file unless `name` is
    given. With several files, item ids become "<file stem>/<id>", since benchmarks reuse ids across files.
    """
    many = not isinstance(paths, (str, Path))
    files = [Path(p) for p in paths] if many else [Path(paths)]
    if not files:
        raise DarwinError("No task file was given.")
    items: list[Item] = []
    for path in files:
        part = read_items(path, format=format, limit=limit)
        if len(files) > 1:  # ids are unique within a file, not across files (CLIcK reuses them)
            part = [replace(item, id=f"{path.stem}/{item.id}") for item in part]
        items.extend(part)
    return task_from_items(
        name or files[0].stem, items, heldout_fraction=heldout_fraction, seed=seed, max_new_tokens=max_new_tokens
    )


def load_hub_task(
    dataset_id: str,
    *,
    format: str | None = None,
    config: str | None = None,
    split: str | None = None,
    name: str | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    limit: int | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    max_new_tokens: int | None = None,
) -> Task:
    """A task from a Hub dataset (or a local dataset folder) through `datasets.load_dataset`.

    Known ids (HUB_DATASETS) bring their format, config and split; others need `format`.
    """
    try:
        import datasets
    except ImportError:
        raise DarwinError("Install `datasets` to load Hub datasets (pip install datasets).") from None
    known_format, known_config, known_split = HUB_DATASETS.get(dataset_id, (None, None, None))
    format = format or known_format
    if format is None:
        raise DarwinError(f"Say which format the dataset {dataset_id} is in (one of {', '.join(FORMATS)}).")
    if format not in FORMATS:
        raise DarwinError(f"Unknown task format {format!r}; use one of {', '.join(FORMATS)}.")
    config = config if config is not None else known_config
    split = split if split is not None else known_split
    try:
        loaded = datasets.load_dataset(dataset_id, config, split=split, token=token, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as error:  # datasets raises many types (not found, gated, offline, bad config)
        raise DarwinError(f"The dataset {dataset_id} could not be loaded: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    parts = [(split, loaded)] if split is not None else list(loaded.items())
    items: list[Item] = []
    short = dataset_id.rstrip("/").split("/")[-1]
    for part_name, part in parts:
        prefix = short if split is not None else f"{short}-{part_name}"
        records = list(enumerate(part))
        items.extend(
            _items_from_records(records, FORMATS[format], lambda n, p=part_name: f"{dataset_id} ({p}) row {n}", prefix=prefix)
        )
    if limit is not None:
        items = items[:limit]
    return task_from_items(name or short, items, heldout_fraction=heldout_fraction, seed=seed, max_new_tokens=max_new_tokens)


# ---------------------------------------------------------------------------------------------
# lm-evaluation-harness bridge


def tasks_from_lm_eval(
    task_names: Sequence[str],
    *,
    include_path: str | Path | None = None,
    include_defaults: bool = True,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    limit: int | None = None,
) -> list[Task]:
    """lm-eval multiple-choice tasks as Darwin tasks: prompt = lm-eval's zero-shot context (description +
    doc_to_text), choices = doc_to_choice, answer = doc_to_target. Groups expand to their subtasks.

    include_path: a folder of your own task YAMLs; include_defaults=False skips indexing lm-eval's
    thousands of built-in tasks (seconds saved when only your own tasks are needed).
    """
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise DarwinError("Install `lm-eval` to use lm-evaluation-harness tasks (pip install lm-eval).") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    try:
        loaded = manager.load(list(task_names))["tasks"]
    except Exception as error:  # unknown names, datasets that cannot be fetched, bad YAML
        raise DarwinError(f"lm-evaluation-harness could not load {', '.join(task_names)}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    tasks = []
    for task_name, lm_task in loaded.items():
        if lm_task.OUTPUT_TYPE != "multiple_choice":
            raise DarwinError(f"The lm-eval task {task_name} is {lm_task.OUTPUT_TYPE}; only multiple-choice tasks can be used.")
        delimiter = lm_task.config.target_delimiter
        if delimiter != " ":
            raise DarwinError(f"The lm-eval task {task_name} puts {delimiter!r} between prompt and answer; only ' ' is supported.")
        items = []
        for index, doc in enumerate(lm_task.eval_docs):
            if limit is not None and index >= limit:
                break
            prompt = lm_task.fewshot_context(doc, 0)
            choices = tuple(str(c) for c in lm_task.doc_to_choice(doc))
            target = lm_task.doc_to_target(doc)
            if isinstance(target, list):
                raise DarwinError(f"The lm-eval task {task_name} has several gold answers per item, which is not supported.")
            if isinstance(target, str):
                if target not in choices:
                    raise DarwinError(f"The lm-eval task {task_name} doc {index} has a gold answer that is not one of its choices.")
                target = choices.index(target)
            if not 0 <= int(target) < len(choices):
                raise DarwinError(f"The lm-eval task {task_name} doc {index} has a gold index out of range.")
            items.append(Item(id=f"{task_name}-{index}", prompt=prompt, answer=str(int(target)), choices=choices))
        tasks.append(task_from_items(task_name, items, heldout_fraction=heldout_fraction, seed=seed))
    return tasks
