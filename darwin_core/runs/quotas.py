"""What one visitor of a public Space may ask for, so that no single request slows everyone else down.

Quotas apply whenever local mode is off (a Space, or a self-hosted public server); a local user owns the
machine and has none. Each limit is a setting read from the environment, with the default below:

| setting                          | default  | bounds                                                        |
|----------------------------------|----------|---------------------------------------------------------------|
| DARWIN_MAX_POPULATION            | 32       | candidates per generation                                     |
| DARWIN_MAX_GENERATIONS           | 50       | generations per run                                           |
| DARWIN_MAX_ITEMS                 | 2000     | fitness items per run (all tasks together)                    |
| DARWIN_MAX_CANDIDATES_PER_DAY    | 3000     | candidates a visitor may queue in 24 hours (population × gens)|
| DARWIN_MAX_QUEUED_RUNS           | 2        | a visitor's runs queued or running at once                    |
| DARWIN_MAX_UPLOAD_MB             | 10       | size of one uploaded task file                                |
| DARWIN_MAX_PROMPT_CHARS          | 4000     | characters in one task item (prompt and each choice)          |

Frozen layers are bounded by the father's layer count, checked before any list is built.
Every refusal is one sentence, raised before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from darwin_core.errors import DarwinError

ENV_PREFIX = "DARWIN_MAX_"
DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Quotas:
    """The limits of a public server (see the module docstring for the settings that change them)."""

    population: int = 32
    generations: int = 50
    items: int = 2000
    candidates_per_day: int = 3000
    queued_runs: int = 2
    upload_mb: int = 10
    prompt_chars: int = 4000

    @classmethod
    def from_env(cls) -> "Quotas":
        values: dict[str, int] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            text = os.environ.get(name, "").strip()
            if not text:
                continue
            if not text.isdigit() or int(text) < 1:
                raise DarwinError(f"{name} must be a whole number of at least 1, not {text!r}.")
            values[f.name] = int(text)
        return cls(**values)

    @property
    def upload_bytes(self) -> int:
        return self.upload_mb * 1024 * 1024

    def markdown(self) -> str:
        """The limits as the page shows them."""
        return (f"Limits on this server: population ≤ {self.population}, generations ≤ {self.generations}, "
                f"≤ {self.items} fitness items per run, ≤ {self.candidates_per_day} candidates per visitor per day, "
                f"≤ {self.queued_runs} queued or running runs per visitor, uploads ≤ {self.upload_mb} MB, "
                f"items ≤ {self.prompt_chars} characters.")


def check_budget(quotas: Quotas, *, population: int, generations: int) -> None:
    """The search budget of one run (before its config is built)."""
    if population > quotas.population:
        raise DarwinError(f"The population is limited to {quotas.population} on this server (asked: {population}).")
    if generations > quotas.generations:
        raise DarwinError(f"Generations are limited to {quotas.generations} on this server (asked: {generations}).")


def check_visitor(quotas: Quotas, *, active_runs: int, candidates_today: int, candidates_asked: int) -> None:
    """What this visitor already has queued or used today, plus what they ask for now."""
    if active_runs >= quotas.queued_runs:
        raise DarwinError(f"You already have {active_runs} runs queued or running; the limit is {quotas.queued_runs}: "
                          "wait for one to finish or cancel one.")
    if candidates_today + candidates_asked > quotas.candidates_per_day:
        left = max(quotas.candidates_per_day - candidates_today, 0)
        raise DarwinError(f"This run would evaluate {candidates_asked} candidates, but only {left} of your "
                          f"{quotas.candidates_per_day} per day are left.")


def check_upload(quotas: Quotas, name: str, size: int) -> None:
    if size > quotas.upload_bytes:
        raise DarwinError(f"{name} is {size / 1024 / 1024:.1f} MB; uploads are limited to {quotas.upload_mb} MB.")


def check_items(quotas: Quotas, tasks: Sequence[Any]) -> None:
    """Loaded tasks: the item count of the run and the length of every item."""
    total = sum(len(t.search) + len(t.heldout) for t in tasks)
    if total > quotas.items:
        raise DarwinError(f"The tasks hold {total} items; a run is limited to {quotas.items} on this server "
                          "(give the tasks an item count).")
    for task in tasks:
        for item in (*task.search, *task.heldout):
            longest = max([len(item.prompt), *(len(c) for c in item.choices or ())])
            if longest > quotas.prompt_chars:
                raise DarwinError(f"Item {str(item.id)[:40]!r} of task {task.name!r} is {longest} characters long; "
                                  f"items are limited to {quotas.prompt_chars} on this server.")




def parse_frozen_layers(text: str | Sequence[int] | None, layer_count: int | None) -> list[int]:
    """"0, 3, 5-7" → [0, 3, 5, 6, 7]: the config's own grammar (`parse_layer_list`), each index checked against
    the father's layer count before any range is expanded, so a request can never name a million layers."""
    from darwin_core.evolution.config import parse_layer_list

    return sorted(set(parse_layer_list(text, layer_count)))
