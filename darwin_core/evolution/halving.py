"""Successive halving (`selection: halving`): the items a generation spends go to the candidates that earn them.

Rungs, with η = `halving_rate`, P = the population and n₀ = `proxy_items`:

    rung 0   every candidate, n₀ items per task (the proxy subset: the fitness CMA-ES is told, as with top-k)
    rung r   the best ⌈P/ηʳ⌉ candidates of rung r−1, n₀·ηʳ items per task (capped at the task's search split)
    last     the first rung whose item count reaches the largest task's search split: the whole search split,
             for the ⌈P/ηᴿ⌉ best candidates of the rung before (at least one); only it can make a best.

Rungs are nested: rung r's items are rung r−1's plus new ones, so a candidate that climbs a rung is scored only on
the new items and its rung fitness is the composite over all its rung's items. The order in which a task's items
join the rungs is the proxy subset first, then the rest of its search split in a seeded shuffle (seed, task): a
pure function of the config, so a resumed run climbs the same rungs. Ties go to the lower index, as in top-k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from darwin_core.fitness.tasks import Task, seeded_rng


@dataclass(frozen=True)
class Rung:
    """One rung after rung 0: how many candidates climb to it, the new items they are scored on (`part`, tasks
    with at least one new item) and all the items of the rung (`cumulative`), both in the search split's order."""

    number: int
    keep: int
    part: tuple[Task, ...]
    cumulative: tuple[Task, ...]
    last: bool


def rung_phase(rung: Rung) -> str:
    """The phase an evaluation of this rung is recorded under: `full` for the last, `rung1`, `rung2`, … before."""
    return "full" if rung.last else f"rung{rung.number}"


def _join_order(task: Task, proxy: Task, seed: int) -> list[int]:
    """Indices into the task's search split in the order they join the rungs (proxy items first)."""
    chosen = {item.id for item in proxy.search}
    first = [k for k, item in enumerate(task.search) if item.id in chosen]
    rest = [k for k, item in enumerate(task.search) if item.id not in chosen]
    seeded_rng(seed, "halving", task.name).shuffle(rest)
    return first + rest


def _subset(task: Task, indices: Sequence[int]) -> Task:
    wanted = set(indices)
    return replace(task, search=tuple(item for k, item in enumerate(task.search) if k in wanted))


def halving_rungs(tasks: Sequence[Task], proxy_tasks: Sequence[Task], *, population: int, proxy_items: int,
                  rate: int, seed: int) -> list[Rung]:
    """The rungs after rung 0 (empty when the proxy subset already is the whole search split)."""
    proxy_by_name = {task.name: task for task in proxy_tasks}
    orders = {task.name: _join_order(task, proxy_by_name[task.name], seed) for task in tasks}
    largest = max(len(task.search) for task in tasks)
    rungs: list[Rung] = []
    before = proxy_items
    number = 1
    while before < largest:
        size = proxy_items * rate ** number
        last = size >= largest
        part, cumulative = [], []
        for task in tasks:
            order = orders[task.name]
            new = order[min(before, len(order)):min(size, len(order))]
            if new:
                part.append(_subset(task, new))
            cumulative.append(task if last else _subset(task, order[:size]))
        keep = max(1, math.ceil(population / rate ** number))
        rungs.append(Rung(number=number, keep=keep, part=tuple(part), cumulative=tuple(cumulative), last=last))
        before, number = size, number + 1
    return rungs


def planned_items(tasks: Sequence[Task], proxy_tasks: Sequence[Task], rungs: Sequence[Rung], population: int) -> int:
    """Items one generation scores under halving: every candidate on the proxy, then each rung's new items."""
    total = population * sum(len(task.search) for task in proxy_tasks)
    return total + sum(rung.keep * sum(len(task.search) for task in rung.part) for rung in rungs)
