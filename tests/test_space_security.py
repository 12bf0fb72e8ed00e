"""The attacks of issue 10 against a public Space (local mode off), each as a claim that the attack fails.

Every launch goes through the page's real `launch_run` (what the Evolve tab's button and `evolve_launch` API
call) with local mode off; a refusal must be one sentence and leave the runs folder exactly as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from darwin_core.errors import DarwinError
from tests.browser import demo_zoo_dir

SPACE_TOKEN = "hf_space_owner_secret"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _state(name: str) -> dict:
    return {"session": f"visitor-{name}-" + "x" * 16}


def _launch(runs_dir: Path, *, state=None, father="demo:father", mother="demo:mother", extra=None, uploads=None,
            population=4, generations=1, frozen="", token=None, local_mode=False):
    from ui.tabs.evolve import demo_task_rows, launch_run

    rows = demo_task_rows()
    rows["items"] = 8
    return launch_run(state or _state("a"), father, "", mother, "", rows, {"data": extra or []}, uploads or [], 1.0,
                      "per-layer", "linear", population, 0.2, generations, 0, 2, 1, frozen, False, 0,
                      runs_dir=runs_dir, local_mode=local_mode, zoo_dir=demo_zoo_dir(), token=token, user=None)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")} if root.exists() else {}


def _polyglot(folder: Path, marker: Path) -> Path:
    """A task YAML whose `!function` imports the visitor's Python file, which leaves a marker when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef docs(dataset):\n    return dataset\n")
    (folder / "x.yaml").write_text("task: visitor_task\ndataset_path: json\noutput_type: multiple_choice\n"
                                   "process_docs: !function x.docs\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n")
    return folder / "x.yaml"


@pytest.fixture()
def unsealed(monkeypatch):
    """Whatever seal_ambient_token changes is put back after the test (it is meant to last a process)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", constants.HF_TOKEN_PATH)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", constants.HF_HUB_DISABLE_IMPLICIT_TOKEN)
    for name in ("HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def runs_dir(tmp_path):
    from ui.session import app_secret

    root = tmp_path / "runs"
    app_secret(root)  # the server's secret exists before the first request, as on a running Space
    return root


def test_an_lm_eval_yaml_named_by_path_is_refused_off_local_mode_and_its_code_never_runs(runs_dir, tmp_path):
    marker = tmp_path / "marker"
    task_yaml = _polyglot(tmp_path / "upload", marker)
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match="only these lm-evaluation-harness tasks") as refused:
        _launch(runs_dir, extra=[["lm_eval", str(task_yaml), 1, None]])
    assert "\n" not in str(refused.value)
    assert not marker.exists() and _snapshot(runs_dir) == before


def test_the_cli_with_local_mode_off_refuses_the_same_task_before_a_run_folder_exists(tmp_path):
    marker = tmp_path / "marker"
    task_yaml = _polyglot(tmp_path / "upload", marker)
    config = tmp_path / "breed.yaml"
    config.write_text(json.dumps({"father": "demo:father", "mother": "demo:mother", "local_mode": False,
                                  "tasks": [{"lm_eval": str(task_yaml)}]}))
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "darwin_core", "evolve", str(config), "--runs-dir", str(runs)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "only these lm-evaluation-harness tasks" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists() and not any(p.name == "config.yaml" for p in runs.rglob("*"))


@pytest.mark.parametrize("source, ref", [("hub", "/etc"), ("hub", "../runs"), ("lm_eval", "../x.yaml")])
def test_server_paths_named_as_tasks_are_refused_off_local_mode(runs_dir, source, ref):
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError):
        _launch(runs_dir, extra=[[source, ref, 1, None]])
    assert _snapshot(runs_dir) == before


def test_a_config_naming_a_task_file_outside_the_uploads_is_refused_by_the_worker_rule(tmp_path):
    from darwin_core.evolution.pipeline import EvolutionConfig, load_tasks

    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "p", "answer": "a"}\n{"prompt": "q", "answer": "b"}\n')
    config = EvolutionConfig.from_dict({"father": "demo:father", "mother": "demo:mother", "local_mode": False,
                                        "tasks": [{"file": str(secret)}]})
    with pytest.raises(DarwinError, match="must be uploaded on the page"):
        load_tasks(config, runs_dir=tmp_path / "runs")


def test_every_allow_listed_lm_eval_task_is_multiple_choice_without_functions_in_its_yaml_chain():
    lm_eval = pytest.importorskip("lm_eval")
    import yaml

    from darwin_core.fitness.policy import LM_EVAL_ALLOWED

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    by_name = {}
    for path in tasks_dir.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "task:" in text:
            doc = yaml.load(text, Loader=Loader) or {}
            if isinstance(doc, dict) and isinstance(doc.get("task"), str):
                by_name.setdefault(doc["task"], path)
    for name in LM_EVAL_ALLOWED:
        path, seen = by_name[name], []
        while path is not None:
            text = path.read_text(encoding="utf-8")
            assert "!function" not in text, f"{name}: {path.name} runs code"
            seen.append(path)
            include = (yaml.load(text, Loader=Loader) or {}).get("include")
            path = (path.parent / include).resolve() if include else None
            assert path is None or path.is_relative_to(tasks_dir.resolve())
        chain = {}
        for part in reversed(seen):
            chain.update(yaml.load(part.read_text(encoding="utf-8"), Loader=Loader) or {})
        assert chain.get("output_type") == "multiple_choice", name


def test_a_gated_model_in_the_shared_cache_is_refused_to_an_anonymous_visitor(read_hub, unsealed, fixture_model, runs_dir):
    from darwin_core.parents import hub
    from ui.tabs.parents import inspect_parents

    read_hub.add("darwin-test/gated-llama", fixture_model("llama"), gated=True)
    signed_in = hub.download(hub.resolve_model("darwin-test/gated-llama", local_mode=False, token="hf_granted"),
                             token="hf_granted")  # a signed-in visitor's run left it in the cache
    hub.seal_ambient_token()  # what build_demo does off local mode
    pinned = f"darwin-test/gated-llama@{signed_in.commit}"
    *_, error = inspect_parents(pinned, "", "demo:mother", "", local_mode=False, token=None)
    assert "is gated" in error
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match="is gated"):
        _launch(runs_dir, father=pinned, mother=pinned)
    assert _snapshot(runs_dir) == before
    assert f"Bearer {SPACE_TOKEN}" not in read_hub.auth_seen and read_hub.auth_seen  # asked, never as the Space


def test_the_sealed_server_sends_no_token_of_its_own_whatever_library_asks(read_hub, unsealed):
    from huggingface_hub.utils import build_hf_headers, get_token

    from darwin_core.parents.hub import seal_ambient_token

    assert get_token() == SPACE_TOKEN  # what lm-eval and datasets would send without the seal
    assert seal_ambient_token() is True
    assert get_token() is None and "authorization" not in {k.lower() for k in build_hf_headers()}
    assert build_hf_headers(token="hf_visitor")["authorization"] == "Bearer hf_visitor"  # the visitor's own still goes


def _finished_child(runs_dir: Path, owner_state: dict) -> str:
    """A finished run of visitor A whose child is the demo father (what breeding needs of it: the child folder)."""
    from ui import session

    run_id = "run-of-a"
    folder = runs_dir / run_id
    shutil.copytree(demo_zoo_dir() / "father", folder / "child")
    (folder / "status.json").write_text(json.dumps({"state": "finished"}))
    session.record_owner(folder, session.visitor(owner_state), session.app_secret(runs_dir))
    return run_id


def test_visitor_b_cannot_breed_from_an_unpublished_child_of_visitor_a(runs_dir):
    from darwin_core.io.runfolder import PUBLISHED

    run_id = _finished_child(runs_dir, _state("a"))
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match="not yours and has not been published"):
        _launch(runs_dir, state=_state("b"), father=f"run:{run_id}", mother=f"run:{run_id}")
    assert _snapshot(runs_dir) == before
    (runs_dir / run_id / PUBLISHED).write_text("{}")
    assert _launch(runs_dir, state=_state("b"), father=f"run:{run_id}", mother="demo:mother")


def test_the_owner_breeds_from_their_own_child_and_the_config_names_it_by_run_id(runs_dir):
    import yaml

    run_id = _finished_child(runs_dir, _state("a"))
    launched = _launch(runs_dir, state=_state("a"), father=f"run:{run_id}", mother="demo:mother")
    config = yaml.safe_load((runs_dir / launched / "config.yaml").read_text())
    assert config["father"] == f"run:{run_id}" and config["mother"] == "demo:mother" and config["local_mode"] is False


@pytest.mark.parametrize("settings, sentence", [
    ({"population": 10_000}, "population is limited"),
    ({"generations": 10**9}, "Generations are limited"),
    ({"frozen": "0-1000000"}, "does not exist: the father has"),
])
def test_each_budget_quota_refusal_is_one_sentence_and_writes_nothing(runs_dir, settings, sentence):
    from darwin_core.runs import queue as jobs

    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match=sentence) as refused:
        _launch(runs_dir, **settings)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300
    assert _snapshot(runs_dir) == before and jobs.list_runs(runs_dir) == []


def test_uploads_and_items_beyond_the_quotas_are_refused_before_anything_is_written(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DARWIN_MAX_UPLOAD_MB", "1")
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"prompt": "p", "answer": "a"}\n' * 70_000)  # about 2 MB
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "x" * 200_000, "answer": str(i)}) + "\n" for i in range(2)))
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match="uploads are limited to 1 MB"):
        _launch(runs_dir, uploads=[str(big)])
    with pytest.raises(DarwinError, match="characters long; items are limited"):
        _launch(runs_dir, uploads=[str(long)])
    assert _snapshot(runs_dir) == before


def test_a_visitor_with_the_maximum_of_queued_runs_is_asked_to_wait(runs_dir, monkeypatch):
    monkeypatch.setenv("DARWIN_MAX_QUEUED_RUNS", "1")
    monkeypatch.setattr("darwin_core.runs.queue.ensure_worker", lambda runs_dir=None: False)  # keep the first one queued
    first = _launch(runs_dir)
    before = _snapshot(runs_dir)
    with pytest.raises(DarwinError, match="You already have 1 runs queued or running"):
        _launch(runs_dir)
    assert _snapshot(runs_dir) == before
    assert _launch(runs_dir, state=_state("other")) != first  # another visitor is not held up


def test_hub_and_lm_eval_tasks_are_handed_to_the_worker_as_data_with_the_same_split(tmp_path):
    from darwin_core.fitness.policy import materialize_task
    from darwin_core.fitness.sources import load_task, task_from_items
    from darwin_core.fitness.tasks import Item

    items = [Item(id=f"q{i}", prompt=f"question {i}", answer=str(i % 3), choices=("2", "1", "0")) for i in range(20)]
    task = task_from_items("arc_like", items, seed=4)
    path = materialize_task(task, tmp_path / "runs")
    again = load_task(path, name="arc_like", seed=4)
    assert again.search == task.search and again.heldout == task.heldout  # answers stay indices, not choice texts


# --------------------------------------------------------------------------------------------- a rewritten runs folder


def _tampered_run(runs_dir: Path, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A run the page queued on a Space (local mode off), whose config.yaml someone who can write the runs folder
    (a shared Storage Bucket) then rewrote into local mode with the lm-eval task of `_polyglot`."""
    import yaml

    monkeypatch.setenv("SPACE_ID", "darwin-test/darwin")
    monkeypatch.delenv("DARWIN_LOCAL_MODE", raising=False)
    run_id = _launch(runs_dir)
    marker = tmp_path / "marker"
    config_file = runs_dir / run_id / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config.update(local_mode=True, tasks=[{"lm_eval": str(_polyglot(tmp_path / "writer", marker))}])
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    return run_id, marker


@pytest.fixture()
def no_worker(monkeypatch):
    """Runs are executed by the test in this process, not by a worker started on submit."""
    from darwin_core.runs import queue

    monkeypatch.setattr(queue, "ensure_worker", lambda runs_dir=None: False)


def test_a_run_rewritten_into_local_mode_in_the_runs_folder_never_runs_on_a_space(runs_dir, tmp_path, monkeypatch, no_worker):
    from darwin_core.io.runfolder import RunFolder
    from darwin_core.runs import queue

    run_id, marker = _tampered_run(runs_dir, tmp_path, monkeypatch)
    folder = RunFolder(runs_dir / run_id)
    assert queue.execute(folder.path) == "failed"
    error = folder.read_status()["error"]
    assert "asks for local mode" in error and "DARWIN_LOCAL_MODE" in error and "\n" not in error
    assert not marker.exists() and not folder.file("evaluations.jsonl").exists()
    with pytest.raises(DarwinError, match="asks for local mode"):
        queue.resume(run_id, runs_dir, start_worker=False)


def test_a_health_check_or_chat_of_a_run_rewritten_into_local_mode_is_refused_on_a_space(runs_dir, tmp_path, monkeypatch, no_worker):
    from darwin_core.io.runfolder import RunFolder
    from darwin_core.runs import jobs

    run_id, marker = _tampered_run(runs_dir, tmp_path, monkeypatch)
    for config in ({"job": "health", "run": run_id}, {"job": "chat", "run": run_id, "prompt": "hi", "models": ["father"]}):
        with pytest.raises(DarwinError, match="asks for local mode"):
            jobs.check_local_mode_allowed(RunFolder.create(runs_dir, json.dumps(config), state="queued"))
    monkeypatch.setenv("DARWIN_LOCAL_MODE", "1")  # the Space's owner turned local mode on: theirs to allow
    jobs.check_local_mode_allowed(RunFolder(runs_dir / run_id))
    assert not marker.exists()


def test_a_local_mode_config_is_one_sentence_before_any_run_folder_where_the_server_forbids_local_mode(tmp_path, monkeypatch):
    from darwin_core.runs import queue

    monkeypatch.setenv("SPACE_ID", "darwin-test/darwin")
    monkeypatch.delenv("DARWIN_LOCAL_MODE", raising=False)
    runs = tmp_path / "runs"
    with pytest.raises(DarwinError, match="set local_mode: false"):
        queue.submit({"father": "demo:father", "mother": "demo:mother"}, runs, start_worker=False)
    assert not any(p.name == "config.yaml" for p in runs.rglob("*"))
