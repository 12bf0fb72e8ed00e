"""The Space skeleton: the page builds, README and CI agree, the Parents endpoint answers over HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.browser import REPO_ROOT, app_process, demo_zoo_dir, served  # noqa: F401  (sets GRADIO_ANALYTICS_ENABLED)

README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"
INSTALL_COMMAND = "pip install -r requirements.txt && python app.py"
TEST_COMMAND = "pip install -r requirements.txt -r requirements-test.txt && python -m pytest"


@pytest.fixture(scope="module")
def zoo() -> Path:
    return demo_zoo_dir()


def _front_matter() -> tuple[dict, str]:
    text = README.read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "README.md must start with the Space front matter between --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def _tab_labels(demo) -> list[str]:
    import gradio as gr

    return [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]


def test_readme_front_matter_configures_the_space():
    meta, _ = _front_matter()
    assert meta["title"] == "Darwin"
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == "6.31.0"
    assert meta["python_version"] == "3.12"
    assert meta["app_file"] == "app.py"
    assert meta["hf_oauth"] is True
    assert meta["hf_oauth_scopes"] == ["contribute-repos", "jobs"]  # pushes, and breedings run as Hugging Face Jobs
    assert meta["license"] == "apache-2.0"
    assert meta["suggested_hardware"] and meta["tags"]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub rejects longer short descriptions


def test_readme_opens_with_the_install_and_test_commands():
    _, body = _front_matter()
    commands = re.findall(r"```bash\n(.*?)\n```", body, re.S)
    assert commands[:2] == [INSTALL_COMMAND, TEST_COMMAND]
    # nothing but the title and two one-line intros comes before them
    assert body.index(TEST_COMMAND) < 400


def test_ci_runs_exactly_the_readme_test_command():
    script = CI_RUN.read_text()
    assert CI_RUN.stat().st_mode & 0o111, ".ci/run must be executable"
    assert script.splitlines()[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in script
    assert f"TEST_COMMAND='{TEST_COMMAND}'" in script
    assert 'bash -c "$TEST_COMMAND"' in script
    assert re.search(r"^" + re.escape(TEST_COMMAND) + r"$", README.read_text(), re.M)
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)


def test_build_demo_has_one_tab_per_step_and_no_sign_in_off_space(zoo, monkeypatch):
    import gradio as gr

    from ui.app import build_demo

    monkeypatch.delenv("SPACE_ID", raising=False)
    demo = build_demo(zoo_dir=zoo, local_mode=True)
    assert _tab_labels(demo) == ["Parents", "MRI", "Evolve", "Health", "Try it", "Publish", "Runs"]
    assert not any(isinstance(b, gr.LoginButton) for b in demo.blocks.values())
    assert not demo.expects_oauth  # off a Space, OAuth would make Gradio call the Hub at launch


def test_on_a_space_there_is_a_sign_in_button_and_handlers_take_the_visitors_token(zoo, monkeypatch):
    import gradio as gr

    from ui.app import build_demo

    # What the Spaces runtime sets for an app with `hf_oauth: true` (Gradio reads the OAuth ones at import).
    monkeypatch.setenv("SPACE_ID", "someone/darwin")
    monkeypatch.setenv("SYSTEM", "spaces")
    for name, value in {"OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": "secret", "OAUTH_SCOPES": "openid profile",
                        "OPENID_PROVIDER_URL": "https://huggingface.co"}.items():
        monkeypatch.setattr(gr.oauth, name, value)
    demo = build_demo(zoo_dir=zoo)
    assert any(isinstance(b, gr.LoginButton) for b in demo.blocks.values())
    assert demo.expects_oauth


def test_every_event_has_an_api_name_or_is_private(zoo, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.app import build_demo

    demo = build_demo(zoo_dir=zoo, local_mode=True)
    events = [fn for fn in demo.fns.values() if fn.fn is not None]
    assert events
    unnamed = [fn.name for fn in events if fn.api_visibility != "private" and not fn.api_name]
    assert not unnamed


def test_parents_info_endpoint_returns_the_demo_parents_architecture(zoo, monkeypatch):
    from gradio_client import Client

    from darwin_core.zoo.build import load_zoo_manifest
    from ui.app import build_demo

    monkeypatch.delenv("SPACE_ID", raising=False)
    manifest = load_zoo_manifest(zoo)
    with served(build_demo(zoo_dir=zoo, local_mode=True)) as url:
        client = Client(url, verbose=False)
        facts, compat, verdict, error = client.predict("demo:father", "", "demo:mother", "", api_name="/parents_info")
    assert error == ""
    rows = {row[0]: row[1:] for row in facts["data"]}
    for cell, member in zip(rows["Architecture"], ("father", "mother")):
        assert manifest["models"][member]["architecture"] in cell
    assert rows["Model"] == ["demo father", "demo mother"]
    for skill in manifest["skills"]:
        expected = [f"{100 * manifest['models'][m]['heldout_accuracy'][skill]:.1f}%" for m in ("father", "mother")]
        assert rows[f"Held-out accuracy: {skill}"] == expected
    assert compat["data"] and verdict


def test_a_parent_that_does_not_exist_gets_one_sentence_not_a_traceback(zoo, tmp_path):
    from ui.tabs.parents import inspect_parents

    facts, compat, verdict, error = inspect_parents(
        "demo:father", "", None, str(tmp_path / "no-such-model"), local_mode=True, token=None, zoo_dir=zoo
    )
    assert error.startswith("**⚠") and "Traceback" not in error and "\n" not in error.strip()
    assert facts.empty and compat.empty and verdict == ""


def test_on_a_public_space_demo_parents_load_but_typed_local_folders_are_refused(zoo):
    from darwin_core.parents.hub import LOCAL_REFUSED
    from ui.tabs.parents import inspect_parents

    facts, _, verdict, error = inspect_parents("demo:father", "", "demo:mother", "", local_mode=False, token=None, zoo_dir=zoo)
    assert error == "" and list(facts.iloc[0, 1:]) == ["demo father", "demo mother"] and verdict.startswith("**Breedable")
    *_, error = inspect_parents("demo:father", "", "demo:mother", str(zoo / "mother"), local_mode=False, token=None, zoo_dir=zoo)
    assert LOCAL_REFUSED in error


def test_neither_pick_nor_typed_parent_asks_for_one(zoo):
    from ui.tabs.parents import inspect_parents

    *_, error = inspect_parents("demo:father", "", None, "  ", local_mode=True, token=None, zoo_dir=zoo)
    assert "mother" in error and "Traceback" not in error


def test_app_py_serves_the_page(tmp_path):
    with app_process(tmp_path / "app.log", env={"DARWIN_RUNS_DIR": str(tmp_path / "runs")}) as url:
        with urllib.request.urlopen(url + "config", timeout=30) as response:
            config = json.load(response)
    assert config["title"] == "Darwin"
