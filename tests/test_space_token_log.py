"""On a Space, the Space's own Hub token never leaves the process: read the Hub servers' request logs.

Each test starts the page the way a Space does — `HF_TOKEN` holds the Space owner's token, `SPACE_ID` is set,
`HF_ENDPOINT` points at a local recording Hub (tests/readhub.py for reads, darwin_core/testing/fakehub.py for
pushes) — by calling the real `ui.app.build_demo` in a fresh process (huggingface_hub and datasets read
HF_ENDPOINT at import), then calls the page's own event handler for one visitor action, with the sign-in
Gradio injects on a Space (a `gr.OAuthToken`, or none for an anonymous visitor). The log must show the
visitor's token on every request (or no token at all), and never the Space's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.readhub import ReadHub

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACE_TOKEN = "hf_SPACE_SECRET_sentinel"
VISITOR_TOKEN = "hf_visitor_alice_0123456789"

# One visitor action on a freshly built Space page, in its own process; prints one JSON line "RESULT {...}".
DRIVER = r"""
import json, os, sys, time

import gradio as gr

from tests.browser import demo_zoo_dir
from ui.app import build_demo

args = json.loads(sys.argv[1])
runs = args["runs"]
demo = build_demo(runs_dir=runs, zoo_dir=demo_zoo_dir())  # what app.py runs on a Space: local mode off, sealed
sealed = {name: name in os.environ for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")}


def handler(api_name):
    (fn,) = [f.fn for f in demo.fns.values() if f.api_name == api_name]
    return fn


token = args["token"]
profile = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""}) if token else None
oauth = gr.OAuthToken(token=token, scope="openid", expires_at=int(time.time()) + 3600) if token else None
state = {"session": "visitor-alice-" + "x" * 16}
out = {"env_tokens_left": sealed}
if args["action"] == "inspect":
    facts, compat, verdict, error = handler("parents_info")(None, args["repo"], None, args["repo"], profile, oauth)
    out.update(error=error, verdict=verdict, facts=facts.values.tolist())
elif args["action"] == "evolve":
    from ui.tabs.evolve import demo_task_rows

    rows = demo_task_rows()
    rows["weight"] = 0.0  # only the visitor's task counts
    settings = [rows, {"data": [args["task"]]}, [], 1.0, "per-layer", "linear", 2, 0.2, 1, 0, 2, 1, "", False, 0, "neutral", "topk"]
    new_state, error = handler("evolve_launch")(state, "demo:father", "", "demo:mother", "", *settings, profile, oauth)
    out.update(error=error, run_id=None if error else new_state["run_id"])
elif args["action"] == "publish":  # the visitor's own finished run (demo tasks), then Push to the Hub
    from ui.tabs.evolve import demo_task_rows

    rows = demo_task_rows()
    rows["items"] = 8
    settings = [rows, {"data": []}, [], 1.0, "per-layer", "linear", 2, 0.2, 1, 0, 2, 1, "", False, 0, "neutral", "topk"]
    owned, error = handler("evolve_launch")(state, "demo:father", "", "demo:mother", "", *settings, profile, oauth)
    assert not error, error
    status_path = os.path.join(runs, owned["run_id"], "status.json")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            status = json.load(open(status_path))
        except (OSError, ValueError):
            status = {}
        if status.get("state") in ("finished", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert status.get("state") == "finished", status
    result = handler("publish_push")(owned, "alice/kid", True, "# a child\n\nBred on a Space.\n", profile, oauth)
    out.update(result=result)
print("RESULT " + json.dumps(out))
"""


def _space_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "DARWIN_"))}
    env.update({
        "HF_TOKEN": SPACE_TOKEN,  # the Space owner's secret, as the Space runtime sets it
        "SPACE_ID": "darwin-test/darwin",
        "SYSTEM": "spaces",  # what Gradio reads to know it runs on a Space; the OAuth app the runtime provides:
        "OAUTH_CLIENT_ID": "darwin-test", "OAUTH_CLIENT_SECRET": "not-a-secret", "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "http://127.0.0.1:9",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(REPO_ROOT),
    })
    return env


def _visit(tmp_path: Path, endpoint: str, action: str, token: str | None, **extra) -> dict:
    runs = tmp_path / "runs"
    args = {"action": action, "token": token, "runs": str(runs), **extra}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], cwd=REPO_ROOT, env=_space_env(tmp_path, endpoint),
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    assert SPACE_TOKEN not in done.stdout + done.stderr
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert not any(result["env_tokens_left"].values()), result  # build_demo took the Space's token out
    return result


def _sent(hub: ReadHub) -> set[str | None]:
    assert hub.auth_seen, "the action never asked the Hub"
    assert not any(SPACE_TOKEN in (auth or "") for auth in hub.auth_seen)
    return set(hub.auth_seen)


def _expected(token: str | None) -> set[str | None]:
    return {f"Bearer {token}"} if token else {None}


VISITORS = [pytest.param(None, id="anonymous"), pytest.param(VISITOR_TOKEN, id="signed-in")]


# ------------------------------------------------------------------------------------------- (a) inspect


@pytest.mark.parametrize("token", VISITORS)
def test_inspecting_a_hub_parent_sends_the_visitors_token_or_none_never_the_spaces(tmp_path, fixture_model, token):
    hub = ReadHub()
    try:
        hub.add("darwin-test/tiny-llama", fixture_model("llama"))
        result = _visit(tmp_path, hub.url, "inspect", token, repo="darwin-test/tiny-llama")
    finally:
        hub.server.shutdown()
    assert result["error"] == "" and result["verdict"].startswith("**Breedable"), result
    assert "darwin-test/tiny-llama" in json.dumps(result["facts"])
    assert any("/resolve/" in p for p in hub.paths_seen) and hub.unknown == []
    assert _sent(hub) == _expected(token)


# ------------------------------------------------------------------------------------------- (b), (c) evolve


def _arc_rows(count: int, tag: str) -> bytes:
    return "".join(json.dumps({
        "id": f"{tag}-{i}", "question": f"{tag} question {i}?",
        "choices": {"text": [f"first {i}", f"second {i}", f"third {i}", f"fourth {i}"], "label": ["A", "B", "C", "D"]},
        "answerKey": "ABCD"[i % 4],
    }) + "\n" for i in range(count)).encode()


def _ai2_arc(hub: ReadHub) -> None:
    """allenai/ai2_arc in miniature: both configs, three JSONL splits each, named in the card's `configs:`."""
    card, files = "---\nconfigs:\n", {}
    for config in ("ARC-Challenge", "ARC-Easy"):
        card += f"- config_name: {config}\n  data_files:\n"
        for split in ("train", "validation", "test"):
            card += f"  - split: {split}\n    path: {config}/{split}.jsonl\n"
            files[f"{config}/{split}.jsonl"] = _arc_rows(6, f"{config}-{split}")
    files["README.md"] = (card + "---\n# ai2_arc, a few rows for tests\n").encode()
    hub.add_dataset("allenai/ai2_arc", files)


def _wait_for_end(run_folder: Path, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads((run_folder / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("state") in ("finished", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"the run did not end in {timeout} s: {status}")


def _stop_worker(runs: Path) -> None:
    """The page started the worker in its own session; end it (by the pid in its lock file) once the run is over."""
    import signal

    from darwin_core.runs.queue import WORKER_LOCK, worker_alive

    if worker_alive(runs):
        pid = int((runs / WORKER_LOCK).read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while worker_alive(runs) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.mark.parametrize("token", VISITORS)
@pytest.mark.parametrize("task, fetched", [
    pytest.param(["hub", "allenai/ai2_arc", 1.0, 6], "ARC-Challenge/test.jsonl", id="hub-dataset"),
    pytest.param(["lm_eval", "arc_easy", 1.0, 6], "ARC-Easy/test.jsonl", id="lm-eval-arc_easy"),
])
def test_an_evolve_run_on_a_hub_task_never_sends_the_spaces_token(tmp_path, token, task, fetched):
    """The page fetches the task (stage_tasks) and the worker runs the evolution to its end: together they send
    the visitor's token or none. lm-eval's `datasets.load_dataset` gets no token from Darwin, so for an
    allow-listed lm-eval task (public datasets only) every request is anonymous, signed in or not."""
    if task[0] == "lm_eval":
        pytest.importorskip("lm_eval", reason="lm-eval is a test extra (requirements-test.txt)")
    hub = ReadHub()
    runs = tmp_path / "runs"
    try:
        _ai2_arc(hub)
        result = _visit(tmp_path, hub.url, "evolve", token, task=task)
        assert result["error"] == "", result
        status = _wait_for_end(runs / result["run_id"])
    finally:
        _stop_worker(runs)
        hub.server.shutdown()
    assert status["state"] == "finished", status
    assert any(p.endswith(fetched) for p in hub.paths_seen), hub.paths_seen  # the task's data came from this Hub
    assert hub.unknown == []
    expected = _expected(token) if task[0] == "hub" else {None}
    assert _sent(hub) == expected
    config = (runs / result["run_id"] / "config.yaml").read_text()
    assert "hub:" not in config and "lm_eval:" not in config  # the worker got data, not a name to fetch
    written = [p for p in runs.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SPACE_TOKEN.encode() in p.read_bytes()]
    assert not [p for p in written if VISITOR_TOKEN.encode() in p.read_bytes()]


# ------------------------------------------------------------------------------------------- (d) publish


def test_publishing_pushes_with_the_visitors_token_and_the_spaces_appears_in_no_request(tmp_path):
    from darwin_core.testing.fakehub import FakeHub

    with FakeHub() as hub:
        try:
            result = _visit(tmp_path, hub.url, "publish", VISITOR_TOKEN)
        finally:
            _stop_worker(tmp_path / "runs")
    assert result["result"].startswith("✅ Published:") and "alice/kid" in result["result"], result
    assert hub.record.files["alice/kid"]["README.md"].decode().endswith("Bred on a Space.\n")
    assert any(r["path"].startswith("/lfs-upload/") for r in hub.record.requests)  # the weights went too
    sent = {r["headers"].get("Authorization") or r["headers"].get("authorization") for r in hub.record.requests
            if not r["path"].startswith("/lfs-upload/")}  # LFS PUTs go to the storage URL, which carries no token
    assert sent == {f"Bearer {VISITOR_TOKEN}"}
    everything = b"\n".join([hub.everything_seen(), *(json.dumps(r["headers"]).encode() for r in hub.record.requests)])
    assert SPACE_TOKEN.encode() not in everything
