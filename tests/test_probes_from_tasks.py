"""The MRI of an evolution probes with texts from the fitness tasks' search split, never held-out items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig
from darwin_core.evolution.tasks import load_tasks
from darwin_core.mri import scan as mri
from darwin_core.mri.probes import GENERIC_PROBES, TASK_PROBES, choose_probes, default_probes, worked_example
from darwin_core.mri.probing import load_model, run_probes
from darwin_core.testing.fixtures import write_pair


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest's `one_thread`)."""


def write_user_tasks(folder: Path) -> tuple[Path, Path]:
    """Two user task files: a generative one and a multiple-choice one, over the fixture tokenizer's alphabet."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["".join("abcdef"[(k * 7 + j * 3) % 6] for j in range(4)) + str(k) for k in range(24)]
    generate, choice = folder / "echo.jsonl", folder / "pick.jsonl"
    generate.write_text("".join(json.dumps({"id": f"e{k}", "prompt": f"echo {w} :", "answer": w}) + "\n" for k, w in enumerate(words)))
    choice.write_text("".join(json.dumps({"id": f"p{k}", "prompt": f"pick {w} =", "choices": [w, w[::-1]], "answer": k % 2}) + "\n"
                              for k, w in enumerate(words)))
    return generate, choice


def user_config(father: Path, mother: Path, files: tuple[Path, Path], **overrides) -> EvolutionConfig:
    values = dict(father=str(father), mother=str(mother), device="cpu", mri="auto", genome="per-block-role",
                  tasks=tuple({"file": str(f), "name": f.stem} for f in files), population=2, generations=1,
                  proxy_items=2, topk_full=1)
    values.update(overrides)
    return EvolutionConfig(**values)


def heldout_and_generic_texts(tasks) -> set[str]:
    heldout = {worked_example(i) for t in tasks for i in t.heldout} | {i.prompt for t in tasks for i in t.heldout}
    return heldout | {text for texts in default_probes().values() for text in texts}


def assert_search_split_only(texts: dict[str, list[str]], tasks) -> None:
    forbidden = heldout_and_generic_texts(tasks)
    search = {t.name: {worked_example(i) for i in t.search} for t in tasks}
    assert set(texts) == {t.name for t in tasks}  # importance per task
    for task, items in texts.items():
        assert items and set(items) <= search[task]
        assert not any(held in text for text in items for held in forbidden)


def test_user_task_files_give_probe_texts_from_their_search_split_only(tmp_path):
    files = write_user_tasks(tmp_path / "tasks")
    config = user_config(tmp_path / "f", tmp_path / "m", files)
    tasks, _ = load_tasks(config)
    probes, source = choose_probes(tasks)
    assert source == TASK_PROBES
    assert_search_split_only(probes, tasks)
    choice = next(t for t in tasks if t.name == "pick")
    assert probes["pick"][0] == choice.search[0].prompt + choice.search[0].choices[int(choice.search[0].answer)]


def test_the_scan_of_a_run_with_user_task_files_holds_no_heldout_item_and_no_generic_probe(tmp_path):
    father, mother = write_pair("llama", tmp_path / "parents", related=True)
    tasks, _ = load_tasks(user_config(father, mother, write_user_tasks(tmp_path / "tasks")))
    probes, source = choose_probes(tasks)
    scan = mri.scan_pair(father, mother, probes=probes, probe_source=source)
    assert scan["probe_source"] == TASK_PROBES
    for parent in ("father", "mother"):
        assert_search_split_only(scan[parent]["probes"]["texts"], tasks)
        assert set(scan[parent]["probes"]["importance"]) == {t.name for t in tasks}


def test_a_run_with_user_task_files_probes_with_their_search_split(tmp_path):
    from darwin_core.evolution.problem import ModelProblem

    father, mother = write_pair("llama", tmp_path / "parents", related=True)
    logged: list[str] = []
    problem = ModelProblem(user_config(father, mother, write_user_tasks(tmp_path / "tasks")), log=logged.append)
    assert problem.scan["probe_source"] == problem.probe_source == TASK_PROBES
    for parent in ("father", "mother"):
        assert_search_split_only(problem.scan[parent]["probes"]["texts"], problem.tasks)
    assert any("MRI probes: " + TASK_PROBES in line and "echo (8)" in line for line in logged)


def test_a_probes_file_in_the_config_drives_the_scan_and_is_read_from_the_config_folder(tmp_path):
    from darwin_core.evolution.problem import ModelProblem

    father, mother = write_pair("llama", tmp_path / "parents", related=True)
    files = write_user_tasks(tmp_path / "tasks")
    (tmp_path / "mine.yaml").write_text("POETRY:\n  - roses are red\n  - violets are blue\n")
    config_file = tmp_path / "breed.yaml"
    config_file.write_text(user_config(father, mother, files, probes="mine.yaml").to_yaml())
    config = EvolutionConfig.load(config_file)
    assert config.probes == str(tmp_path / "mine.yaml")
    problem = ModelProblem(config)
    assert problem.scan["probe_source"] == "file mine.yaml"
    assert problem.scan["father"]["probes"]["texts"] == {"POETRY": ["roses are red", "violets are blue"]}


def test_probes_need_the_scan_of_the_run_and_a_visitor_probes_file_must_be_an_upload(tmp_path, monkeypatch):
    from darwin_core.fitness.policy import uploads_dir
    from darwin_core.fitness.probes import vet_probes_file

    files = write_user_tasks(tmp_path / "tasks")
    with pytest.raises(DarwinError, match="set mri to auto"):
        user_config(tmp_path / "f", tmp_path / "m", files, mri=None, probes="p.yaml")
    outside = tmp_path / "p.yaml"
    outside.write_text("A: [x]\n")
    vet_probes_file(outside, local_mode=True, runs_dir=None)  # the user's own machine: their file
    with pytest.raises(DarwinError, match="uploaded on the page"):
        vet_probes_file(outside, local_mode=False, runs_dir=tmp_path / "runs")
    monkeypatch.setenv("SPACE_ID", "someone/darwin")
    with pytest.raises(DarwinError, match="uploaded on the page"):
        vet_probes_file(outside, local_mode=True, runs_dir=tmp_path / "runs")
    uploaded = uploads_dir(tmp_path / "runs") / "abc" / "p.yaml"
    uploaded.parent.mkdir(parents=True)
    uploaded.write_text("A: [x]\n")
    vet_probes_file(uploaded, local_mode=False, runs_dir=tmp_path / "runs")
    with pytest.raises(DarwinError, match="uploaded on the page"):
        vet_probes_file(uploaded.with_suffix(".py"), local_mode=False, runs_dir=tmp_path / "runs")


def test_a_probe_file_is_data_and_bounded(tmp_path):
    from darwin_core.mri.probes import MAX_PROBE_FILE_BYTES, load_probes

    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("A: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(DarwinError, match="not valid YAML"):
        load_probes(tagged)
    big = tmp_path / "big.yaml"
    big.write_text("A:\n" + "  - x\n" * (MAX_PROBE_FILE_BYTES // 4))
    with pytest.raises(DarwinError, match="larger than"):
        load_probes(big)


def test_probes_from_tasks_is_the_search_split_implementation():
    from darwin_core.fitness.demo_tasks import demo_tasks
    from darwin_core.fitness.probes import probes_from_tasks
    from darwin_core.mri.probes import probes_from_search_split

    tasks = demo_tasks()
    assert probes_from_tasks(tasks) == probes_from_search_split(tasks)
    with pytest.raises(DarwinError, match="cannot drive the MRI"):
        probes_from_tasks([])


def test_without_tasks_the_mri_probes_the_generic_five_and_a_probes_file_wins(tmp_path):
    assert choose_probes([]) == (default_probes(), GENERIC_PROBES)
    path = tmp_path / "mine.yaml"
    path.write_text("POETRY:\n  - roses are red\n")
    files = write_user_tasks(tmp_path / "tasks")
    tasks, _ = load_tasks(user_config(tmp_path / "f", tmp_path / "m", files))
    assert choose_probes(tasks, path) == ({"POETRY": ["roses are red"]}, "file mine.yaml")


def digit_blind_tokenizer(model_dir: Path):
    """The model's own tokenizer, with digits normalised away and no BOS: "123" becomes no token at all,
    as some real tokenizers do with characters they drop."""
    from tokenizers import Regex, Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    inner.normalizer = normalizers.Replace(Regex("[0-9]"), "")
    inner.post_processor = None
    return PreTrainedTokenizerFast(tokenizer_object=inner, pad_token="<pad>", eos_token="<eos>")


def test_a_probe_text_that_tokenizes_to_nothing_is_skipped_and_none_left_is_one_sentence(tmp_path):
    father, _ = write_pair("llama", tmp_path / "parents")
    model, _ = load_model(father)
    tokenizer = digit_blind_tokenizer(father)
    assert tokenizer("123")["input_ids"] == []
    result = run_probes(model, tokenizer, {"WORDS": ["the cat sat.", "123"], "NUMBERS": ["42", "7"]})
    assert result["used"] == {"WORDS": ["the cat sat."]} and list(result["importance"]) == ["WORDS"]
    assert result["tokens"] > 0
    with pytest.raises(DarwinError, match="None of the probe texts gives a single token") as error:
        run_probes(model, tokenizer, {"NUMBERS": ["123"]})
    assert "\n" not in str(error.value)
