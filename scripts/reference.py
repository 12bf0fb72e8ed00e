"""The reference of everything a user writes or reads, generated from the code; writes docs/reference.md.

    python scripts/reference.py [--out docs/reference.md]

Every breed.yaml setting and task entry (the `doc` metadata of `EvolutionConfig` and `TaskSpec` fields), every
recipe field (`RECIPE_FIELD_DOCS` beside `Recipe`), the task-file formats (`darwin_core.fitness.formats` and
`sources`) and the run folder's files (the layout in `darwin_core.io.runfolder`). tests/test_reference.py
checks that the file equals what this script writes and that no field lacks its meaning, so a setting added
to the code without a sentence fails the tests, and so does a reference not regenerated after a change.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from enum import Enum
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "docs" / "reference.md"
HEADER = """# Reference

Generated from the code by `python scripts/reference.py`; `tests/test_reference.py` fails when this file and
the code disagree. Relative paths in a config file (local parents, task files, a scan file) are read from the
config file's folder.
"""


def _cell(text: str) -> str:
    """Text as one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, tuple):
        value = [item.to_yaml() if hasattr(item, "to_yaml") else item for item in value]
    elif hasattr(value, "to_dict"):  # a recipe table: its YAML form
        value = value.to_dict()
    elif isinstance(value, Enum):
        value = value.value
    return f"`{yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}`"


def missing_docs(cls: type, docs: dict[str, str] | None = None) -> list[str]:
    """Fields of a dataclass with no meaning written down (in their metadata, or in `docs`)."""
    return [f.name for f in dataclasses.fields(cls)
            if not (docs or {}).get(f.name, f.metadata.get("doc", "")).strip()]


def field_table(cls: type, docs: dict[str, str] | None = None) -> str:
    """A markdown table of a dataclass's fields: name, type, default, meaning."""
    rows = ["| Field | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        meaning = (docs or {}).get(field.name) or field.metadata.get("doc", "")
        rows.append(f"| `{field.name}` | `{_cell(field.type)}` | {_cell(_default(field))} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def config_section() -> str:
    from darwin_core.evolution.config import EvolutionConfig, TaskSpec

    return (
        "## breed.yaml: the evolution config\n\n"
        "Every setting but `father` and `mother` is optional. A run saves its config as `config.yaml` in its "
        "run folder; the same file runs it again (`python -m darwin_core evolve config.yaml`).\n\n"
        f"{field_table(EvolutionConfig)}\n"
        "### Task entries (`tasks:`)\n\n"
        "A task is a string — a demo skill (`reverse`), a file path ending in .jsonl/.json/.csv, "
        "`file:<path>`, `hub:<dataset id>` or `lm_eval:<task>` — or a mapping with exactly one of "
        f"{', '.join(f'`{s}`' for s in TaskSpec.SOURCES)} and any of the settings below.\n\n"
        f"{field_table(TaskSpec)}"
    )


def recipe_section() -> str:
    from darwin_core.recipe.recipe import FORMAT, RECIPE_FIELD_DOCS, RECIPE_FILE, Recipe

    return (
        "## The recipe (`merge RECIPE.yaml`)\n\n"
        f"A recipe fully determines a child; every child folder carries its own as `{RECIPE_FILE}`. "
        f"Its YAML starts with `format: {FORMAT}`; `python -m darwin_core merge RECIPE.yaml --out DIR` writes "
        "the child.\n\n"
        f"{field_table(Recipe, RECIPE_FIELD_DOCS)}"
    )


def _user_schema() -> str:
    """The user file schema as formats.py's docstring states it (from "User file schema" to the end)."""
    from darwin_core.fitness import formats

    text = inspect.getdoc(formats) or ""
    at = text.find("User file schema")
    return text[at:].strip() + "\n" if at >= 0 else ""


def tasks_section() -> str:
    from darwin_core.fitness import formats, sources
    from darwin_core.fitness.scoring import STOP_STRINGS

    rows = ["| Format | What it reads |", "| --- | --- |"]
    for name, reader in formats.FORMATS.items():
        summary = (inspect.getdoc(reader) or "").split("\n\n")[0]
        rows.append(f"| `{name}` | {_cell(summary)} |")
    hub = ["| Dataset | Format | Config | Split |", "| --- | --- | --- | --- |"]
    for dataset, (format, config, split) in sources.HUB_DATASETS.items():
        hub.append(f"| `{dataset}` | `{format}` | {config or '—'} | {split or 'every split'} |")
    stops = ", ".join(f"`{stop}`" for stop in STOP_STRINGS)
    return (
        "## Task files\n\n"
        f"{_user_schema()}\n"
        "A task's rows are all multiple choice (scored by log-likelihood of each choice) or all generative "
        "(scored by exact match of the extracted answer). A generative answer may take "
        f"{sources.GENERATE_MAX_NEW_TOKENS} new tokens unless the task entry sets `max_new_tokens`; it is cut at "
        f"the first stop string: {stops}.\n\n"
        "### Formats (`format:`)\n\n" + "\n".join(rows) + "\n\n"
        "### Hub datasets that bring their own format, config and split\n\n" + "\n".join(hub) + "\n"
    )


def run_folder_files() -> list[str]:
    """The file names runfolder.py defines as constants (CONFIG = "config.yaml", ...), in source order."""
    from darwin_core.io import runfolder

    states = (*runfolder.STATES, runfolder.INTERRUPTED)
    return [value for name, value in vars(runfolder).items()
            if name.isupper() and isinstance(value, str) and value not in states
            and re.fullmatch(r"\.?[a-z][a-z0-9_.-]*", value)]


def _layout_entries() -> dict[str, str]:
    """file → meaning from the layout in runfolder.py's docstring (an entry starts at four spaces; deeper
    indented lines continue it)."""
    from darwin_core.io import runfolder

    doc = inspect.getdoc(runfolder) or ""
    body = doc.split("Layout of", 1)[1].split("\n\n", 1)[1].split("\n\n", 1)[0]
    entries: dict[str, str] = {}
    last = None
    for line in body.splitlines():
        match = re.match(r"^ {4}(?! )(\S+)\s+(.*)$", line)
        if match:
            last = match.group(1).rstrip("/")
            entries[last] = match.group(2).strip()
        elif last and line.strip():
            entries[last] = f"{entries[last]} {line.strip()}"
    return entries


def _inline_comments() -> dict[str, str]:
    """file → the comment on its constant's line in runfolder.py (`PUBLISHED = "published.json"  # ...`)."""
    from darwin_core.io import runfolder

    comments = {}
    for line in inspect.getsource(runfolder).splitlines():
        match = re.match(r'^[A-Z_]+ = "([^"]+)"\s+#\s*(.+)$', line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def run_folder_entries() -> list[tuple[str, str]]:
    """(file, meaning) for every file of the layout and every file constant (meaning "" when none is written)."""
    layout, comments = _layout_entries(), _inline_comments()
    names = list(layout) + [name for name in run_folder_files() if name not in layout]
    return [(name, layout.get(name) or comments.get(name, "")) for name in names]


def run_folder_section() -> str:
    from darwin_core.io.runfolder import CHILD

    rows = ["| File | What it holds |", "| --- | --- |"]
    rows += [f"| `{name}{'/' if name == CHILD else ''}` | {_cell(meaning)} |" for name, meaning in run_folder_entries()]
    return ("## The run folder (`runs/<run_id>/`)\n\n"
            "The one source of truth about a run: the page, the CLI and the worker read it.\n\n" + "\n".join(rows) + "\n")


def reference_markdown() -> str:
    """The whole reference, as docs/reference.md holds it."""
    return "\n".join((HEADER, config_section(), recipe_section(), tasks_section(), run_folder_section()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write (default docs/reference.md)")
    args = parser.parse_args(argv)
    Path(args.out).write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
