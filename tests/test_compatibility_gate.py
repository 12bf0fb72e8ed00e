"""The compatibility gate: a pair no merge path breeds is refused before any download, with the page's sentence.

`python -m darwin_core evolve` (here and queued) and `merge` exit 2 on an incompatible pair (Mixtral and Phi-3:
not even their feed-forward weights line up), against the local Hub server (tests/readhub.py): the server sees
the config and the safetensors headers asked for (range requests), never a whole weight file, and no run folder
or output folder is left behind. Breedable pairs pass — same architecture, a multimodal wrapper against its
text-only sibling, and FFN-only pairs (Qwen3 and Llama: equal shapes, different attention), which are bred now.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from darwin_core.errors import DarwinError
from darwin_core.parents.compatibility import Verdict, check_breedable, check_named_pair, compatibility
from darwin_core.parents.hub import resolve_model

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300
PAIRS = {"incompatible": ("mixtral", "phi3")}


@pytest.fixture
def hub_log(read_hub):
    """(method, path, Range header) of every GET/HEAD the local Hub answers."""
    seen: list[tuple[str, str, str | None]] = []
    handler = read_hub.server.RequestHandlerClass

    class Recording(handler):
        def do_GET(self):  # noqa: N802 — do_HEAD calls this too, with self.command == "HEAD"
            seen.append((self.command, urlsplit(self.path).path, self.headers.get("Range")))
            super().do_GET()

    read_hub.server.RequestHandlerClass = Recording
    return seen


@pytest.fixture
def served(read_hub, fixture_model):
    """Every fixture of PAIRS on the local Hub as darwin-test/<arch>."""
    for arch in {arch for pair in PAIRS.values() for arch in pair}:
        read_hub.add(f"darwin-test/{arch}", fixture_model(arch))
    return read_hub


def _cli(args: list[str], read_hub, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m darwin_core ARGS` in a fresh process, online against the local Hub, with its own cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_ENDPOINT": read_hub.url, "HF_HUB_OFFLINE": "0",
           "HF_HUB_CACHE": str(tmp_path / "cli-cache"), "HF_HUB_DISABLE_XET": "1", "DARWIN_RUNS_DIR": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-m", "darwin_core", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def _page_sentence(father: str, mother: str, tmp_path: Path) -> str:
    """What the page says of these Hub parents (resolved here, from the same server)."""
    refs = [resolve_model(f"darwin-test/{arch}", local_mode=False, cache_dir=tmp_path / "page-cache")
            for arch in (father, mother)]
    result = compatibility(*refs)
    assert not result.breedable and result.refusal is not None
    return result.refusal


def _weight_downloads(log: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """GETs of a weight file that are not a header range request (bytes=0-…)."""
    return [entry for entry in log if entry[0] == "GET" and entry[1].endswith(".safetensors")
            and not (entry[2] or "").startswith("bytes=0-")]


def _assert_nothing_downloaded(log, tmp_path: Path) -> None:
    header_reads = [entry for entry in log if entry[0] == "GET" and entry[1].endswith(".safetensors")]
    assert header_reads, "the gate read the parents' safetensors headers from the Hub"
    assert _weight_downloads(log) == []
    assert list((tmp_path / "cli-cache").rglob("*.safetensors")) == []


def _no_run_folder(runs: Path) -> bool:
    return not runs.exists() or not any(path.is_dir() for path in runs.iterdir())


@pytest.mark.parametrize("verdict", sorted(PAIRS))
@pytest.mark.parametrize("queued", [False, True], ids=["foreground", "queued"])
def test_evolve_on_a_pair_no_merge_path_breeds_exits_2_with_the_pages_sentence_and_downloads_nothing(
        verdict, queued, served, hub_log, tmp_path):
    father, mother = PAIRS[verdict]
    sentence = _page_sentence(father, mother, tmp_path)
    hub_log.clear()
    config = tmp_path / "evolve.yaml"
    config.write_text(f"father: darwin-test/{father}\nmother: darwin-test/{mother}\ndevice: cpu\n")
    result = _cli(["evolve", str(config), "--runs-dir", "runs", *(["--queue"] if queued else [])], served, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: {sentence}" in result.stderr
    assert "not even the feed-forward" in sentence
    _assert_nothing_downloaded(hub_log, tmp_path)
    assert _no_run_folder(tmp_path / "runs")


@pytest.mark.parametrize("verdict", sorted(PAIRS))
def test_merge_on_a_pair_no_merge_path_breeds_exits_2_with_the_pages_sentence_and_downloads_nothing(
        verdict, served, hub_log, tmp_path):
    from darwin_core.recipe import Recipe

    father, mother = PAIRS[verdict]
    sentence = _page_sentence(father, mother, tmp_path)
    hub_log.clear()
    recipe = Recipe(father=f"darwin-test/{father}", mother=f"darwin-test/{mother}", ratios=0.5).save(tmp_path / "r.yaml")
    result = _cli(["merge", str(recipe), "--out", "child"], served, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: {sentence}" in result.stderr
    _assert_nothing_downloaded(hub_log, tmp_path)
    assert not (tmp_path / "child").exists() and not list(tmp_path.glob(".child*"))


def test_a_breedable_hub_pair_still_merges_and_the_log_sees_its_download(read_hub, hub_log, fixture_pair, tmp_path):
    """The control: the same server log does see weight downloads when the gate lets a pair through."""
    from darwin_core.recipe import Recipe

    father, mother = fixture_pair("llama")
    read_hub.add("darwin-test/father", father)
    read_hub.add("darwin-test/mother", mother)
    recipe = Recipe(father="darwin-test/father", mother="darwin-test/mother", ratios=0.5).save(tmp_path / "r.yaml")
    result = _cli(["merge", str(recipe), "--out", "child"], read_hub, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "child" / "model.safetensors").is_file()
    assert {path for _, path, _ in _weight_downloads(hub_log)} >= {"/darwin-test/father/resolve/"
                                                                   f"{read_hub.repos['darwin-test/father']['sha']}"
                                                                   "/model.safetensors"}


def test_the_demo_pair_and_same_architecture_pairs_pass_the_gate(fixture_pair):
    father, mother = check_named_pair("demo:father", "demo:mother", local_mode=True)
    assert compatibility(father, mother).verdict is Verdict.BREEDABLE
    for arch in ("llama", "qwen3_5_moe_text", "gemma4_text"):
        check_named_pair(*(str(p) for p in fixture_pair(arch)), local_mode=True)


def test_the_queue_refuses_an_incompatible_pair_before_a_run_folder_exists(fixture_model, tmp_path):
    from darwin_core.runs import queue as jobs

    config = {"father": str(fixture_model("mixtral")), "mother": str(fixture_model("phi3")), "device": "cpu"}
    for start in (lambda: jobs.submit(config, tmp_path / "runs", start_worker=False),
                  lambda: jobs.prepare_foreground(config, tmp_path / "runs", run_id="gate")):
        with pytest.raises(DarwinError, match="^These parents cannot be bred: Same hidden size .* not even the feed"):
            start()
    assert _no_run_folder(tmp_path / "runs")


def test_an_ffn_only_pair_passes_the_gate_and_says_which_weights_are_bred(fixture_model):
    father, mother = check_named_pair(str(fixture_model("qwen3")), str(fixture_model("llama")), local_mode=True)
    result = compatibility(father, mother)
    assert result.verdict is Verdict.FFN_ONLY and result.refusal is None
    assert "only the feed-forward weights" in result.reason and "attention stays the father's" in result.reason


def test_a_multimodal_checkpoint_and_its_text_only_sibling_pass_the_gate_by_canonical_name(fixture_model):
    """Their language tensors match by canonical name; the pairing maps them, the child in the father's naming."""
    text = resolve_model(str(fixture_model("llama")), local_mode=True)
    wrapped = {("lm_head.weight" if n == "lm_head.weight" else "model.language_model." + n.removeprefix("model.")): v
               for n, v in text.tensors.items()}
    multimodal = dataclasses.replace(text, id="org/multimodal", tensors=wrapped)
    check_breedable(multimodal, text)
    result = compatibility(multimodal, text)
    assert result.verdict is Verdict.WRAPPER and result.reason.startswith("Same architecture (llama) and all ")
    assert "multimodal wrapper prefix" in result.reason and result.reason.endswith("vision and audio towers.")
