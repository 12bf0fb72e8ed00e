"""Task sources: user files, benchmark files in their published formats, Hub datasets, lm-eval tasks."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from darwin_core.errors import DarwinError
from darwin_core.fitness.sources import (
    arc_item,
    load_hub_task,
    load_task,
    mmlu_item,
    musr_item,
    read_items,
    task_from_items,
    tasks_from_lm_eval,
)
from darwin_core.fitness.tasks import Item

BENCHMARKS = Path(__file__).parents[2] / "shared/data/benchmarks"
needs_benchmarks = pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=f"benchmark slices not found at {BENCHMARKS} (clone ../shared beside the repo)")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def all_items(task) -> list[Item]:
    return sorted(task.search + task.heldout, key=lambda i: i.id)


# --- user files ----------------------------------------------------------------------------------


def test_user_jsonl_reads_answers_given_as_index_letter_or_text(tmp_path):
    path = write_jsonl(tmp_path / "quiz.jsonl", [
        {"id": "x1", "prompt": "2+2=", "choices": ["3", "4"], "answer": 1},
        {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "C"},
        {"question": "Pick red", "choices": ["blue", "red"], "answer": "red"},
        {"prompt": "Zero-based", "choices": ["a", "b", "c"], "answer": "2"},
    ])
    task = load_task(path)
    assert task.name == "quiz" and task.kind == "choice"
    by_id = {i.id: i for i in all_items(task)}
    assert set(by_id) == {"x1", "quiz-2", "quiz-3", "quiz-4"}
    assert [by_id[k].answer for k in ("x1", "quiz-2", "quiz-3", "quiz-4")] == ["1", "2", "1", "2"]
    assert by_id["quiz-2"].prompt == "Capital of France?" and by_id["quiz-2"].choices == ("Paris", "Rome", "Oslo")


def test_user_jsonl_without_choices_is_a_generative_task(tmp_path):
    path = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": f"{n} + 1 =", "answer": n + 1} for n in range(10)])
    task = load_task(path, max_new_tokens=5)
    assert task.kind == "generate" and task.max_new_tokens == 5
    assert {i.answer for i in all_items(task)} == {str(n + 1) for n in range(10)}


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"choices": ["a", "b"], "answer": 0}, "no 'prompt' or 'question' field"),
        ({"prompt": "p", "choices": ["a", "b"], "answer": 2}, "out of range"),
        ({"prompt": "p", "choices": ["a", "b"], "answer": "z"}, "not one of its choices"),
        ({"prompt": "p", "choices": ["only one"], "answer": 0}, "at least two"),
        ({"prompt": "p", "choices": ["a", "b"]}, "no 'answer' field"),
    ],
)
def test_a_bad_row_is_reported_with_its_line(tmp_path, row, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine", "choices": ["a", "b"], "answer": 0}] * 2 + [row])
    with pytest.raises(DarwinError, match=f"bad.jsonl line 3 cannot be read: .*{problem}"):
        load_task(path)


def test_invalid_json_and_unknown_extension_are_one_sentence_errors(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{not json\n')
    with pytest.raises(DarwinError, match="broken.jsonl line 2 is not valid JSON"):
        load_task(tmp_path / "broken.jsonl")
    (tmp_path / "items.txt").write_text("x")
    with pytest.raises(DarwinError, match="not a .jsonl, .json or .csv file"):
        load_task(tmp_path / "items.txt")


def test_mixed_and_duplicate_items_are_refused(tmp_path):
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "a", "answer": "x"}, {"prompt": "b", "choices": ["x", "y"], "answer": 0}])
    with pytest.raises(DarwinError, match="mixes multiple-choice and generative"):
        load_task(mixed)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "same", "prompt": "a", "answer": "x"}, {"id": "same", "prompt": "b", "answer": "y"}])
    with pytest.raises(DarwinError, match="two items with the id 'same'"):
        load_task(dup)


def test_user_csv_with_numbered_or_json_choices(tmp_path):
    path = tmp_path / "quiz.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "choice0", "choice1", "choice2", "answer"])
        writer.writerow(["q1", "Multi-line\nquestion?", "x", "y", "z", "B"])
        writer.writerow(["q2", "Numbers", "10", "20", "30", "20"])  # text wins over index for CSV cells
    items = read_items(path)
    assert [(i.id, i.prompt, i.choices, i.answer) for i in items] == [
        ("q1", "Multi-line\nquestion?", ("x", "y", "z"), "1"),
        ("q2", "Numbers", ("10", "20", "30"), "1"),
    ]
    other = tmp_path / "json_choices.csv"
    other.write_text('prompt,choices,answer\nhi,"[""a"", ""b""]",b\nbad,"[""a"", ""b""]",q\n', encoding="utf-8")
    with pytest.raises(DarwinError, match="json_choices.csv line 3 cannot be read"):
        read_items(other)


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"p{n}", "answer": str(n)} for n in range(40)])
    a, b, c = load_task(path, seed=1), load_task(path, seed=1), load_task(path, seed=2)
    assert a == b and a.search != c.search
    assert {i.id for i in a.search} | {i.id for i in a.heldout} == {f"t-{n}" for n in range(1, 41)}
    assert len(load_task(path, heldout_fraction=0.25).heldout) == 10


def test_a_task_needs_two_items(tmp_path):
    with pytest.raises(DarwinError, match="at least two"):
        task_from_items("tiny", [Item(id="a", prompt="p", answer="x")])


# --- benchmark formats on the real slices ------------------------------------------------------------


@needs_benchmarks
def test_arc_official_jsonl_slices():
    challenge = read_items(BENCHMARKS / "arc/ARC-Challenge-Dev.jsonl", format="arc")
    easy = read_items(BENCHMARKS / "arc/ARC-Easy-Dev.jsonl", format="arc")
    assert (len(challenge), len(easy)) == (299, 570)
    first = challenge[0]
    assert first.id == "Mercury_SC_407695"
    assert first.prompt.startswith("Question: Juan and LaKeisha roll a few objects down a ramp.") and first.prompt.endswith("\nAnswer:")
    assert first.choices[int(first.answer)] == "Record the details of the investigation."
    numeric_labels = [r for r in map(json.loads, (BENCHMARKS / "arc/ARC-Easy-Dev.jsonl").read_text().splitlines()) if r["answerKey"].isdigit()]
    assert numeric_labels, "the slice has items labelled 1-4"
    item = next(i for i in easy if i.id == numeric_labels[0]["id"])
    assert item.answer == str([c["label"] for c in numeric_labels[0]["question"]["choices"]].index(numeric_labels[0]["answerKey"]))


@needs_benchmarks
def test_arc_official_and_hub_schemas_give_the_same_item():
    record = json.loads((BENCHMARKS / "arc/ARC-Challenge-Dev.jsonl").read_text().splitlines()[5])
    hub = {
        "id": record["id"],
        "question": record["question"]["stem"],
        "choices": {"text": [c["text"] for c in record["question"]["choices"]], "label": [c["label"] for c in record["question"]["choices"]]},
        "answerKey": record["answerKey"],
    }
    assert arc_item(record, 6) == arc_item(hub, 6)


@needs_benchmarks
def test_mmlu_csv_slices():
    files = sorted((BENCHMARKS / "mmlu").glob("*.csv"))
    task = load_task(files, format="mmlu", name="mmlu")
    items = all_items(task)
    assert len(files) == 57 and len(items) == 285
    anatomy = read_items(BENCHMARKS / "mmlu/anatomy_dev.csv", format="mmlu")[0]
    assert anatomy.prompt == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\n"
        "B. The first and second pharyngeal arches\nC. The second pharyngeal arch\n"
        "D. The second and third pharyngeal arches\nAnswer:"
    )
    assert anatomy.choices == ("A", "B", "C", "D") and anatomy.answer == "3"
    algebra = read_items(BENCHMARKS / "mmlu/abstract_algebra_dev.csv", format="mmlu")[0]
    assert algebra.prompt.count("\nB. 1\n") == 1 and algebra.answer == "1"  # numeric choices, answer is still an index


def test_mmlu_hub_schema():
    record = {"question": "  What is 1+1? ", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"], "answer": 1}
    item = mmlu_item(record, 0)
    assert item.prompt.startswith("The following are multiple choice questions (with answers) about elementary mathematics.\n\nWhat is 1+1?\nA. 1\n")
    assert item.answer == "1" and item.id == "elementary_mathematics-0"


@needs_benchmarks
def test_click_slices_use_letter_choices_and_unique_ids():
    files = sorted((BENCHMARKS / "clik").glob("*.json"))
    task = load_task(files, format="click", name="click")
    items = all_items(task)
    assert len(items) == 44 + 51 + 166 + 7
    raw = json.loads((BENCHMARKS / "clik/History_Kedu.json").read_text())[0]
    item = next(i for i in items if i.id == f"History_Kedu/{raw['id']}")
    assert item.choices == ("A", "B", "C", "D") and item.answer == str(raw["choices"].index(raw["answer"]))
    assert item.prompt.startswith("주어진 질문을 천천히 읽고") and item.prompt.endswith("\n정답:")
    assert {i.id for i in items} >= {"Grammar_Kedu/Kedu_16_1", "Functional_Kedu/Kedu_16_1"}  # the files reuse ids


def test_musr_hub_schema():
    record = {"narrative": "Ann met Bob.", "question": "Who did it?", "choices": "['Ann', 'Bob']", "answer_index": 1, "answer_choice": "Bob"}
    item = musr_item(record, 3)
    assert item.prompt == "Ann met Bob.\n\nWho did it?\n\n1 - Ann\n2 - Bob\n\nAnswer:"
    assert item.choices == ("Ann", "Bob") and item.answer == "1" and item.id == "musr-3"
    del record["answer_index"]
    assert musr_item(record, 3).answer == "1"


@needs_benchmarks
def test_gsm8k_slice_is_generative_with_numeric_golds():
    task = load_task(BENCHMARKS / "gsm8k/test-first200.jsonl", format="gsm8k", name="gsm8k")
    items = {i.id: i for i in all_items(task)}
    assert task.kind == "generate" and len(items) == 200 and task.max_new_tokens == 256
    first = items["test-first200-1"]
    assert first.answer == "18" and first.prompt.startswith("Question: Janet") and first.prompt.endswith("\nAnswer:")
    assert all(i.answer.lstrip("-").replace(".", "").isdigit() for i in items.values())


# --- Hub datasets -----------------------------------------------------------------------------------


def test_hub_loader_without_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DarwinError, match="Install `datasets` to load Hub datasets"):
        load_hub_task("allenai/ai2_arc")


def test_hub_loader_reads_a_dataset_in_the_hub_schema(tmp_path, monkeypatch):
    pytest.importorskip("datasets", reason="datasets is optional at run time")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ai2_arc_local"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", [
        {"id": f"q{n}", "question": f"Question number {n}?", "choices": {"text": ["yes", "no"], "label": ["A", "B"]}, "answerKey": "AB"[n % 2]}
        for n in range(6)
    ])
    task = load_hub_task(str(folder), format="arc", split="test", name="arc_local", cache_dir=tmp_path / "cache")
    items = all_items(task)
    assert [i.id for i in items] == [f"q{n}" for n in range(6)]
    assert items[1].prompt == "Question: Question number 1?\nAnswer:" and items[1].answer == "1"
    with pytest.raises(DarwinError, match="could not be loaded"):
        load_hub_task(str(tmp_path / "missing"), format="arc", split="test", cache_dir=tmp_path / "cache")


# --- lm-evaluation-harness -----------------------------------------------------------------------


def lm_eval_tasks_dir() -> Path:
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a test extra")
    pytest.importorskip("datasets", reason="lm-eval's local json tasks need `datasets`")
    return Path(lm_eval.__file__).parent / "tasks"


def write_task_yaml(folder: Path, name: str, include: Path | None, data: Path, extra: str = "") -> None:
    lines = [f"task: {name}"]
    if include:
        lines.append(f"include: {include}")
    lines += [
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {data}",
        f"  cache_dir: {folder / 'cache'}",
        "test_split: test",
        "validation_split: null",
        "training_split: null",
        "fewshot_split: null",
        "tag: []",
    ]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def bridge_items(task) -> list[Item]:
    return sorted(task.search + task.heldout, key=lambda i: int(i.id.rsplit("-", 1)[1]))


def test_lm_eval_bridge_reads_a_local_task(tmp_path, monkeypatch):
    lm_eval_tasks_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": f"Is {n} even?", "choices": ["yes", "no"], "answer": n % 2} for n in range(8)
    ])
    write_task_yaml(tmp_path, "darwin_local_qa", None, data, extra=(
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
    ))
    (task,) = tasks_from_lm_eval(["darwin_local_qa"], include_path=tmp_path, include_defaults=False, seed=3)
    items = bridge_items(task)
    assert task.name == "darwin_local_qa" and task.kind == "choice" and len(items) == 8
    assert items[3] == Item(id="darwin_local_qa-3", prompt="Question: Is 3 even?\nAnswer:", answer="1", choices=("yes", "no"))
    with pytest.raises(DarwinError, match="could not load"):
        tasks_from_lm_eval(["no_such_task_anywhere"], include_path=tmp_path, include_defaults=False)


@needs_benchmarks
def test_our_benchmark_prompts_equal_lm_evals_own_task_configs(tmp_path, monkeypatch):
    """ARC, MMLU, CLIcK and MuSR items from our adapters equal lm-eval's, built from its shipped YAMLs."""
    tasks_dir = lm_eval_tasks_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    arc_records = [json.loads(line) for line in (BENCHMARKS / "arc/ARC-Challenge-Dev.jsonl").read_text().splitlines()[:25]]
    arc_hub = [{"id": r["id"], "question": r["question"]["stem"],
                "choices": {"text": [c["text"] for c in r["question"]["choices"]], "label": [c["label"] for c in r["question"]["choices"]]},
                "answerKey": r["answerKey"]} for r in arc_records]
    with (BENCHMARKS / "mmlu/anatomy_dev.csv").open(encoding="utf-8") as f:
        mmlu_hub = [{"question": r["question"], "subject": "anatomy", "choices": [r[f"choice{k}"] for k in range(4)], "answer": int(r["answer"])}
                    for r in csv.DictReader(f)]
    click_records = json.loads((BENCHMARKS / "clik/Law_KIIP.json").read_text(encoding="utf-8"))[:20]
    musr_hub = [
        {"narrative": "In the quiet town, Ann found the vase broken.", "question": "Who broke the vase?",
         "choices": "['Ann', 'Bob', 'the cat']", "answer_index": 2, "answer_choice": "the cat"},
        {"narrative": "Tom moved the keys to the drawer.", "question": "Where will Lisa look for the keys?",
         "choices": "['table', 'drawer']", "answer_index": 0, "answer_choice": "table"},
    ]
    cases = {
        "darwin_arc": (tasks_dir / "arc/arc_easy.yaml", arc_hub, arc_item),
        "darwin_mmlu": (tasks_dir / "mmlu/default/mmlu_anatomy.yaml", mmlu_hub, mmlu_item),
        "darwin_click": (tasks_dir / "click/click_cul/_default_click_cul_yaml", click_records, None),
        "darwin_musr": (tasks_dir / "leaderboard/musr/_template_yaml", musr_hub, musr_item),
    }
    for name, (include, records, _) in cases.items():
        write_task_yaml(tmp_path, name, include, write_jsonl(tmp_path / f"{name}.jsonl", records))
    loaded = {t.name: t for t in tasks_from_lm_eval(list(cases), include_path=tmp_path, include_defaults=False)}
    ours_click = read_items(BENCHMARKS / "clik/Law_KIIP.json", format="click")[:20]
    for name, (_, records, adapter) in cases.items():
        ours = ours_click if adapter is None else [adapter(r, n) for n, r in enumerate(records)]
        theirs = bridge_items(loaded[name])
        assert [(i.prompt, i.choices, i.answer) for i in ours] == [(i.prompt, i.choices, i.answer) for i in theirs], name
