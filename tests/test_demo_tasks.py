"""The demo skills: seeded, fixed, with held-out items that neither the search nor the training ever sees."""

from __future__ import annotations

import itertools

import pytest

from darwin_core.errors import DarwinError
from darwin_core.fitness.demo_tasks import (
    ALPHABET,
    DEMO_SKILLS,
    SKILLS,
    demo_task,
    demo_tasks,
    evaluation_pool,
    probe_prompts,
    training_pairs,
)
from darwin_core.fitness.tasks import Task


def test_demo_tasks_are_generate_tasks_with_200_search_and_200_heldout_items():
    tasks = demo_tasks()
    assert [t.name for t in tasks] == list(DEMO_SKILLS)
    for task in tasks:
        assert isinstance(task, Task) and task.kind == "generate"
        assert len(task.search) == 200 and len(task.heldout) == 200


def test_same_seed_gives_the_same_items_and_another_seed_another_split_of_the_same_pool():
    for name in SKILLS:
        a, b, c = demo_task(name, 0), demo_task(name, 0), demo_task(name, 1)
        assert a == b
        assert a.heldout != c.heldout
        assert {i.prompt for i in a.search + a.heldout} == {i.prompt for i in c.search + c.heldout}


def test_search_and_heldout_splits_are_disjoint_by_prompt():
    for task in demo_tasks(names=list(SKILLS)):
        assert not {i.prompt for i in task.search} & {i.prompt for i in task.heldout}


@pytest.mark.parametrize("seed", [0, 7])
def test_training_data_never_contains_an_evaluated_prompt(seed):
    evaluated = {i.prompt for t in demo_tasks(seed, names=list(SKILLS)) for i in t.search + t.heldout}
    pairs = list(itertools.islice(training_pairs(tuple(SKILLS), seed=seed), 50_000))
    seen = {p for p, _ in pairs}
    assert not seen & evaluated
    # the stream really covers every skill, so the check above is about the same prompt format
    assert {p.split(":")[0] for p in seen} == {s.prefix for s in SKILLS.values()}


def test_training_stream_is_seeded():
    first = list(itertools.islice(training_pairs(("reverse", "sort"), seed=3), 100))
    again = list(itertools.islice(training_pairs(("reverse", "sort"), seed=3), 100))
    other = list(itertools.islice(training_pairs(("reverse", "sort"), seed=4), 100))
    assert first == again and first != other


def test_answers_are_right_and_fit_the_alphabet_and_token_budget():
    assert demo_task("reverse").search[0].answer == demo_task("reverse").search[0].prompt.split(" ")[1][::-1]
    for task in demo_tasks(names=list(SKILLS)):
        for item in task.search + task.heldout:
            assert set(item.prompt + item.answer) <= set(ALPHABET)
            assert len(item.answer) + 1 <= task.max_new_tokens


def test_probe_prompts_are_worked_examples_from_the_search_split():
    for name in DEMO_SKILLS:
        task = demo_task(name)
        probes = probe_prompts(name)
        assert len(probes) == 8 and probes == task.probe_prompts
        assert set(probes) <= {i.prompt + i.answer for i in task.search}


def test_unknown_skill_is_one_clear_sentence():
    with pytest.raises(DarwinError, match="Unknown demo skill"):
        demo_task("juggling")


def test_evaluation_pool_is_fixed_and_unique():
    pool = evaluation_pool("reverse")
    assert len(set(pool)) == len(pool) == 400
    assert pool == evaluation_pool("reverse")


def test_a_demo_task_limit_keeps_that_many_items_split_like_the_full_task():
    from darwin_core.evolution.pipeline import EvolutionConfig, load_tasks

    full = demo_task("reverse", 0)
    small = demo_task("reverse", 0, limit=40)
    assert len(small.search) + len(small.heldout) == 40
    kept = {i.id for i in small.search + small.heldout}
    assert kept <= {i.id for i in full.search + full.heldout}
    config = EvolutionConfig(father="f", mother="m", tasks=[{"demo": "reverse", "limit": 40}])
    tasks, _ = load_tasks(config)
    assert {i.id for i in tasks[0].search + tasks[0].heldout} == kept
    with pytest.raises(DarwinError, match="at least 2"):
        demo_task("reverse", 0, limit=1)
