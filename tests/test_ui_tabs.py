"""The working tabs over HTTP: launch queues a run and returns at once, owners and watchers, the run's report,
the health check in the background, the card from measured numbers, and a publish through a recording Hub
that never sees the token written anywhere.

One real (tiny) evolution on the demo parents serves the module: a 10-item multiple-choice task (scored by
log-likelihood, so a candidate takes well under a second), population 2, one generation.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
# Resolved here, at collection, not inside a test: transformers' lazy imports can race with the background
# health-check threads the served app starts.
from transformers import AutoModelForCausalLM

from tests.browser import app_process, demo_zoo_dir, served

TOKEN = "hf_uiTabsTOKENmustNeverBeWritten0123456789"
A = {"session": "session-A-" + "a" * 20}
B = {"session": "session-B-" + "b" * 20}
DEMO_TABLE = {"headers": ["task", "what it asks", "weight"], "data": [["reverse", "", 0]]}
EXTRA_TABLE = {"headers": ["source", "name", "weight", "items"], "data": [["hub", "", 1.0, None]]}
WORDS = ["abc", "dog", "cat", "sun", "hat", "pen", "cup", "box", "fig", "jam"]


def write_choice_task(path: Path) -> Path:
    """A small multiple-choice task in the upload format (prompt, choices, answer index)."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, word in enumerate(WORDS):
            handle.write(json.dumps({"id": f"w{i}", "prompt": f"rev: {word} =", "choices": [word[::-1], word], "answer": 0}) + "\n")
    return path


def launch_args(task_file: Path, *, father: str = "demo:father", mother_typed: str = "", generations: int = 1) -> list:
    from gradio_client import handle_file

    return ["demo:father" if father.startswith("demo:") else None, "" if father.startswith("demo:") else father,
            "demo:mother", mother_typed, DEMO_TABLE, EXTRA_TABLE, [handle_file(str(task_file))], 1.0, "darwin-v6",
            "linear", 2, 0.2, generations, 0, 4, 1, "", True, 0]


def wait_for_state(runs_dir: Path, run_id: str, states: tuple[str, ...], timeout: float = 400) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads((runs_dir / run_id / "status.json").read_text())
        if status["state"] in states:
            return status
        time.sleep(1)
    raise TimeoutError(f"run {run_id} did not reach {states} within {timeout} s; last status {status}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    """The page served in this process on a free port, with its own runs folder: (client, runs_dir, task file)."""
    from gradio_client import Client

    from ui.app import build_demo

    scratch = tmp_path_factory.mktemp("ui-tabs")
    zoo = demo_zoo_dir()
    runs_dir = scratch / "runs"
    mp = pytest.MonkeyPatch()
    mp.delenv("SPACE_ID", raising=False)
    mp.delenv("DARWIN_SESSION_SECRET", raising=False)
    request.addfinalizer(mp.undo)
    with served(build_demo(runs_dir=runs_dir, zoo_dir=zoo, local_mode=True)) as url:
        yield Client(url, verbose=False), runs_dir, write_choice_task(scratch / "reverse-choice.jsonl"), zoo
    from darwin_core.runs.jobs import wait_until_idle

    wait_until_idle(runs_dir, 300)  # a health check started by a test must not be cut off by the interpreter's exit


@pytest.fixture(scope="module")
def finished_run(app):
    """Session A's run on the demo parents, launched through the page and finished by the worker."""
    client, runs_dir, task, _ = app
    state, error = client.predict(A, *launch_args(task), api_name="/evolve_launch")
    assert error == ""
    status = wait_for_state(runs_dir, state["run_id"], ("finished", "failed", "cancelled"))
    assert status["state"] == "finished", status
    return state


# ------------------------------------------------------------------------------------------- pure parts


def test_tasks_come_from_demo_weights_extra_rows_and_uploads(tmp_path):
    from darwin_core.errors import DarwinError
    from darwin_core.api import parse_frozen_layers
    from ui.tabs.evolve import demo_task_rows, task_specs

    upload = write_choice_task(tmp_path / "mine.jsonl")
    specs = task_specs(
        demo_task_rows(), {"data": [["hub", "allenai/ai2_arc", 0.5, 100], ["lm_eval", "arc_easy", 1, None], ["hub", "", 1, None]]},
        [str(upload)], 2.0,
    )
    demo = [s for s in specs if "demo" in s]
    assert [s["demo"] for s in demo] == ["reverse", "uppercase", "translate", "sort"]  # weight 0 = unused
    assert all("limit" not in s for s in demo)  # blank item count = the whole pool
    rows = demo_task_rows()
    rows.loc[rows["task"] == "reverse", "items"] = 40
    assert {"demo": "reverse", "weight": 1.0, "limit": 40} in task_specs(rows, None, [], 1.0)
    rows.loc[rows["task"] == "reverse", "items"] = 1.5
    with pytest.raises(DarwinError, match="item count of task 'reverse'"):
        task_specs(rows, None, [], 1.0)
    assert {"hub": "allenai/ai2_arc", "weight": 0.5, "limit": 100} in specs
    assert {"lm_eval": "arc_easy", "weight": 1.0} in specs
    (uploaded,) = [s for s in specs if "file" in s]
    assert uploaded["weight"] == 2.0 and Path(uploaded["file"]) == upload  # staged (copied) only once all is checked
    assert parse_frozen_layers("0, 3 5-7", None) == [0, 3, 5, 6, 7]
    with pytest.raises(DarwinError, match="layer numbers"):
        parse_frozen_layers("first", None)
    with pytest.raises(DarwinError, match="at least one fitness task"):
        task_specs({"data": [["reverse", "", 0]]}, None, [], 1.0)


def test_progress_facts_give_rate_and_eta_from_the_event_log():
    from ui.views import progress_facts

    events = [{"event": "evaluated", "name": "father", "phase": "full", "t": 0.0, "seconds": 1.0}]
    events += [{"event": "evaluated", "name": f"g1c{i}", "phase": "proxy", "t": 10.0 + 2 * i, "seconds": 2.0} for i in range(4)]
    facts = progress_facts({"state": "running", "phase": "search", "generations": 3},
                           events, {"population": 4, "topk_full": 1, "generations": 3})
    assert facts["measured"] == 4 and facts["planned"] == 15
    assert facts["per_minute"] == pytest.approx(30.0)
    assert facts["eta_seconds"] == pytest.approx(11 * 2.0)


def test_owner_record_holds_keyed_hashes_only_and_a_second_session_is_not_an_owner(tmp_path):
    from darwin_core.errors import DarwinError
    from ui import session

    secret = session.app_secret(tmp_path)
    assert (tmp_path / session.SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert session.app_secret(tmp_path) == secret  # kept: owners stay owners after a restart
    (tmp_path / "run").mkdir()
    owner = session.visitor(A, "alice")
    session.record_owner(tmp_path / "run", owner, secret)
    text = (tmp_path / "run" / session.OWNER_FILE).read_text()
    assert A["session"] not in text and "alice" not in text
    assert session.is_owner(tmp_path / "run", session.visitor(A), secret, local_mode=False)
    assert session.is_owner(tmp_path / "run", session.visitor(B, "alice"), secret, local_mode=False)  # signed in elsewhere
    assert not session.is_owner(tmp_path / "run", session.visitor(B), secret, local_mode=True)
    with pytest.raises(DarwinError, match="Only the person who started this run can publish it"):
        session.require_owner(tmp_path / "run", session.visitor(B), secret, local_mode=True, action="publish")
    (tmp_path / "cli-run").mkdir()  # no owner record: a CLI run, manageable only in local mode
    assert session.is_owner(tmp_path / "cli-run", session.visitor(B), secret, local_mode=True)
    assert not session.is_owner(tmp_path / "cli-run", session.visitor(B), secret, local_mode=False)


def test_handlers_take_the_visitors_oauth_token_on_a_space_and_hf_token_elsewhere(monkeypatch):
    import gradio as gr

    from ui import session

    def act(state, repo, token, user):
        return token, user

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    local = session.with_token(act)
    assert list(local.__signature__.parameters) == ["state", "repo"]
    assert local(A, "kid") == (TOKEN, None)

    monkeypatch.setenv("SPACE_ID", "someone/darwin")
    on_space = session.with_token(act)
    params = on_space.__signature__.parameters
    assert params["oauth_token"].annotation == (gr.OAuthToken | None) and params["profile"].annotation == (gr.OAuthProfile | None)
    profile = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""})
    fresh = gr.OAuthToken(token="visitor-token", scope="openid", expires_at=int(time.time()) + 3600)
    assert on_space(A, "kid", profile, fresh) == ("visitor-token", "alice")  # never the Space's HF_TOKEN
    expired = gr.OAuthToken(token="visitor-token", scope="openid", expires_at=int(time.time()) - 1)
    assert on_space(A, "kid", profile, expired) == (None, "alice")
    assert on_space(A, "kid", None, None) == (None, None)


# ------------------------------------------------------------------------------------------- over HTTP


def test_launch_returns_at_once_with_the_run_in_the_browser_state(app):
    client, runs_dir, task, _ = app
    started = time.monotonic()
    state, error = client.predict(A, *launch_args(task), api_name="/evolve_launch")
    elapsed = time.monotonic() - started
    assert error == "" and elapsed < 15, (error, elapsed)
    assert state["session"] == A["session"] and (runs_dir / state["run_id"] / "config.yaml").is_file()
    owner = (runs_dir / state["run_id"] / "owner.json").read_text()
    assert A["session"] not in owner
    # Its owner can cancel it (it is still queued behind or running alongside the module's run).
    message, _ = client.predict(state, api_name="/evolve_cancel")
    assert "Cancelled" in message or "Asked the run to stop" in message
    wait_for_state(runs_dir, state["run_id"], ("cancelled",), timeout=300)


def test_a_second_session_can_watch_but_not_cancel_or_publish_the_first_sessions_run(app, finished_run):
    client, runs_dir, task, _ = app
    run_id = finished_run["run_id"]
    watcher = {**B, "run_id": run_id}
    message, _ = client.predict(watcher, api_name="/evolve_cancel")
    assert message == "**⚠ Only the person who started this run can cancel it; you can watch it.**"
    assert "Only the person who started this run can publish it" in client.predict(watcher, "kid", True, "", api_name="/publish_push")
    path, message = client.predict(watcher, "", api_name="/publish_zip")
    assert path is None and "Only the person who started this run" in message
    assert "Only the person who started this run" in client.predict(watcher, str(runs_dir / "copy"), "", api_name="/publish_save")
    assert not (runs_dir / "copy").exists() and not (runs_dir / run_id / "cancel").exists()
    # Watching is allowed: the run opens with its curve and report.
    new_state, error, header, *_ = client.predict(B, run_id, api_name="/runs_open")
    assert error == "" and new_state["run_id"] == run_id and "finished" in header


def test_the_runs_tab_lists_the_run_and_opens_its_measured_report(app, finished_run):
    client, runs_dir, _, _ = app
    run_id = finished_run["run_id"]
    table, picker, error = client.predict(finished_run, api_name="/runs_list")
    assert error == "" and run_id in [row[0] for row in table["data"]]
    _, error, header, failure, curve, report, heldout = client.predict(finished_run, run_id, api_name="/runs_open")
    saved = json.loads((runs_dir / run_id / "report.json").read_text())
    assert failure == "" and "search fitness" in report
    assert f"{100 * saved['heldout']['models']['child']['composite']:.1f}%" in report
    tasks = [row[0] for row in heldout["data"]]
    assert tasks == ["reverse-choice", "composite"]
    assert json.loads(curve["plot"])["data"], "the fitness figure has traces"


def test_health_check_starts_in_the_background_and_the_call_returns_at_once(app, finished_run):
    client, runs_dir, _, _ = app
    started = time.monotonic()
    header, status, verdict, *_ = client.predict(finished_run, api_name="/health_check")
    assert time.monotonic() - started < 15
    assert finished_run["run_id"] in header
    assert "Checking the child" in status or verdict.startswith("### ")


def test_the_card_names_both_parents_and_carries_the_measured_numbers(app, finished_run):
    client, runs_dir, _, _ = app
    header, warnings, error, card, preview = client.predict(finished_run, "tester/kid", api_name="/publish_card")
    assert error == ""
    # the preview shows the pictures inline (the page has no URL for the files beside the README)
    assert "](data:image/png;base64," in preview and "](darwin-fitness.png)" not in preview
    saved = json.loads((runs_dir / finished_run["run_id"] / "report.json").read_text())
    assert "demo:father" in card and "demo:mother" in card
    # demo parents are not Hub repos: the Hub's base_model accepts repo ids only, so the metadata leaves them out
    metadata = card.split("\n---\n", 1)[0]
    assert "base_model" not in metadata and "demo:" not in metadata
    child = saved["heldout"]["models"]["child"]["composite"]
    assert f"| composite | {sum(saved['heldout']['items'].values())} | {100 * child:.1f} |" in card
    assert "License" in warnings  # the demo parents declare no license: the user is told before publishing
    assert "![Fitness on the search split per generation](darwin-fitness.png)" in card
    assert "](darwin-mri-advantage.png)" in card  # the run scanned its parents: the MRI picture goes with the card
    assert (runs_dir / finished_run["run_id"] / "mri.json").is_file()


def test_unknown_and_incompatible_parents_get_one_sentence(app, tmp_path):
    import torch
    from darwin_core.testing.fixtures import tiny_config

    client, _, task, _ = app
    _, error = client.predict(A, *launch_args(task, father="/no/such/model"), api_name="/evolve_launch")
    assert error.startswith("**⚠") and "Traceback" not in error and "/no/such/model" in error
    config = tiny_config("qwen3")
    config.hidden_size, config.head_dim = 48, 12
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "wide")
    _, error = client.predict(A, *launch_args(task, mother_typed=str(tmp_path / "wide")), api_name="/evolve_launch")
    assert error.startswith("**⚠ These parents cannot be bred:") and "hidden sizes differ" in error


def test_a_finished_runs_child_is_offered_as_a_parent_and_breeds_with_a_demo_parent(app, finished_run):
    from ui.tabs.parents import CHILD_PREFIX, child_choices, inspect_parents, parent_choices

    _, runs_dir, _, zoo = app
    value = CHILD_PREFIX + finished_run["run_id"]
    assert value in [v for _, v in child_choices(runs_dir)]
    assert {"demo:father", "demo:mother", value} <= {v for _, v in parent_choices(zoo, runs_dir)}
    facts, compat, verdict, error = inspect_parents(value, "", "demo:mother", "", local_mode=False, token=None,
                                                    zoo_dir=zoo, runs_dir=runs_dir)
    assert error == "" and verdict.startswith("**Breedable")
    rows = {row[0]: row[1:] for row in facts.values.tolist()}
    assert rows["Model"] == [f"child of run {finished_run['run_id']}", "demo mother"]
    assert rows["Access"] == ["local", "local"]
    *_, error = inspect_parents(CHILD_PREFIX + "no-such-run", "", "demo:mother", "", local_mode=False, token=None,
                                zoo_dir=zoo, runs_dir=runs_dir)
    assert error == "**⚠ Run no-such-run has no finished child to breed.**"


def test_typing_a_hub_id_suggests_matching_repos(app, read_hub):
    client, *_ = app
    for name in ("darwin-test/tiny-llama", "darwin-test/qwen"):
        read_hub.add(name, extra={"config.json": b"{}"})
    update = client.predict("llama", api_name="/father_search")
    assert [value for _, value in update["choices"]] == ["darwin-test/tiny-llama"] and update["value"] is None


def test_a_gated_parent_without_a_token_gets_one_sentence(app, read_hub, fixture_model, monkeypatch):
    client, *_ = app
    read_hub.add("darwin-test/gated-llama", fixture_model("llama"), gated=True)
    monkeypatch.delenv("HF_TOKEN")  # nobody signed in, no token set locally
    facts, compat, verdict, error = client.predict("demo:father", "", None, "darwin-test/gated-llama", api_name="/parents_info")
    assert error.startswith("**⚠") and "Traceback" not in error
    assert "darwin-test/gated-llama is gated: accept its conditions" in error


def test_a_failed_run_shows_the_failure_sentence_from_its_folder(app, finished_run):
    from darwin_core.runs import queue as jobs

    client, runs_dir, _, zoo = app
    vanishing = write_choice_task(runs_dir / "missing.jsonl")  # checked when queued; gone before the worker starts
    config = {"father": str(zoo / "father"), "mother": str(zoo / "mother"), "tasks": [{"file": str(vanishing)}],
              "population": 2, "generations": 1}
    run_id = jobs.submit(config, runs_dir, start_worker=False)
    vanishing.unlink()
    jobs.ensure_worker(runs_dir)
    status = wait_for_state(runs_dir, run_id, ("failed", "finished"), timeout=300)
    assert status["state"] == "failed"
    _, error, header, failure, *_ = client.predict(A, run_id, api_name="/runs_open")
    assert failure == f"**⚠ The run failed: {status['error']}**" and "Traceback" not in failure


# ------------------------------------------------------------------------------------------- publishing


def test_publish_uploads_every_child_file_and_the_token_is_written_nowhere(app, finished_run, tmp_path):
    """`python app.py` with HF_ENDPOINT at a recording Hub (huggingface_hub reads it at import, hence a process)."""
    from gradio_client import Client

    from darwin_core.testing.fakehub import FakeHub
    from ui import session

    _, runs_dir, _, _ = app
    run_id = finished_run["run_id"]
    served_runs = tmp_path / "runs"
    shutil.copytree(runs_dir / run_id, served_runs / run_id, ignore=shutil.ignore_patterns(".lock", "health.json*"))
    secret = session.app_secret(runs_dir)  # the owner hashes were made with it
    with FakeHub() as hub:
        env = {"DARWIN_RUNS_DIR": str(served_runs), "DARWIN_SESSION_SECRET": secret, "HF_ENDPOINT": hub.url,
               "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        log = tmp_path / "app.log"
        with app_process(log, env=env) as url:
            client = Client(url, verbose=False)
            *_, card, _ = client.predict(finished_run, "tester/kid", api_name="/publish_card")
            edited = card + "\nEdited by the owner before publishing.\n"
            result = client.predict(finished_run, "tester/kid", True, edited, api_name="/publish_push")
            with urllib.request.urlopen(url + "config", timeout=30):
                pass
        assert result.startswith("✅ Published:") and "tester/kid" in result, result
        child = served_runs / run_id / "child"
        uploaded = hub.record.files["tester/kid"]
        on_disk = {p.relative_to(child).as_posix(): p.stat().st_size for p in child.rglob("*") if p.is_file()}
        assert {name: len(data) for name, data in uploaded.items()} == on_disk
        assert {"README.md", "config.json", "model.safetensors", "darwin-fitness.png"} <= set(uploaded)
        assert uploaded["README.md"].decode().endswith("Edited by the owner before publishing.\n")
        repo = hub.record.repos["tester/kid"]
        assert repo.get("visibility") == "private" or repo.get("private") is True
        assert TOKEN.encode() not in hub.everything_seen()
    written = [p for p in served_runs.rglob("*") if p.is_file()]
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in log.read_text(errors="replace")
