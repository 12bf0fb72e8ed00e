"""Procedural skills for the embedded demo zoo: small string puzzles a ~1M-parameter model learns on a CPU.

Each skill maps a short lowercase word to an answer (`"rev: abc ="` → `"cba"`), scored by exact match. The
words that may be *evaluated* form a fixed pool per skill, drawn once from a constant seed; `demo_tasks(seed)`
only decides which half of that pool is the search split and which is held-out. Training data for the zoo is
drawn from the same word distribution but never uses a pooled word, so whatever the seed, neither the search
nor the held-out items were seen in training — the numbers measured on them are about skill, not memory.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from darwin_core.errors import DarwinError
from darwin_core.fitness.tasks import Item, Task, seeded_rng, split_items

LETTERS = string.ascii_lowercase
MIN_LEN, MAX_LEN = 3, 6
POOL_SIZE = 400  # evaluated words per skill: search + held-out
HELDOUT_FRACTION = 0.5
POOL_SEED = "darwin-demo-pool-v1"  # fixed on purpose: the training exclusion list depends on it
N_PROBES = 8

# A made-up language: every letter has a fixed counterpart (a seeded permutation of the alphabet without
# fixed points), so "translating" a word is a lookup per letter that must be learnt from examples.
_perm_rng = seeded_rng("darwin-demo-lexicon-v1")
while True:
    _perm = list(LETTERS)
    _perm_rng.shuffle(_perm)
    if all(a != b for a, b in zip(LETTERS, _perm)):
        break
LEXICON: dict[str, str] = dict(zip(LETTERS, _perm))


@dataclass(frozen=True)
class Skill:
    """One puzzle: the prompt prefix, the answer function, and a one-line description for the UI."""

    name: str
    prefix: str
    solve: Callable[[str], str]
    description: str

    def prompt(self, word: str) -> str:
        return f"{self.prefix}: {word} ="

    def max_answer_chars(self) -> int:
        return max(len(self.solve(LETTERS[:n])) for n in range(MIN_LEN, MAX_LEN + 1))


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("reverse", "rev", lambda w: w[::-1], "write the word backwards"),
        Skill("uppercase", "up", str.upper, "write the word in capitals"),
        Skill("translate", "tr", lambda w: "".join(LEXICON[c] for c in w), "translate letter by letter into a made-up language"),
        Skill("sort", "sort", lambda w: "".join(sorted(w)), "sort the letters alphabetically"),
        Skill("length", "len", lambda w: str(len(w)), "count the letters"),
        Skill("double", "dbl", lambda w: "".join(c + c for c in w), "write every letter twice"),
        Skill("shift", "nxt", lambda w: "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in w), "replace each letter by the next one"),
    )
}

# The skills the shipped zoo is built from (chosen by measuring what a tiny model learns in minutes).
DEMO_SKILLS: tuple[str, ...] = ("reverse", "uppercase", "translate", "sort")

# Every character a demo prompt or answer can contain; the zoo's tokenizer is built from it.
ALPHABET = LETTERS + string.ascii_uppercase + string.digits + " :="


def _random_word(rng) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(MIN_LEN, MAX_LEN)))


@lru_cache(maxsize=None)
def evaluation_pool(name: str) -> tuple[str, ...]:
    """The fixed, ordered words a skill may be evaluated on (search and held-out together)."""
    skill = _skill(name)
    rng = seeded_rng(POOL_SEED, skill.name)
    words: dict[str, None] = {}
    while len(words) < POOL_SIZE:
        words.setdefault(_random_word(rng), None)
    return tuple(words)


@lru_cache(maxsize=None)
def _excluded_words() -> frozenset[str]:
    """Words never used in training: the evaluation pool of every skill (a word is excluded everywhere)."""
    return frozenset(w for name in SKILLS for w in evaluation_pool(name))


def training_pairs(names: tuple[str, ...] | list[str], seed: int) -> Iterator[tuple[str, str]]:
    """Endless seeded (prompt, answer) stream over `names` (round-robin), never touching an evaluation word."""
    skills = [_skill(n) for n in names]
    if not skills:
        raise DarwinError("Training needs at least one skill.")
    rng = seeded_rng("darwin-demo-train", seed, *names)
    excluded = _excluded_words()
    i = 0
    while True:
        word = _random_word(rng)
        if word in excluded:
            continue
        skill = skills[i % len(skills)]
        i += 1
        yield skill.prompt(word), skill.solve(word)


def demo_task(name: str, seed: int = 0, limit: int | None = None) -> Task:
    """The Task for one skill: fixed pool, seeded search / held-out split, probe texts from the search side.

    `limit` keeps the first items of the pool before the split (a cheaper task; the split stays seeded)."""
    skill = _skill(name)
    pool = evaluation_pool(name)
    if limit is not None:
        if limit < 2:
            raise DarwinError(f"Demo task {name!r}: keep at least 2 items (one to search, one held out), not {limit}.")
        pool = pool[:limit]
    items = [Item(id=f"{skill.name}-{w}", prompt=skill.prompt(w), answer=skill.solve(w)) for w in pool]
    search, heldout = split_items(items, HELDOUT_FRACTION, seed)
    # Probes are whole worked examples (prompt + answer): the layers that compute an answer are only busy
    # while the answer is being produced. They come from the search split, so the MRI never sees held-out items.
    probes = tuple(i.prompt + i.answer for i in search[:N_PROBES])
    return Task(
        name=skill.name,
        kind="generate",
        search=search,
        heldout=heldout,
        max_new_tokens=skill.max_answer_chars() + 1,  # +1 for the end-of-sequence token
        description=skill.description,
        probe_prompts=probes,
    )


def demo_tasks(seed: int = 0, names: tuple[str, ...] | list[str] = DEMO_SKILLS) -> list[Task]:
    """The demo zoo's tasks, in DEMO_SKILLS order."""
    return [demo_task(n, seed) for n in names]


def probe_prompts(name: str, seed: int = 0) -> tuple[str, ...]:
    """Probe texts for the MRI for one skill (worked examples from the search split)."""
    return demo_task(name, seed).probe_prompts


def _skill(name: str) -> Skill:
    try:
        return SKILLS[name]
    except KeyError:
        raise DarwinError(f"Unknown demo skill {name!r}; choose one of {', '.join(SKILLS)}.") from None
