"""Where fitness tasks come from: user files, benchmark files in their own published formats, Hub datasets,
and lm-evaluation-harness tasks. Every source ends as a `Task` with a seeded search / held-out split.

The formats themselves (`record -> Item`, one per published schema, and the user file schema) live in
`darwin_core.fitness.formats`; this module reads files, Hub datasets and lm-eval tasks through them, and
re-exports their public names. Rows of one task must be all multiple choice or all generative.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.fitness.formats import (
    FORMATS,
    LETTERS,
    BadRecord,
    Record,
    arc_item,
    click_item,
    click_prompt,
    gsm8k_item,
    hellaswag_item,
    mmlu_item,
    mmlu_prompt,
    musr_item,
    piqa_item,
    readings_of_every_row,
    truthfulqa_mc1_item,
    user_item,
    winogrande_item,
)
from darwin_core.fitness.tasks import Item, Task, split_items

__all__ = [
    "FORMATS", "GENERATE_MAX_NEW_TOKENS", "HELDOUT_FRACTION", "HUB_DATASETS", "LETTERS", "BadRecord", "Record",
    "arc_item", "click_item", "click_prompt", "expand_task_paths", "gsm8k_item", "hellaswag_item", "load_hub_task",
    "load_task", "mmlu_item", "mmlu_prompt", "musr_item", "piqa_item", "read_items", "read_records",
    "task_from_items", "tasks_from_lm_eval", "truthfulqa_mc1_item", "user_item", "winogrande_item",
]

HELDOUT_FRACTION = 0.5
GENERATE_MAX_NEW_TOKENS = 256  # room for a chain of thought before the final number (GSM8K)

# Hub dataset id -> (format, config, split); split None = all splits in order.
HUB_DATASETS: dict[str, tuple[str, str | None, str | None]] = {
    "allenai/ai2_arc": ("arc", "ARC-Challenge", "test"),
    "cais/mmlu": ("mmlu", "all", "test"),
    "EunsuKim/CLIcK": ("click", None, "train"),
    "TAUR-Lab/MuSR": ("musr", None, None),
    "openai/gsm8k": ("gsm8k", "main", "test"),
    "baber/piqa": ("piqa", None, "validation"),
    "ybisk/piqa": ("piqa", None, "validation"),
    "Rowan/hellaswag": ("hellaswag", None, "validation"),
    "allenai/winogrande": ("winogrande", "winogrande_xl", "validation"),
    "truthfulqa/truthful_qa": ("truthfulqa_mc1", "multiple_choice", "validation"),
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


def _format_kwargs(format: str, records: Sequence[tuple[int, Any]]) -> dict[str, Any]:
    """What a format needs to know about the whole source: the user format's answer rule is the file's."""
    if format == "user":
        return {"file_readings": readings_of_every_row(record for _, record in records)}
    return {}


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
    except IsADirectoryError:
        raise DarwinError(f"The task file {path} is a folder; name a .jsonl, .json or .csv file in it "
                          f"(or a pattern such as {Path(path) / '*.jsonl'}).") from None
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
    """The items of one file in `format` (a key of FORMATS), in file order.

    Bad rows raise a DarwinError naming the file and the line (JSONL/CSV) or position (JSON list).
    For MMLU csv files named `<subject>_dev.csv` / `<subject>_test.csv`, the subject comes from the name.
    A PIQA file without labels takes them from the original release's `<stem>-labels.lst` beside it.
    The user format's rule for ambiguous answers looks at the whole file, also when `limit` keeps fewer rows.
    """
    path = Path(path)
    if format not in FORMATS:
        raise DarwinError(f"Unknown task format {format!r}; use one of {', '.join(FORMATS)}.")
    records = read_records(path)
    if format == "piqa":
        records = _with_piqa_labels(path, records)
    kwargs: dict[str, Any] = {"prefix": path.stem, **_format_kwargs(format, records)}
    if limit is not None:
        records = records[:limit]
    unit = "item" if path.suffix.lower() == ".json" else "line"
    if format == "mmlu":
        kwargs["subject"] = re.sub(r"_(dev|val|test)$", "", path.stem)
    return _items_from_records(records, FORMATS[format], lambda n: f"{path.name} {unit} {n}", **kwargs)


def _with_piqa_labels(path: Path, records: list[tuple[int, Record]]) -> list[tuple[int, Record]]:
    """PIQA's original release: `train.jsonl` + `train-labels.lst` (one 0/1 per line, in order)."""
    labels_file = path.with_name(f"{path.stem}-labels.lst")
    if not labels_file.is_file() or all(isinstance(r, dict) and "label" in r for _, r in records):
        return records
    labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != len(records):
        raise DarwinError(f"{labels_file.name} has {len(labels)} labels for the {len(records)} items of {path.name}.")
    return [(n, {**r, "label": label} if isinstance(r, dict) else r) for (n, r), label in zip(records, labels)]


_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def expand_task_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files a `file:` task names: one path, a list of paths, and glob patterns among them (sorted matches).

    A path that exists is itself, even with glob characters in its name; a pattern that matches nothing is an
    error, so a typo never shrinks a task silently.
    """
    entries = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not entries:
        raise DarwinError("No task file was given.")
    files: list[Path] = []
    for entry in entries:
        text = str(entry)
        if _GLOB_CHARACTERS.search(text) and not Path(text).exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise DarwinError(f"The task file pattern {text} matches no file.")
            files.extend(matches)
        else:
            files.append(Path(text))
    duplicates = sorted({str(f) for f in files if files.count(f) > 1})
    if duplicates:
        raise DarwinError(f"The task file {duplicates[0]} is named twice.")
    return files


def _file_labels(files: Sequence[Path]) -> list[str]:
    """What prefixes each file's item ids: its stem, or its path without suffix when two files share a stem."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    return [str(f.with_suffix("")) for f in files]


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
    """A task from one file, or from several files of one format (all MMLU subjects, all CLIcK categories):
    a list of paths and glob patterns (`mmlu/*_test.csv`), see `expand_task_paths`.

    `limit` keeps the first items of each file. The task is named after the (first) file unless `name` is
    given. With several files, item ids become "<file stem>/<id>", since benchmarks reuse ids across files.
    """
    files = expand_task_paths(paths)
    items: list[Item] = []
    for path, label in zip(files, _file_labels(files)):
        part = read_items(path, format=format, limit=limit)
        if len(files) > 1:  # ids are unique within a file, not across files (CLIcK reuses them)
            part = [replace(item, id=f"{label}/{item.id}") for item in part]
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
        items.extend(_items_from_records(records, FORMATS[format], lambda n, p=part_name: f"{dataset_id} ({p}) row {n}",
                                         prefix=prefix, **_format_kwargs(format, records)))
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

    include_path: a folder (or list of folders) of your own task YAMLs, local mode only (a YAML there may run
    code, and overrides a built-in task of the same name; darwin_core.fitness.policy refuses it on a Space);
    include_defaults=False skips indexing lm-eval's thousands of built-in tasks (seconds saved when only your
    own tasks are needed).
    """
    folders = _include_folders(include_path)
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise DarwinError("Install `lm-eval` to use lm-evaluation-harness tasks (pip install lm-eval).") from None
    manager = TaskManager(include_path=folders or None, include_defaults=include_defaults)
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


def _include_folders(include_path: str | Path | Sequence[str | Path] | None) -> list[str]:
    """lm-eval include folders, each checked to be a folder (lm-eval skips a missing one without a word)."""
    if include_path is None or include_path == "":
        return []
    entries = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    folders = []
    for entry in entries:
        folder = Path(entry)
        if folder.is_file():
            raise DarwinError(f"The lm-eval include_path {folder} is a file; name the folder that holds your task YAMLs.")
        if not folder.is_dir():
            raise DarwinError(f"The folder {folder} does not exist.")
        folders.append(str(folder))
    return folders
