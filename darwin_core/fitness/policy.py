"""Which fitness tasks a run may name when nobody trusts the person who named them (local mode off: a Space).

lm-evaluation-harness executes code named in a task YAML (`!function utils.process_docs` imports a Python file
next to the YAML), and it accepts a YAML *path* wherever it accepts a task name; `datasets.load_dataset`
reads any local folder it is given. So with local mode off:

- `lm_eval` tasks are registered names from `LM_EVAL_ALLOWED` only: multiple-choice tasks shipped with
  lm-eval whose YAML chain (the file and what it includes from lm-eval's own folder) has no `!function`
  (tests/test_task_policy.py checks the installed lm-eval); never a path, never an include folder;
- `file` tasks are data files the page itself copied into the runs folder's uploads area (JSONL, JSON, CSV,
  parsed as data); a list or a glob pattern only when every path and every match is such a file;
- `hub` tasks are Hub dataset ids (never a folder on the server);
- demo tasks are always fine.

In local mode the user owns the machine and may name their own lm-eval YAML, folder or file.
The rule runs twice: when a run is submitted (one sentence before anything is written) and in the worker before
any task is loaded (a config written by hand gets the same answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError

UPLOADS = ".uploads"  # <runs dir>/.uploads/<content hash>/<file name>: where the page keeps uploaded task files
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
LM_EVAL_ALLOWED: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "piqa",
    "sciq",
    "openbookqa",
    "truthfulqa_mc1",
    "commonsense_qa",
)
_GLOB = re.compile(r"[*?[]")
_HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$|^[A-Za-z0-9][A-Za-z0-9._-]*$")


def uploads_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / UPLOADS


def check_untrusted_task(spec: Any, *, runs_dir: str | Path | None) -> None:
    """Refuse, in one sentence, a task a visitor could turn into code or a read of the server's disk."""
    source, ref = str(spec.source), str(spec.ref)
    if source == "demo":
        return
    if source == "lm_eval":
        if getattr(spec, "include_path", None):
            raise DarwinError("On a public Space an lm-evaluation-harness task cannot name an include_path "
                              "(a folder of task YAMLs may run code and override the built-in tasks).")
        if ref not in LM_EVAL_ALLOWED:
            raise DarwinError(f"On a public Space only these lm-evaluation-harness tasks can be used: "
                              f"{', '.join(LM_EVAL_ALLOWED)} (not {_short(ref)}).")
        return
    if source == "hub":
        if not _HUB_DATASET_ID.match(ref) or ".." in ref:
            raise DarwinError(f"{_short(ref)} is not a Hub dataset id (expected org/name); "
                              "folders on the server cannot be named on a public Space.")
        return
    if source == "file":
        _check_uploaded_files(spec.ref, runs_dir)
        return
    raise DarwinError(f"Unknown task source {source!r}.")


def _check_uploaded_files(ref: Any, runs_dir: str | Path | None) -> None:
    """Every path of a `file:` task (one, a list, or what a pattern matches) is a data file in the uploads area."""
    from darwin_core.fitness.sources import expand_task_paths

    named = [str(r) for r in ref] if isinstance(ref, (list, tuple)) else [str(ref)]
    for text in named:
        _check_uploaded_file(Path(text), runs_dir)
    if any(_GLOB.search(text) for text in named):  # a pattern: also what it matches (no symlink out)
        for path in expand_task_paths(named):
            _check_uploaded_file(path, runs_dir)


def _check_uploaded_file(path: Path, runs_dir: str | Path | None) -> None:
    if runs_dir is None or not _inside(path, uploads_dir(runs_dir)) or path.suffix.lower() not in DATA_SUFFIXES:
        raise DarwinError(f"On a public Space a task file must be uploaded on the page (.jsonl, .json or .csv); "
                          f"{_short(path.name or str(path))} was not.")


def check_untrusted_tasks(specs: Iterable[Any], *, runs_dir: str | Path | None) -> None:
    for spec in specs:
        check_untrusted_task(spec, runs_dir=runs_dir)


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _short(text: str, limit: int = 80) -> str:
    """A visitor's string in a sentence, cut short (a sentence never echoes a 200k-character input)."""
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def materialize_task(task: Any, runs_dir: str | Path) -> Path:
    """A loaded task (from the Hub or lm-eval) written as a data file in the uploads area, so a public server's
    worker reads only data the page fetched with the visitor's own token, and never asks the Hub itself.

    Item ids are kept, so the file splits into the same search / held-out items (the split hashes ids);
    a choice item's answer is written as its index (an int), never as text that could match a choice.
    """
    import hashlib
    import json

    from darwin_core.io.runfolder import atomic_write_text

    lines = []
    for item in (*task.search, *task.heldout):
        record: dict[str, Any] = {"id": item.id, "prompt": item.prompt}
        if item.choices is not None:
            record.update(choices=list(item.choices), answer=int(item.answer))
        else:
            record["answer"] = item.answer
        lines.append(json.dumps(record, ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(task.name))[:80] or "task"
    target = uploads_dir(runs_dir) / digest / f"{safe}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
    return target
