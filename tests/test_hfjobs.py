"""A breeding launched as a Hugging Face Job: the request the Hub receives, the run folder the Space polls, and
the Job's command run for real by a local process standing in for the Job.

The Hub is the local server of darwin_core.testing.fakehub, which records job requests as huggingface_hub's own
`run_job` sends them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darwin_core.errors import DarwinError
from darwin_core.evolution.pipeline import EvolutionConfig
from darwin_core.io.runfolder import RunFolder
from darwin_core.runs import hfjobs, owners, queue
from darwin_core.testing.fakehub import FakeHub

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_visitorOwnJobsToken0123456789"
GB = 10**9
TINY = dict(father="demo:father", mother="demo:mother", genome="per-block-role", population=4, generations=2,
            proxy_items=4, topk_full=1, seed=3, device="auto",
            tasks=[{"demo": "reverse", "weight": 0.6, "limit": 10}, {"demo": "sort", "weight": 0.4, "limit": 10}])


def _config(**overrides) -> EvolutionConfig:
    return EvolutionConfig.from_dict({**TINY, **overrides})


# --------------------------------------------------------------------------------------------- the flavour


def test_a_small_pair_gets_one_small_gpu_and_a_timeout_above_the_estimate():
    plan = hfjobs.plan_job(_config(), pair_bytes=2 * GB, seconds_per_candidate=5.0)
    assert (plan.flavor, plan.gpus) == ("l4x1", 1)
    assert plan.timeout_seconds >= max(hfjobs.TIMEOUT_FLOOR_SECONDS, plan.estimated_seconds * hfjobs.TIMEOUT_MARGIN)


def test_the_flavour_grows_with_the_pair_and_the_gpu_count_with_the_estimate():
    four_b = hfjobs.plan_job(_config(), pair_bytes=16 * GB, seconds_per_candidate=5.0)
    assert four_b.flavor == "l40sx1"  # two 4B parents in bf16: 16 GB, about 30 GB with the child and margin
    long_run = _config(population=16, generations=40)
    big = hfjobs.plan_job(long_run, pair_bytes=60 * GB, seconds_per_candidate=60.0)
    assert big.flavor.startswith("h200") and big.gpus > 1, big
    assert big.estimated_seconds < hfjobs.candidates_in_run(long_run) * 60.0
    assert big.timeout_seconds > 30 * 60, "never the Hub's default 30 minutes for a long run"


def test_a_pair_no_flavour_holds_and_a_chosen_flavour_too_small_are_refused_in_a_sentence():
    with pytest.raises(DarwinError, match="more than any Jobs flavour"):
        hfjobs.plan_job(_config(), pair_bytes=400 * GB, seconds_per_candidate=1.0)
    with pytest.raises(DarwinError, match="l4x1 has 24 GB"):
        hfjobs.plan_job(_config(), pair_bytes=40 * GB, seconds_per_candidate=1.0, flavor="l4x1")
    with pytest.raises(DarwinError, match="Unknown Jobs flavour"):
        hfjobs.plan_job(_config(), pair_bytes=GB, seconds_per_candidate=1.0, flavor="quantum")


# --------------------------------------------------------------------------------------------- the launch


@pytest.fixture
def space_env(tmp_path, monkeypatch) -> Path:
    runs = tmp_path / "bucket-mount" / "runs"
    monkeypatch.setenv("SPACE_ID", "darwin-org/darwin")
    monkeypatch.setenv(hfjobs.BUCKET_ENV, "darwin-org/darwin-runs")
    monkeypatch.setenv(owners.SECRET_ENV, "the-spaces-own-session-secret")
    monkeypatch.delenv(hfjobs.IMAGE_ENV, raising=False)
    monkeypatch.delenv(hfjobs.JOB_RUN_ENV, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the Hub here is the local server
    return runs


def _launch(hub: FakeHub, runs: Path, **overrides) -> tuple[str, hfjobs.JobPlan]:
    config = _config(**{"local_mode": False, **overrides})  # as check_breed makes it on a Space
    plan = hfjobs.plan_job(config, pair_bytes=2 * GB, seconds_per_candidate=3.0)
    who = owners.Visitor(session="browser-session-1", user="visitor")
    run_id = hfjobs.launch_job(config, runs, token=TOKEN, who=who, plan=plan, push_repo="visitor/darwin-child", endpoint=hub.url)
    return run_id, plan


def test_the_job_request_names_the_spaces_image_the_flavour_the_timeout_and_the_bucket_and_carries_the_token_only_as_a_secret(space_env):
    with FakeHub() as hub:
        run_id, plan = _launch(hub, space_env)
    (job,) = hub.record.jobs.values()
    spec = job["spec"]
    assert job["namespace"] == "tester"  # the visitor's own account (whoami of their token)
    assert spec["spaceId"] == "darwin-org/darwin" and "dockerImage" not in spec
    assert spec["flavor"] == plan.flavor and spec["timeoutSeconds"] == plan.timeout_seconds
    mount = str(space_env.resolve())
    assert spec["volumes"] == [{"type": "bucket", "source": "darwin-org/darwin-runs", "mountPath": mount}]
    line = " ".join(spec["command"])
    assert f"torch.distributed.run --standalone --nproc-per-node {plan.gpus} -m darwin_core evolve {mount}/{run_id}/config.yaml" in line
    assert f"--run-id {run_id}" in line and "push" in line and "visitor/darwin-child" in line
    assert spec["secrets"] == {"HF_TOKEN": TOKEN}
    assert spec["environment"] == {"DARWIN_RUNS_DIR": mount, hfjobs.JOB_RUN_ENV: run_id, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    without_secrets = json.dumps({k: v for k, v in spec.items() if k != "secrets"})
    assert TOKEN not in without_secrets, "the token is in the command line or the environment"
    for request in hub.record.requests:  # once in the job's secrets, else only in the Authorization header
        expected = 1 if b'"secrets"' in request["body"] else 0
        assert request["body"].count(TOKEN.encode()) == expected
        assert TOKEN not in json.dumps({k: v for k, v in request["headers"].items() if k.lower() != "authorization"})


def test_the_launched_run_is_a_run_folder_of_the_visitor_marked_as_a_job_with_no_token_in_it(space_env):
    with FakeHub() as hub:
        run_id, plan = _launch(hub, space_env)
        folder = RunFolder(space_env / run_id)
        status = folder.read_status()
        assert status["state"] == "starting" and status["hf_job"]["flavor"] == plan.flavor
        (job_id,) = hub.record.jobs
        assert status["hf_job"]["id"] == job_id
        assert hfjobs.job_stage(folder.path, token=TOKEN, endpoint=hub.url) == "SCHEDULING"
        hub.set_job_stage(job_id, "RUNNING")
        assert hfjobs.job_stage(folder.path, token=TOKEN, endpoint=hub.url) == "RUNNING"
    who = owners.Visitor(session="browser-session-1", user="visitor")
    assert owners.is_owner(folder.path, who, owners.app_secret(space_env), local_mode=False)
    assert any(e["event"] == "hf_job_submitted" and e["job_id"] == job_id for e in folder.events())
    assert all(TOKEN.encode() not in p.read_bytes() for p in space_env.rglob("*") if p.is_file())


@pytest.mark.parametrize("token, unset, refusal", [
    (None, None, "Sign in"),  # no token: nothing to launch with
    (TOKEN, hfjobs.BUCKET_ENV, hfjobs.BUCKET_ENV),  # a runs folder outside a bucket
    (TOKEN, owners.SECRET_ENV, owners.SECRET_ENV),  # no session secret to seal the config with
], ids=["without-a-token", "outside-a-bucket", "without-the-session-secret"])
def test_a_launch_that_cannot_go_ahead_writes_nothing_and_asks_for_no_job(space_env, monkeypatch, token, unset, refusal):
    if unset:
        monkeypatch.delenv(unset)
    config = _config()
    plan = hfjobs.plan_job(config, pair_bytes=GB, seconds_per_candidate=1.0)
    with FakeHub() as hub, pytest.raises(DarwinError, match=refusal):
        hfjobs.launch_job(config, space_env, token=token, who=owners.Visitor(session="s"), plan=plan, endpoint=hub.url)
    assert hub.record.jobs == {} and not space_env.exists()


# --------------------------------------------------------------------------------------------- the run on the Space


def test_a_jobs_run_reads_as_starting_here_not_interrupted_and_cannot_be_resumed_here_while_the_job_holds_it(space_env):
    with FakeHub() as hub:
        run_id, _ = _launch(hub, space_env)
    folder = RunFolder(space_env / run_id)
    assert not folder.is_active(), "the Job's lock would be on its own machine"
    assert queue.read_state(folder) == "starting"
    with pytest.raises(DarwinError, match="already starting"):
        queue.resume(run_id, space_env, start_worker=False)
    assert not hfjobs.settle_job(folder.path, "RUNNING")
    assert hfjobs.settle_job(folder.path, "ERROR") and queue.read_state(folder) == "failed"
    assert "resume" in folder.read_status()["error"]
    queue.resume(run_id, space_env, start_worker=False)  # the config is the one the Space sealed: it may run here
    assert queue.read_state(folder) == "queued"


def test_a_job_the_hub_no_longer_knows_settles_its_run_and_a_hub_that_cannot_answer_changes_nothing(space_env):
    with FakeHub() as hub:
        run_id, _ = _launch(hub, space_env)
        folder = RunFolder(space_env / run_id)
        (job_id,) = hub.record.jobs
        assert not hfjobs.follow_job(folder.path, token=TOKEN, endpoint=hub.url)  # scheduling: nothing to settle
        hub.forget_job(job_id)
        with socket.socket() as probe:  # a port nothing listens on: the Hub cannot be reached
            probe.bind(("127.0.0.1", 0))
            unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}"
        assert not hfjobs.follow_job(folder.path, token=TOKEN, endpoint=unreachable), "an unreachable Hub settled the run"
        assert queue.read_state(folder) == "starting"
        assert hfjobs.follow_job(folder.path, token=TOKEN, endpoint=hub.url)  # a Hub that answers 404 for the Job
    assert queue.read_state(folder) == "failed"
    assert "no longer knows" in folder.read_status()["error"] and "resume" in folder.read_status()["error"]
    queue.resume(run_id, space_env, start_worker=False)
    assert queue.read_state(folder) == "queued"


def test_a_jobs_run_whose_config_was_rewritten_in_the_bucket_never_runs_on_the_space(space_env):
    with FakeHub() as hub:
        run_id, _ = _launch(hub, space_env)
    folder = RunFolder(space_env / run_id)
    hfjobs.settle_job(folder.path, "COMPLETED")
    config = folder.path / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("population: 4", "population: 5"), encoding="utf-8")
    assert "population: 5" in folder.config_text()
    with pytest.raises(DarwinError, match="no longer the one this Space launched"):
        queue.resume(run_id, space_env, start_worker=False)
    assert queue.execute(folder.path) == "failed" and "no longer the one" in folder.read_status()["error"]
    assert not folder.file("evaluations.jsonl").exists(), "nothing of the rewritten config ran"


# --------------------------------------------------------------------------------------------- the job itself


def test_the_recorded_command_run_by_a_local_stand_in_for_the_job_finishes_the_run_the_space_lists(space_env):
    with FakeHub() as hub:
        run_id, _ = _launch(hub, space_env)
    (job,) = hub.record.jobs.values()
    command = job["spec"]["command"]
    evolve = command[2].split(" && ")[0].split() if command[0] == "bash" else command
    evolve = [sys.executable, *evolve[1:]]
    evolve[evolve.index("--nproc-per-node") + 1] = "1"  # this machine stands in for the flavour's GPUs
    env = {**os.environ, **job["spec"]["environment"], "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(evolve, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = queue.read_run(run_id, space_env)
    assert run["state"] == "finished" and run["child_dir"]
    assert [r["run_id"] for r in queue.list_runs(space_env)] == [run_id]


# --------------------------------------------------------------------------------------------- the page's block


def test_the_evolve_tabs_job_button_launches_on_the_visitors_account_and_points_the_page_at_the_run(space_env, monkeypatch):
    import gradio as gr
    from huggingface_hub import constants

    from ui import job_launch

    with gr.Blocks():
        state = gr.BrowserState({})
        block = job_launch.build_job_launch(state, [], [], make_config=lambda state, token, user: _config(local_mode=False),
                                            runs_dir=space_env, local_mode=False)
    assert block.flavor.value == job_launch.AUTO and "h200x8" in [c[0] for c in block.flavor.choices]
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        new_state, message = job_launch.launch_job_core({"session": "browser-session-2"}, "l40sx1", "", TOKEN, "visitor",
                                                         make_config=lambda state, token, user: _config(local_mode=False),
                                                         runs_dir=space_env, local_mode=False, zoo_dir=None)
        refused_state, refusal = job_launch.launch_job_core({"session": "s"}, job_launch.AUTO, "", None, None,
                                                            make_config=lambda state, token, user: _config(local_mode=False),
                                                            runs_dir=space_env, local_mode=False, zoo_dir=None)
    (job,) = hub.record.jobs.values()
    assert job["spec"]["flavor"] == "l40sx1" and "push" not in " ".join(job["spec"]["command"])
    assert new_state["run_id"] in message and "l40sx1" in message
    assert RunFolder(space_env / new_state["run_id"]).read_status()["hf_job"]["flavor"] == "l40sx1"
    assert "Sign in" in refusal and TOKEN not in message + refusal


def _page_handler(demo, api_name: str):
    (fn,) = [f.fn for f in demo.fns.values() if f.api_name == api_name]
    return fn


STRANGER_TOKEN = "hf_anotherVisitorsOwnToken987654321"


@dataclasses.dataclass
class SpacePage:
    """The app as a Space serves it (OAuth on, the Space's own HF_TOKEN set) and a signed-in visitor's identity."""

    demo: object
    profile: object
    oauth: object
    space_token: str

    def handler(self, api_name: str):
        return _page_handler(self.demo, api_name)

    @contextlib.contextmanager
    def launched_job(self, monkeypatch, marker: str):
        """The signed-in visitor launches the form's Job from the Evolve tab on a local Hub, which stays up inside
        the block: yields (the Hub, their page state, the launch message, the job id)."""
        from huggingface_hub import constants

        with FakeHub() as hub:
            monkeypatch.setattr(constants, "ENDPOINT", hub.url)
            state, message = self.handler("evolve_launch_job")({"session": "visitor-session-" + marker * 16},
                                                               *self.form(4), job_launch_auto(), "", self.profile, self.oauth)
            (job_id,) = hub.record.jobs
            yield hub, state, message, job_id

    def stranger(self) -> tuple[dict, object, object]:
        """Another signed-in visitor: their page state, profile and own OAuth token."""
        import gradio as gr

        token = gr.OAuthToken(token=STRANGER_TOKEN, scope="openid profile", expires_at=self.oauth.expires_at)
        profile = gr.OAuthProfile({"name": "S", "preferred_username": "stranger", "profile": "", "picture": ""})
        return {"session": "stranger-session-" + "z" * 16}, profile, token

    @staticmethod
    def form(population: int) -> list:
        from ui.tabs.evolve import demo_task_rows

        rows = demo_task_rows()
        rows["items"] = 8
        return ["demo:father", "", "demo:mother", "", rows, {"data": []}, [], 1.0, "per-layer", "linear", population, 0.2,
                2, 0, 2, 1, "", False, 0, "neutral", "topk"]


@pytest.fixture
def space_page(space_env, monkeypatch) -> SpacePage:
    import time

    import gradio as gr
    from huggingface_hub import constants

    from tests.browser import demo_zoo_dir
    from ui.app import build_demo

    space_token = "hf_SPACE_OWNERS_OWN_TOKEN_sentinel"
    for name, value in {"HF_TOKEN": space_token, "SYSTEM": "spaces", "OAUTH_CLIENT_ID": "darwin-test",  # a Space's runtime
                        "OAUTH_CLIENT_SECRET": "not-a-secret", "OAUTH_SCOPES": "openid profile jobs",
                        "OPENID_PROVIDER_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
        if name.startswith(("OAUTH_", "OPENID_")):  # gradio.oauth read these when it was imported
            monkeypatch.setattr(gr.oauth, name, value)
    for name in ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_TOKEN_PATH"):  # build_demo seals them: restored afterwards
        monkeypatch.setattr(constants, name, getattr(constants, name))
        monkeypatch.setenv(name, str(getattr(constants, name)))
    profile = gr.OAuthProfile({"name": "Vis", "preferred_username": "visitor", "profile": "", "picture": ""})
    oauth = gr.OAuthToken(token=TOKEN, scope="openid profile jobs", expires_at=int(time.time()) + 3600)
    return SpacePage(build_demo(runs_dir=space_env, zoo_dir=demo_zoo_dir()), profile, oauth, space_token)


def test_the_evolve_tab_launches_a_job_with_the_visitors_oauth_token_never_the_spaces_after_the_local_checks(space_env, space_page, monkeypatch):
    from huggingface_hub import constants

    launch_job, form = space_page.handler("evolve_launch_job"), space_page.form
    profile, oauth, space_token = space_page.profile, space_page.oauth, space_page.space_token
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        _, refusal = launch_job({"session": "visitor-session-" + "x" * 16}, *form(10_000), "l4x1", "", profile, oauth)
        assert "population is limited" in refusal and hub.record.jobs == {}, "a Job passes the local launch's quotas"
        state, message = launch_job({"session": "visitor-session-" + "x" * 16}, *form(4), job_launch_auto(), "", profile, oauth)
        assert state["run_id"] in message, message
        _, anonymous = launch_job({"session": "anon-session-" + "y" * 16}, *form(4), job_launch_auto(), "",
                                                None, None)
    assert "Sign in" in anonymous
    ((job_id, job),) = hub.record.jobs.items()
    assert job["spec"]["secrets"] == {"HF_TOKEN": TOKEN}
    assert all(space_token.encode() not in request["body"] and space_token not in json.dumps(request["headers"])
               for request in hub.record.requests), "the Space's own token reached the Hub"
    folder = RunFolder(space_env / state["run_id"])
    assert folder.read_status()["hf_job"]["id"] == job_id
    assert queue.read_state(folder) == "starting"
    assert all(TOKEN.encode() not in p.read_bytes() and space_token.encode() not in p.read_bytes()
               for p in space_env.rglob("*") if p.is_file())


def job_launch_auto() -> str:
    from ui.job_launch import AUTO

    return AUTO


def test_a_job_that_died_is_settled_by_its_owners_page_with_their_token_and_the_run_can_be_resumed(space_env, space_page, monkeypatch):
    poll = space_page.handler("poll_core")
    stranger_state, stranger_profile, stranger = space_page.stranger()
    with space_page.launched_job(monkeypatch, "x") as (hub, state, message, job_id):
        run_id = state["run_id"]
        folder = RunFolder(space_env / run_id)
        poll(state, None, 0.0, space_page.profile, space_page.oauth)  # the Job is scheduling: nothing to settle
        assert queue.read_state(folder) == "starting"
        hub.set_job_stage(job_id, "ERROR")
        asked = len(hub.record.requests)
        outputs = poll({**stranger_state, "run_id": run_id}, None, 0.0, stranger_profile, stranger)
        assert queue.read_state(folder) == "starting" and len(hub.record.requests) == asked, "a stranger's poll asked the Hub"
        recent = poll(state, None, time.time(), space_page.profile, space_page.oauth)  # checked a moment ago: not again
        assert queue.read_state(folder) == "starting" and len(hub.record.requests) == asked
        outputs = poll(state, None, 0.0, space_page.profile, space_page.oauth)
    assert queue.read_state(folder) == "failed"
    assert "Job ended (ERROR)" in outputs[1] and "resume" in outputs[1], outputs[1]
    assert outputs[-1] > 0 and recent[-1] > 0
    assert all(STRANGER_TOKEN.encode() not in r["body"] and STRANGER_TOKEN not in json.dumps(r["headers"])
               and space_page.space_token not in json.dumps(r["headers"]) for r in hub.record.requests)
    queue.resume(run_id, space_env, start_worker=False)
    assert queue.read_state(folder) == "queued"


def test_the_runs_list_settles_its_visitors_dead_job_with_their_token_and_asks_nothing_for_another(space_env, space_page, monkeypatch):
    from ui.views import STATE_TEXT

    listing = space_page.handler("runs_list")
    stranger_state, stranger_profile, stranger = space_page.stranger()
    with space_page.launched_job(monkeypatch, "y") as (hub, state, _, job_id):
        run_id = state["run_id"]
        hub.set_job_stage(job_id, "ERROR")
        asked = len(hub.record.requests)
        table, _, _, _ = listing(stranger_state, 0.0, stranger_profile, stranger)
        assert queue.read_state(RunFolder(space_env / run_id)) == "starting" and len(hub.record.requests) == asked
        _, _, _, checked = listing(state, time.time(), space_page.profile, space_page.oauth)  # asked a moment ago
        assert len(hub.record.requests) == asked and checked > 0
        table, _, error, checked = listing(state, 0.0, space_page.profile, space_page.oauth)
    assert queue.read_state(RunFolder(space_env / run_id)) == "failed" and error == ""
    row = table[table["run"] == run_id].iloc[0]
    assert row["state"] != STATE_TEXT["starting"] and row["state"] == STATE_TEXT["failed"]
    assert len(hub.record.requests) == asked + 1 and checked > 0
    assert all(space_page.space_token not in json.dumps(r["headers"]) for r in hub.record.requests)


def test_the_runs_list_reads_the_runs_folder_once_when_its_job_check_settles_nothing(space_env, space_page, monkeypatch):
    from darwin_core import api

    listing, reads = space_page.handler("runs_list"), []
    read = queue.list_runs

    def counted(*args, **kwargs):
        reads.append(1)
        return read(*args, **kwargs)

    with space_page.launched_job(monkeypatch, "w") as (hub, state, _, job_id):
        hub.set_job_stage(job_id, "RUNNING")
        monkeypatch.setattr(queue, "list_runs", counted)
        monkeypatch.setattr(api, "list_runs", counted)
        asked = len(hub.record.requests)
        table, _, error, checked = listing(state, 0.0, space_page.profile, space_page.oauth)  # a check is due
    assert error == "" and checked > 0 and len(hub.record.requests) == asked + 1  # the Hub was asked
    assert state["run_id"] in set(table["run"]) and len(reads) == 1


# --------------------------------------------------------------------------------------------- a gated parent


def _stand_in(job: dict, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """The Job's evolve run by a local process on a machine of its own: `env` adds what that machine has."""
    command = job["spec"]["command"]
    evolve = command[2].split(" && ")[0].split() if command[0] == "bash" else list(command)
    evolve = [sys.executable, *evolve[1:]]
    evolve[evolve.index("--nproc-per-node") + 1] = "1"  # this machine stands in for the flavour's GPUs
    env = {**os.environ, **job["spec"]["environment"], "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(evolve, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _own_machine(read_hub, cache: Path, token: str) -> dict[str, str]:
    """The environment of a machine that reaches the (local) Hub with an empty cache and `token` as HF_TOKEN."""
    return {"HF_TOKEN": token, "HF_ENDPOINT": read_hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_CACHE": str(cache)}


@pytest.mark.parametrize("job_token, finishes", [("hf_granted", True), ("hf_not_granted", False)],
                         ids=["with-the-visitors-token", "with-a-token-the-repo-refuses"])
def test_a_job_breeds_a_gated_parent_it_downloads_with_the_visitors_secret(space_env, read_hub, fixture_pair, tmp_path,
                                                                         job_token, finishes):
    from darwin_core.runs.breeding import BreedRequest, check_breed

    father, mother = fixture_pair("llama", related=True)
    read_hub.add("darwin-test/gated-father", father, gated=True)
    read_hub.add("darwin-test/open-mother", mother)
    who = owners.Visitor(session="browser-session-1", user="visitor")
    request = BreedRequest(father="darwin-test/gated-father", mother="darwin-test/open-mother",
                           tasks=tuple(TINY["tasks"]), settings={k: TINY[k] for k in (
                               "genome", "population", "generations", "proxy_items", "topk_full", "seed")})
    config = check_breed(request, who, runs_dir=space_env, local_mode=False, token="hf_granted").config
    assert config.father.startswith("darwin-test/gated-father@"), "the page pins the gated parent by its commit"
    plan = hfjobs.plan_job(config, pair_bytes=2 * GB, seconds_per_candidate=3.0)
    with FakeHub() as hub:
        run_id = hfjobs.launch_job(config, space_env, token=job_token, who=who, plan=plan, endpoint=hub.url)
    (job,) = hub.record.jobs.values()
    assert job["spec"]["secrets"] == {"HF_TOKEN": job_token}
    done = _stand_in(job, _own_machine(read_hub, tmp_path / "the-jobs-own-cache", job_token))
    run = queue.read_run(run_id, space_env)
    if finishes:
        assert done.returncode == 0 and run["state"] == "finished", done.stdout[-2000:] + done.stderr[-2000:]
    else:
        assert done.returncode != 0 and run["state"] == "failed"
        assert "is gated" in run["error"] and run["error"] in done.stdout + done.stderr, "the Space shows the Job's sentence"
    assert f"Bearer {job_token}" in read_hub.auth_seen, "the Job read the gated parent with the visitor's token"
    assert "Bearer hf_space_owner_secret" not in read_hub.auth_seen


@pytest.mark.parametrize("queued", [False, True], ids=["in-the-foreground", "queued-for-the-worker"])
def test_the_cli_breeds_a_gated_parent_it_downloads_with_hf_token(read_hub, fixture_pair, tmp_path, monkeypatch, queued):
    from darwin_core.runs.jobs import wait_until_idle

    import yaml

    father, mother = fixture_pair("llama", related=True)
    read_hub.add("darwin-test/gated-father", father, gated=True)
    read_hub.add("darwin-test/open-mother", mother)
    monkeypatch.delenv("SPACE_ID", raising=False)
    config = {**TINY, "father": "darwin-test/gated-father", "mother": "darwin-test/open-mother", "generations": 1}
    (tmp_path / "breed.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           **_own_machine(read_hub, tmp_path / "cache", "hf_granted")}
    done = subprocess.run([sys.executable, "-m", "darwin_core", "evolve", "breed.yaml", "--runs-dir", "runs",
                           *(["--queue"] if queued else [])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert wait_until_idle(tmp_path / "runs", timeout=240)
    (run,) = queue.list_runs(tmp_path / "runs")
    assert run["state"] == "finished"
    assert "Bearer hf_granted" in read_hub.auth_seen and "Bearer hf_space_owner_secret" not in read_hub.auth_seen
    assert all(b"hf_granted" not in p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file())
