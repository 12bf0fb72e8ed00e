"""Talking to a run's models before publishing: the child, a measured candidate or a parent beside both parents,
through the worker's job queue (the same prompt served from the stored answers), on the command line, and in the
Try-it tab of a real browser, on the demo zoo (each answer takes about a second on a CPU)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from darwin_core.chat.answer import Sampling, chat_run, chat_text
from darwin_core.chat.models import candidate_recipe, candidates, model_choices
from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import RunFolder
from darwin_core.runs import jobs as device_jobs
from darwin_core.runs import queue
from tests.browser import CHROMIUM, chromium_page, screenshot, served
from tests import test_jobs
from tests.test_jobs import REPO, _wait

runs_dir = test_jobs.runs_dir  # the fixture that leaves no worker behind

PROMPT = "rev: hello ="
ITEMS_PER_SKILL = 8  # a population-2, one-generation run of the demo parents finishes in seconds


def _demo_config():
    from darwin_core.evolution.config import EvolutionConfig
    from darwin_core.fitness.demo_tasks import DEMO_SKILLS

    return EvolutionConfig(father="demo:father", mother="demo:mother", population=2, generations=1, proxy_items=4,
                           topk_full=1, device="cpu",
                           tasks=tuple({"demo": skill, "limit": ITEMS_PER_SKILL} for skill in DEMO_SKILLS))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A finished run of the demo parents (child on disk, two measured candidates), run in this process."""
    runs = tmp_path_factory.mktemp("chat") / "runs"
    folder = queue.prepare_foreground(_demo_config(), runs, run_id="talk")
    assert queue.execute(folder.path) == "finished"
    return folder.path


def _copy_run(demo_run: Path, runs_dir: Path) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(demo_run, runs_dir / demo_run.name))


def test_the_child_and_both_parents_answer_one_prompt_greedily_and_the_father_reverses_it(demo_run):
    result = chat_run(demo_run, PROMPT, ["child", "father", "mother"], Sampling())
    assert [a["model"] for a in result["answers"]] == ["child", "father", "mother"]
    assert all(a["answer"].strip() for a in result["answers"]), result
    assert result["answers"][1]["answer"] == "olleh"  # the demo father's skill: reverse the word
    assert result["templated"] is False  # the demo zoo's character tokenizer has no chat template


def test_a_measured_candidate_is_rebuilt_with_the_recipe_hash_the_search_recorded_and_answers(demo_run):
    measured = candidates(demo_run)
    assert measured, "the demo run measured no candidate"
    name, record = next(iter(measured.items()))
    assert candidate_recipe(demo_run, name).recipe_hash == record["recipe_hash"]
    assert name in [value for _, value in model_choices(demo_run)]
    answer = chat_run(demo_run, PROMPT, [name], Sampling())["answers"][0]
    assert answer["model"] == name and answer["label"].startswith(f"candidate {name}") and answer["answer"].strip()


def test_sampled_answers_are_reproducible_with_their_seed(demo_run):
    sampling = Sampling(sample=True, temperature=1.5, seed=3)
    first = [a["answer"] for a in chat_run(demo_run, PROMPT, ["mother"], sampling)["answers"]]
    again = [a["answer"] for a in chat_run(demo_run, PROMPT, ["mother"], sampling)["answers"]]
    assert first == again


def test_the_fathers_chat_template_wraps_the_prompt_when_his_tokenizer_has_one(tmp_path):
    from transformers import AutoTokenizer

    from darwin_core.parents.demo import DEFAULT_ZOO_DIR

    father = Path(shutil.copytree(DEFAULT_ZOO_DIR / "father", tmp_path / "father"))
    assert chat_text(AutoTokenizer.from_pretrained(father), PROMPT) == (PROMPT, False)
    settings = json.loads((father / "tokenizer_config.json").read_text())
    settings["chat_template"] = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    (father / "tokenizer_config.json").write_text(json.dumps(settings))
    assert chat_text(AutoTokenizer.from_pretrained(father), PROMPT) == (f"<user>{PROMPT}<assistant>", True)


@pytest.mark.parametrize("settings, sentence", [
    ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1 to 1024"),
    ({"sample": True, "temperature": 0}, "The temperature must be above 0"),
    ({"beam": 4}, "Unknown sampling setting 'beam'"),
])
def test_bad_sampling_settings_are_one_sentence(settings, sentence):
    with pytest.raises(DarwinError, match=re.escape(sentence)):
        Sampling.from_dict(settings)


def test_a_chat_is_a_job_of_the_worker_and_the_same_prompt_is_served_from_its_stored_answers(demo_run, runs_dir):
    from darwin_core import api

    run = _copy_run(demo_run, runs_dir)
    job = api.chat(run.name, PROMPT, ["child", "father", "mother"], local_mode=True, runs_dir=runs_dir)
    state, result = _wait(lambda: (r := device_jobs.job_result(job, runs_dir))[0] in ("finished", "failed") and r,
                          "the chat job to finish")
    assert state == "finished", result
    assert [a["model"] for a in result["answers"]] == ["child", "father", "mother"]
    assert all(a["answer"].strip() for a in result["answers"])
    listed = {r["run_id"]: r for r in queue.list_runs(runs_dir)}
    assert listed[job]["kind"] == "chat"

    events = len(RunFolder(runs_dir / job).events())
    assert api.chat(run.name, PROMPT, ["child", "father", "mother"], local_mode=True, runs_dir=runs_dir) == job
    assert device_jobs.job_result(job, runs_dir) == ("finished", result)
    assert len(RunFolder(runs_dir / job).events()) == events  # not queued again
    other = api.chat(run.name, PROMPT, ["child", "father", "mother"], {"sample": True}, local_mode=True,
                     runs_dir=runs_dir)
    assert other != job


def test_a_prompt_longer_than_the_servers_quota_is_refused_before_anything_is_written(demo_run, runs_dir, monkeypatch):
    from darwin_core import api

    run = _copy_run(demo_run, runs_dir)
    monkeypatch.setenv("DARWIN_MAX_PROMPT_CHARS", "20")
    before = sorted(p.name for p in runs_dir.iterdir())
    with pytest.raises(DarwinError, match=r"^The prompt is 21 characters long; prompts are limited to 20 on this server\.$"):
        api.chat(run.name, "x" * 21, ["child", "father", "mother"], local_mode=False, runs_dir=runs_dir)
    with pytest.raises(DarwinError, match=r"has no model 'nobody'"):
        api.chat(run.name, PROMPT, ["nobody"], local_mode=True, runs_dir=runs_dir)
    with pytest.raises(DarwinError, match=r"^Type a prompt"):
        api.chat(run.name, "  ", ["child"], local_mode=True, runs_dir=runs_dir)
    assert sorted(p.name for p in runs_dir.iterdir()) == before
    api.chat(run.name, "x" * 21, ["father"], local_mode=True, runs_dir=runs_dir)  # a local user has no quota


def test_chat_on_the_command_line_prints_each_models_answer(demo_run):
    result = subprocess.run([sys.executable, "-m", "darwin_core", "chat", demo_run.name, "--prompt", PROMPT,
                             "--runs-dir", str(demo_run.parent), "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.startswith("== ")]
    assert headers == ["== child: the child ==", "== father: the father (demo:father) ==",
                       "== mother: the mother (demo:mother) =="]
    assert lines[lines.index(headers[1]) + 1] == "olleh"
    assert all(lines[lines.index(h) + 1].strip() for h in headers)


def test_chat_of_an_unknown_run_on_the_command_line_is_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-m", "darwin_core", "chat", "nope", "--prompt", PROMPT,
                             "--runs-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: There is no run 'nope'"), result.stderr


# ------------------------------------------------------------------------------------------- the browser

@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
def test_the_try_it_tab_shows_the_childs_and_both_parents_answers_side_by_side(tmp_path, monkeypatch, runs_dir):
    from darwin_core.fitness.demo_tasks import DEMO_SKILLS, SKILLS
    from tests.browser import demo_zoo_dir
    from ui.app import build_demo, launch_kwargs

    monkeypatch.delenv("SPACE_ID", raising=False)
    kwargs = {k: v for k, v in launch_kwargs().items() if k != "server_name"}
    with served(build_demo(runs_dir=runs_dir, zoo_dir=demo_zoo_dir(), local_mode=True), **kwargs) as url, \
            chromium_page(url) as page:
        page.locator("#parents-verdict").get_by_text(re.compile("Breedable|Not breedable")).first.wait_for()
        # A tiny run launched in the page (so it is the page's current run): a few items of each demo skill.
        page.get_by_role("tab", name="Evolve").click()
        cells = page.locator('#evolve-demo-tasks [role="gridcell"]')
        for row, name in enumerate(SKILLS):
            if name in DEMO_SKILLS:
                cells.nth(row * 4 + 3).dblclick()  # 4 columns: task, what it asks, weight, items
                page.keyboard.press("Control+A")
                page.keyboard.type(str(ITEMS_PER_SKILL))
                page.keyboard.press("Enter")
        for elem_id, value in (("evolve-population", "2"), ("evolve-generations", "1"), ("evolve-proxy", "4"),
                               ("evolve-topk", "1")):
            field = page.locator(f"#{elem_id} input").first
            field.fill(value)
            field.press("Tab")
        page.locator("#evolve-mri input[type=checkbox]").uncheck()
        page.click("#evolve-launch")
        header = page.locator("#evolve-header")
        header.get_by_text(re.compile(r"Run `?\d{8}-\d{6}-")).wait_for(timeout=60_000)
        header.get_by_text("finished").wait_for(timeout=300_000)

        # Try it: one prompt, the child and both parents answer side by side.
        page.get_by_role("tab", name="Try it").click()
        page.locator("#try-header").get_by_text("its child, the father and the mother").wait_for(timeout=60_000)
        page.locator("#try-prompt textarea").fill(PROMPT)
        page.click("#try-generate")
        try:
            page.locator("#try-status").get_by_text("Answered in").wait_for(timeout=300_000)
        except Exception as error:
            raise AssertionError(f"Try-it status: {page.locator('#try-status').inner_text()!r}") from error
        boxes = [page.locator(f"#try-answer-{i}") for i in range(3)]
        answers = [box.locator("textarea").input_value() for box in boxes]
        labels = [box.inner_text() for box in boxes]
        screenshot(page, "try-it")
        tops = [box.bounding_box() for box in boxes]
    assert all(answer.strip() for answer in answers), answers
    assert answers[1] == "olleh", answers  # the father's own skill
    assert "the child" in labels[0] and "the father (demo:father)" in labels[1] and "the mother (demo:mother)" in labels[2]
    assert len({round(box["y"]) for box in tops}) == 1 and tops[0]["x"] < tops[1]["x"] < tops[2]["x"], tops  # side by side
