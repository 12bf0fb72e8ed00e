"""The one task type every fitness source (demo, files, Hub datasets, lm-eval) is turned into.

A task is data: items plus how they are scored. Splitting into a *search* part
(what CMA-ES sees) and a disjoint *held-out* part (only for the final report) is
done here, seeded, so every caller gets the same split for the same seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Literal

ScoreKind = Literal["generate", "choice"]


@dataclass(frozen=True)
class Item:
    """One question. `choices` is set for multiple choice (answer = index as str)."""

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    """A named set of items with a fixed search / held-out split."""

    name: str
    kind: ScoreKind
    search: tuple[Item, ...]
    heldout: tuple[Item, ...]
    max_new_tokens: int = 16
    description: str = ""
    probe_prompts: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        overlap = {i.id for i in self.search} & {i.id for i in self.heldout}
        if overlap:
            raise ValueError(f"task {self.name!r}: items {sorted(overlap)[:3]} are in both the search and held-out splits")


def split_items(items: list[Item], heldout_fraction: float, seed: int) -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """Seeded, order-independent split: an item's side depends only on (seed, item id)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError("heldout_fraction must be between 0 and 1")

    def key(item: Item) -> str:
        return hashlib.sha256(f"{seed}:{item.id}".encode()).hexdigest()

    ranked = sorted(items, key=key)
    n_heldout = max(1, round(len(ranked) * heldout_fraction))
    heldout_ids = {i.id for i in ranked[:n_heldout]}
    search = tuple(i for i in items if i.id not in heldout_ids)
    heldout = tuple(i for i in items if i.id in heldout_ids)
    return search, heldout


def seeded_rng(*parts: object) -> random.Random:
    """A Random seeded from a stable hash of the parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))
