"""Where a candidate's time goes: merge seconds, scoring seconds and token positions scored, per evaluation.

Timings are wall-clock facts, so they live in events.jsonl (the "evaluated" event), never in evaluations.jsonl,
which stays a pure function of the config and therefore byte-identical across runs, resumes and batchings.

A problem reports timings beside its results: after `measure` it sets `last_timing` (one EvalTiming), after
`measure_many` it sets `last_timings` (one per candidate, in the batch's order). A problem that reports none
(a synthetic test problem) gets the loop's own wall-clock measurement, all of it counted as scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from darwin_core.fitness.tasks import Task


@dataclass(frozen=True)
class EvalTiming:
    """One evaluation's cost.

    merge_seconds: writing the candidate into the resident child (ResidentChild.load_recipe, device-synchronised);
    scoring_seconds: the fitness evaluation of the loaded child; tokens_scored: token positions run through the
    model (None when the problem cannot count them).
    """

    merge_seconds: float
    scoring_seconds: float
    tokens_scored: int | None = None

    @property
    def seconds(self) -> float:
        return self.merge_seconds + self.scoring_seconds

    def to_event(self) -> dict[str, Any]:
        """The event fields, rounded so the log stays readable (ms for seconds)."""
        out = asdict(self)
        out["merge_seconds"] = round(self.merge_seconds, 4)
        out["scoring_seconds"] = round(self.scoring_seconds, 4)
        return out

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> "EvalTiming | None":
        """The timing an "evaluated" event holds, or None for events written before timings existed."""
        if "scoring_seconds" not in event:
            return None
        tokens = event.get("tokens_scored")
        return cls(float(event.get("merge_seconds") or 0.0), float(event["scoring_seconds"]),
                   int(tokens) if tokens is not None else None)


def untimed(count: int, wall_seconds: float) -> list[EvalTiming]:
    """Timings for a batch whose problem reported none: its wall time shared evenly, all of it scoring."""
    share = wall_seconds / count if count else 0.0
    return [EvalTiming(merge_seconds=0.0, scoring_seconds=share) for _ in range(count)]


# --------------------------------------------------------------------------------------------- token positions

TARGET_DELIMITER = " "  # what score_choices puts between prompt and choice (darwin_core.fitness.scoring)


def _item_positions(tokenizer, task: Task, item) -> int:
    """Token positions one item costs: each choice's context + continuation (the rows a log-likelihood forward
    covers); a generative item counts its prompt plus its task's max_new_tokens budget (an upper bound)."""
    from darwin_core.fitness.loglikelihood import encode_pair

    if task.kind == "choice":
        total = 0
        for choice in item.choices:
            context, continuation = encode_pair(tokenizer, item.prompt, f"{TARGET_DELIMITER}{choice}")
            total += len(context) + len(continuation)
        return total
    return len(tokenizer.encode(item.prompt)) + int(task.max_new_tokens)


class TokenCounter:
    """Token positions of a set of tasks' search items, counted once per (task, item) and cached: the loop scores
    the same proxy and rest items every generation, and tokenising is not free."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._per_item: dict[tuple[str, str], int] = {}

    def positions(self, tasks: Sequence[Task], split: str = "search") -> int:
        total = 0
        for task in tasks:
            for item in getattr(task, split):
                key = (task.name, item.id)
                if key not in self._per_item:
                    self._per_item[key] = _item_positions(self.tokenizer, task, item)
                total += self._per_item[key]
        return total


# --------------------------------------------------------------------------------------------- rates for the UI


@dataclass(frozen=True)
class Throughput:
    """What the timings of a run's evaluations say about its speed (the Evolve tab's candidates/minute and ETA)."""

    evaluations: int
    seconds_per_evaluation: float
    merge_share: float
    tokens_per_second: float | None

    @property
    def per_minute(self) -> float:
        return 60.0 / self.seconds_per_evaluation if self.seconds_per_evaluation > 0 else 0.0


def throughput(events: Sequence[Mapping[str, Any]], *, recent: int = 64) -> Throughput | None:
    """Speed from the last `recent` timed "evaluated" events (candidates only when there are any: baselines
    score the whole search set and would make a proxy-heavy search look slow); None before any is timed."""
    timed = [(e, EvalTiming.from_event(e)) for e in events if e.get("event") == "evaluated"]
    timed = [(e, t) for e, t in timed if t is not None]
    candidates = [(e, t) for e, t in timed if e.get("phase") != "full" or str(e.get("name", "")).startswith("g")]
    chosen = [t for _, t in (candidates or timed)][-recent:]
    if not chosen:
        return None
    seconds = sum(t.seconds for t in chosen)
    tokens = [t for t in chosen if t.tokens_scored is not None]
    scoring = sum(t.scoring_seconds for t in tokens)
    return Throughput(
        evaluations=len(chosen), seconds_per_evaluation=seconds / len(chosen),
        merge_share=sum(t.merge_seconds for t in chosen) / seconds if seconds > 0 else 0.0,
        tokens_per_second=sum(t.tokens_scored or 0 for t in tokens) / scoring if tokens and scoring > 0 else None,
    )


def timed_eta_seconds(events: Sequence[Mapping[str, Any]], generations: int) -> float | None:
    """Seconds the search still needs, from the recorded timings: a generation costs what the recent finished
    ones cost (their candidates' merge + scoring seconds), the one in flight what is left of that. None before a
    generation has finished (no measure of a whole generation yet) or once the last one has."""
    from darwin_core.evolution.records import parse_candidate_name

    spent: dict[int, float] = {}
    for event in events:
        if event.get("event") != "evaluated":
            continue
        found, timing = parse_candidate_name(str(event.get("name", ""))), EvalTiming.from_event(event)
        if found is not None and timing is not None:
            spent[found.generation] = spent.get(found.generation, 0.0) + timing.seconds
    finished = [int(e["generation"]) for e in events if e.get("event") == "generation" and "generation" in e]
    if not finished:
        return None
    last = max(finished)
    if last >= generations or any(e.get("event") == "early_stop" for e in events):
        return 0.0
    recent = [spent[g] for g in sorted(set(finished))[-3:] if g in spent]
    if not recent:
        return None
    per_generation = sum(recent) / len(recent)
    in_flight = max(per_generation - spent.get(last + 1, 0.0), 0.0)
    return in_flight + per_generation * (generations - last - 1)
