"""What the search writes down: candidate names, one measurement (a line of evaluations.jsonl) and the
search state (the checkpoint).

The run folder is the truth about a run, so these are the only places that decide its on-disk shape: the
UI, the curves and the card read evaluations.jsonl through the same field names, and tell a candidate from
a reference line by `parse_candidate_name` instead of re-parsing names on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from darwin_core.errors import DarwinError

CHECKPOINT_FORMAT = 1
BASELINE_GENERATION = 0
_LATER_FIELDS = ("stop_reason",)  # checkpoint fields a checkpoint written before them lacks (their default then)

_CANDIDATE_NAME = re.compile(r"g([0-9]+)c([0-9]+)")


# --------------------------------------------------------------------------------------------- candidate names


class CandidateId(NamedTuple):
    """Where a candidate came from: its generation (1, 2, …) and its index in that generation's population."""

    generation: int
    index: int


def candidate_name(generation: int, index: int) -> str:
    """The name the loop gives candidate `index` of `generation` (`g3c1`); baselines keep their own names."""
    return f"g{generation}c{index}"


def parse_candidate_name(name: str) -> CandidateId | None:
    """The (generation, index) of a name `candidate_name` wrote, or None for anything else (a baseline such as
    `father` or `uniform-50`, the held-out `child`, or a look-alike that the loop never writes, e.g. `g01c2`)."""
    match = _CANDIDATE_NAME.fullmatch(name)
    if match is None:
        return None
    found = CandidateId(int(match.group(1)), int(match.group(2)))
    return found if candidate_name(*found) == name else None


# --------------------------------------------------------------------------------------------- evaluations.jsonl


@dataclass(frozen=True)
class EvaluationRecord:
    """One measurement, one line of evaluations.jsonl.

    kind: "baseline" (a parent or a reference merge, generation 0) or "candidate". phase: "proxy" (Phase 1,
    the proxy subset) or "full" (the whole search set; also Phase 1 when the proxy covers it). facts: what the
    problem describes about a genome (its recipe hash). proxy_fitness / proxy_scores: the proxy part of a full
    measurement, when there is one. Fields that are None are left out of the JSON, as they always were.
    """

    kind: str
    name: str
    generation: int
    phase: str
    fitness: float
    scores: dict[str, float]
    index: int | None = None
    genome: list[float] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    proxy_fitness: float | None = None
    proxy_scores: dict[str, float] | None = None

    _BEFORE_FACTS = ("index", "phase", "genome")
    _AFTER_FACTS = ("proxy_fitness", "proxy_scores")

    def to_json(self) -> dict[str, Any]:
        """The JSON line's fields; facts are laid in where the loop always put them (after the genome), so a
        fact can never overwrite the fitness or the scores."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "generation": self.generation}
        for key in self._BEFORE_FACTS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.facts)
        out.update(fitness=self.fitness, scores=self.scores)
        for key in self._AFTER_FACTS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EvaluationRecord":
        """A record read back from evaluations.jsonl; keys that are no field are the genome's facts."""
        known = {f.name for f in fields(cls)} - {"facts"}
        return cls(**{k: v for k, v in data.items() if k in known}, facts={k: v for k, v in data.items() if k not in known})


# --------------------------------------------------------------------------------------------- the checkpoint


@dataclass
class SearchState:
    """Everything the search needs to continue exactly where its last checkpoint left it.

    es: the pickled CMA-ES object (it owns its RNG); global_rng: numpy's global RNG state as the search left
    it (swapped in around ask/tell); best: the best full-search candidate so far (the record report.json
    keeps); stale: generations since the best last improved; evaluations_bytes: the length evaluations.jsonl
    had at this checkpoint (a resume truncates it back to that). digest: the config that wrote it.
    """

    digest: str
    es: Any
    global_rng: tuple[Any, ...]
    baselines: dict[str, float]
    generation: int = 0
    best: dict[str, Any] | None = None
    stale: int = 0
    done: bool = False
    stopped_early: bool = False
    evaluations_bytes: int = 0
    format: int = CHECKPOINT_FORMAT
    stop_reason: str | None = None  # why the search ended before its last generation (patience, CMA-ES's es.stop())

    def to_checkpoint(self) -> dict[str, Any]:
        """The plain mapping the run folder pickles (the I/O layer stores data, not evolution classes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any], *, digest: str) -> "SearchState":
        """The state a checkpoint holds, refused unless this code and this config (`digest`) wrote it."""
        if data.get("format") != CHECKPOINT_FORMAT or data.get("digest") != digest:
            raise DarwinError("The run's checkpoint was written by a different config; start a new run instead of resuming this one.")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.name not in _LATER_FIELDS})
