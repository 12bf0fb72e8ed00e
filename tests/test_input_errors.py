"""Bad input is refused in one sentence before anything is written.

Each input below runs the real command line (`python -m darwin_core evolve|merge ...`) in a subprocess and must
end with exit code 2, a single stderr line `error: <sentence>`, and nothing new on disk: no runs folder, no run
in `runs list`, no output or partial folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "assets" / "zoo"
FATHER, MOTHER = ZOO / "father", ZOO / "mother"
LONG_ID = "a" * 5000
CUDA = pytest.importorskip("torch").cuda.is_available()


def _config(**settings: str) -> str:
    """A breed.yaml with the demo parents and a tiny budget, the given settings replacing its lines."""
    lines = {"father": str(FATHER), "mother": str(MOTHER), "population": "2", "generations": "1",
             "proxy_items": "2", "topk_full": "1", **settings}
    return "".join(f"{key}: {value}\n" for key, value in lines.items())


def _recipe(father_path: str = str(FATHER)) -> str:
    return (f"format: darwin-recipe/1\nfather: {{id: father, path: {father_path}}}\n"
            f"mother: {{id: mother, path: {MOTHER}}}\nmethod: linear\n")


# (case, files to write in the working folder, command after `python -m darwin_core`, part of the sentence)
EVOLVE_CASES = [
    ("missing local father folder", {"breed.yaml": _config(father="./father")}, "evolve breed.yaml",
     "The folder ./father does not exist."),
    ("a file as a parent", {"breed.yaml": _config(father="/etc/passwd")}, "evolve breed.yaml",
     "/etc/passwd is a file, not a model folder"),
    ("a file as the mother", {"breed.yaml": _config(mother="/etc/passwd")}, "evolve breed.yaml",
     "is a file, not a model folder"),
    ("a device torch does not know", {"breed.yaml": _config(device="tpu")}, "evolve breed.yaml", "torch here sees cpu"),
    ("a folder as a task file", {"breed.yaml": _config(tasks="[{file: tasks.jsonl}]"), "tasks.jsonl/": ""},
     "evolve breed.yaml", "tasks.jsonl is a folder, not a file"),
    ("a missing task file", {"breed.yaml": _config(tasks="[mine.jsonl]")}, "evolve breed.yaml", "does not exist"),
    ("a task file with a bad row", {"breed.yaml": _config(tasks="[mine.jsonl]"),
                                    "mine.jsonl": '{"prompt": "a", "answer": "b"}\n{"answer": "c"}\n'},
     "evolve breed.yaml", "mine.jsonl line 2"),
    ("frozen layers that are not layer numbers", {"breed.yaml": _config(frozen_layers="0-x")}, "evolve breed.yaml",
     "frozen_layers are layer numbers"),
    ("frozen layers that run backwards", {"breed.yaml": _config(frozen_layers="3-0")}, "evolve breed.yaml", "runs backwards"),
    ("a binary breed.yaml", {"breed.yaml": b"\x7fELF\x02\x01\x01\x00\x00\x00"}, "evolve breed.yaml", "is a binary file"),
    ("a breed.yaml that is not UTF-8", {"breed.yaml": b"father: p\xe8re\n"}, "evolve breed.yaml", "is not UTF-8 text"),
    ("a breed.yaml that is not YAML", {"breed.yaml": "father: [a\nmother: b\n"}, "evolve breed.yaml", "not valid YAML at line"),
    ("a breed.yaml that is a folder", {"breed.yaml/": ""}, "evolve breed.yaml", "is a folder, not a config file"),
    ("a missing breed.yaml", {}, "evolve breed.yaml", "does not exist"),
    ("a 5000-character Hub id", {"breed.yaml": _config(father=LONG_ID)}, "evolve breed.yaml", "5000 characters"),
    ("a malformed Hub id", {"breed.yaml": _config(mother="org/na--me")}, "evolve breed.yaml", "is not a Hub model id"),
    ("a Hub id with a too long name", {"breed.yaml": _config(father="org/" + "b" * 200)}, "evolve breed.yaml",
     "is not a Hub model id"),
    ("an unknown genome space", {"breed.yaml": _config(genome="per-atom")}, "evolve breed.yaml", "Unknown genome space"),
    ("a base for a method without one", {"breed.yaml": _config(method="linear", base=str(FATHER))}, "evolve breed.yaml",
     "does not use a base model"),
    ("a missing MRI scan file", {"breed.yaml": _config(mri="scan.json")}, "evolve breed.yaml", "does not exist"),
    ("a setting of the wrong type", {"breed.yaml": _config(heldout="'yes'")}, "evolve breed.yaml", "heldout must be true or false"),
    ("an unknown task setting", {"breed.yaml": _config(tasks="[{demo: reverse, colour: red}]")}, "evolve breed.yaml",
     "Unknown task setting 'colour'"),
    ("a run id that is a path", {"breed.yaml": _config()}, "evolve breed.yaml --run-id ../escape", "is not valid"),
    ("a queued run with a missing father", {"breed.yaml": _config(father="./father")}, "evolve breed.yaml --queue",
     "The folder ./father does not exist."),
]
if not CUDA:
    EVOLVE_CASES.append(("cuda on a CPU build", {"breed.yaml": _config(device="cuda")}, "evolve breed.yaml",
                         "this torch build has no CUDA"))

MERGE_CASES = [
    ("a shard size of 0 GB", {"recipe.yaml": _recipe()}, "merge recipe.yaml --out child --max-shard-gb 0", "more than 0 GB"),
    ("a shard size that is no number", {"recipe.yaml": _recipe()}, "merge recipe.yaml --out child --max-shard-gb five",
     "must be a number of GB"),
    ("a device torch does not know", {"recipe.yaml": _recipe()}, "merge recipe.yaml --out child --device tpu", "torch here sees cpu"),
    ("a missing recipe", {}, "merge recipe.yaml --out child", "does not exist"),
    ("a binary recipe", {"recipe.yaml": b"\x00\x01\x02"}, "merge recipe.yaml --out child", "is a binary file"),
    ("a file as the father", {"recipe.yaml": _recipe("/etc/passwd")}, "merge recipe.yaml --out child", "is a file, not a model folder"),
    ("a missing father folder", {"recipe.yaml": _recipe("./nowhere")}, "merge recipe.yaml --out child", "does not exist"),
    ("a file as the output", {"recipe.yaml": _recipe(), "child": "not a folder"}, "merge recipe.yaml --out child",
     "the output must be a folder"),
    ("an output under a file", {"recipe.yaml": _recipe(), "notes.txt": "x"}, "merge recipe.yaml --out notes.txt/child",
     "is a file, so the output folder"),
]
if not CUDA:
    MERGE_CASES.append(("cuda on a CPU build", {"recipe.yaml": _recipe()}, "merge recipe.yaml --out child --device cuda",
                        "this torch build has no CUDA"))


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        if name.endswith("/"):
            (folder / name.rstrip("/")).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")


def _snapshot(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _refused(tmp_path: Path, files: dict[str, str | bytes], command: str) -> str:
    """Run the command in a folder holding `files`; the one-line sentence it printed, after checking exit code 2
    and that nothing was written."""
    _write(tmp_path, files)
    before = _snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "DARWIN_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "darwin_core", *command.split()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert _snapshot(tmp_path) == before, "something was written"
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("case, files, command, sentence", EVOLVE_CASES, ids=[c[0] for c in EVOLVE_CASES])
def test_evolve_refuses_bad_input_in_one_sentence_before_a_run_folder_exists(tmp_path, case, files, command, sentence):
    said = _refused(tmp_path, files, command)
    assert sentence in said
    assert said.endswith(".") and said.count(". ") <= 1, said
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case, files, command, sentence", MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
def test_merge_refuses_bad_input_in_one_sentence_before_writing(tmp_path, case, files, command, sentence):
    said = _refused(tmp_path, files, command)
    assert sentence in said
    assert said.endswith(".")


def test_relative_paths_in_a_config_are_read_from_its_folder(tmp_path, monkeypatch):
    """The card's reproduce command writes the config beside the task files; run from elsewhere, it still finds them."""
    import shutil

    from darwin_core.evolution.config import EvolutionConfig
    from darwin_core.evolution.preflight import check_before_run

    there = tmp_path / "there"
    there.mkdir()
    shutil.copytree(FATHER, there / "father")
    (there / "mine.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": "d"}\n', encoding="utf-8")
    (there / "breed.yaml").write_text(_config(father="father", tasks="[mine.jsonl, {demo: sort}]"), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = EvolutionConfig.load(Path("..") / "there" / "breed.yaml")
    assert Path(config.father) == (there / "father").resolve()
    assert Path(config.tasks[0].ref) == (there / "mine.jsonl").resolve() and config.tasks[1].ref == "sort"
    check_before_run(config, elsewhere / "runs")
    assert EvolutionConfig.from_yaml(config.to_yaml()) == config  # the run folder's copy means the same
