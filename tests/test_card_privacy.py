"""A card is read by anyone and published to the Hub: viewing it changes nothing, and it carries no server path.

Two real (tiny) finished runs serve the module, bred with `jobs.execute` on the fixture parents: one whose
parents are local folders (local mode), one whose parents come from a local Hugging Face cache (offline, named
by Hub id). Each test works on its own copy of a run folder, so one test's card never hides another's writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from darwin_core.io.runfolder import CHILD

REPO_IDS = {"father": "darwin-test/privacy-father", "mother": "darwin-test/privacy-mother"}
TASK_FILE = "privacy-choice.jsonl"


def _write_choice_task(path: Path, n: int = 16) -> Path:
    """A small multiple-choice task (log-likelihood scoring) over the fixture tokenizer's alphabet."""
    words = ["abcd", "bcda", "cdab", "dabc", "abdc", "badc", "cadb", "dcba"]
    with open(path, "w", encoding="utf-8") as handle:
        for k in range(n):
            w = words[k % len(words)]
            handle.write(json.dumps({"id": f"q{k}", "prompt": f"{w} =", "choices": [w, w[::-1]], "answer": k % 2}) + "\n")
    return path


def _finish_run(runs_dir: Path, run_id: str, father: str, mother: str, task: Path) -> Path:
    """A finished run folder: a one-generation search with the MRI scan (so the card has both pictures)."""
    from darwin_core.runs import queue as jobs
    from darwin_core.evolution.pipeline import EvolutionConfig

    config = EvolutionConfig(father=father, mother=mother, tasks=({"file": str(task), "name": "mc"},), genome="darwin-v6",
                             method="linear", population=2, generations=1, proxy_items=4, topk_full=1, seed=3,
                             device="cpu", mri="auto", batch_size=8)
    folder = jobs.prepare_foreground(config, runs_dir, run_id=run_id)
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    return folder.path


@pytest.fixture(scope="module")
def offline_cache(tmp_path_factory, fixture_pair):
    """Both fixture parents in a local Hub cache, read offline (HF_HUB_CACHE / HF_HUB_OFFLINE for the module)."""
    from huggingface_hub import constants

    from darwin_core.testing.fixtures import place_in_hf_cache

    father, mother = fixture_pair("llama", related=True)
    cache = tmp_path_factory.mktemp("hf-cache")
    snapshots = {role: place_in_hf_cache(folder, REPO_IDS[role], cache) for role, folder in (("father", father), ("mother", mother))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(cache))
        mp.delenv("HF_TOKEN", raising=False)
        yield cache, snapshots


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, fixture_pair, offline_cache, one_thread) -> Path:
    """A finished run whose parents are local folders, named by their absolute paths in the config."""
    father, mother = fixture_pair("llama", related=True)
    scratch = tmp_path_factory.mktemp("local-run")
    return _finish_run(scratch / "runs", "local", str(father), str(mother), _write_choice_task(scratch / TASK_FILE))


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory, offline_cache, one_thread) -> Path:
    """A finished run whose parents are Hub ids resolved from the local cache."""
    scratch = tmp_path_factory.mktemp("cached-run")
    return _finish_run(scratch / "runs", "cached", REPO_IDS["father"], REPO_IDS["mother"], _write_choice_task(scratch / TASK_FILE))


def _copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished run folder (same run id), in a runs folder of its own."""
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target, symlinks=True)
    return target


def _snapshot(folder: Path) -> dict[str, str | None]:
    """Every entry under the folder: sha256 of each file's bytes, None for a directory."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _server_paths(*folders: Path) -> list[str]:
    """What must never reach a visitor: the machine's temp and home folders, the repo, and the given folders."""
    paths = {"/tmp", str(Path.home()), str(Path(__file__).resolve().parent.parent), "models--", "/snapshots/"}
    paths.update(str(f) for f in folders)
    paths.update(str(f.resolve()) for f in folders)
    return sorted(paths)


def _leaks(text: str, paths: list[str]) -> list[str]:
    return [p for p in paths if p in text]


# ------------------------------------------------------------------------------------------- viewing


def test_previewing_a_finished_runs_card_leaves_its_run_folder_byte_for_byte_unchanged(local_run, tmp_path):
    from ui.tabs.publish import _preview, card_preview

    run = _copy(local_run, tmp_path)
    before = _snapshot(run)
    state = {"run_id": run.name}
    header, _, card = card_preview(state, "tester/kid", runs_dir=run.parent, zoo_dir=None)
    preview = _preview(card, state, run.parent)
    assert run.name in header
    assert _snapshot(run) == before
    # the preview still shows both pictures, inline; the card itself names the files that go beside the README
    assert preview.count("](data:image/png;base64,") == 2 and "](darwin-fitness.png)" not in preview
    assert "](darwin-fitness.png)" in card and "](darwin-mri-advantage.png)" in card


def test_the_owners_written_card_puts_its_pictures_beside_the_readme(local_run, tmp_path):
    from darwin_core.publishing import cardgen

    run = _copy(local_run, tmp_path)
    text, _ = cardgen.card_text(run)
    readme = cardgen.write_card(run, text)
    assert readme == run / CHILD / "README.md"
    for name in re.findall(r"\]\((darwin-[\w-]+\.png)\)", readme.read_text(encoding="utf-8")):
        assert (run / CHILD / name).read_bytes().startswith(b"\x89PNG"), name


# ------------------------------------------------------------------------------------------- no server path


@pytest.mark.parametrize("which", ["local_run", "cached_run"])
def test_the_card_the_childs_recipe_and_readme_carry_no_server_path(which, request, offline_cache, fixture_pair, tmp_path):
    from darwin_core.publishing import cardgen

    run = _copy(request.getfixturevalue(which), tmp_path)
    father, mother = fixture_pair("llama", related=True)
    paths = _server_paths(run.parent, run.parent.parent, offline_cache[0], father, mother, father.parent, tmp_path)
    text, _ = cardgen.card_text(run, repo_id="tester/kid")
    assert _leaks(text, paths) == []
    cardgen.write_card(run, text)
    for name in ("README.md", "darwin-recipe.yaml"):
        assert _leaks((run / CHILD / name).read_text(encoding="utf-8"), paths) == [], name
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert _leaks(json.dumps({k: report[k] for k in ("father", "mother")}), paths) == []


def test_the_reproduce_command_pins_hub_parents_by_commit_and_runs_with_the_task_file_by_name(cached_run, offline_cache):
    import yaml

    from darwin_core.publishing import cardgen
    from darwin_core.parents import hub
    from darwin_core.evolution.pipeline import EvolutionConfig

    _, snapshots = offline_cache
    text, _ = cardgen.card_text(cached_run)
    reproduce = text.split("## Reproduce", 1)[1]
    heredoc = re.search(r"<<'EOF'\n(.*?)\nEOF\n", reproduce, re.S)
    assert heredoc is not None, reproduce
    config = EvolutionConfig.from_yaml(heredoc.group(1))
    for role in ("father", "mother"):
        pinned = f"{REPO_IDS[role]}@{snapshots[role].name}"
        assert getattr(config, role) == pinned
        assert hub.resolve_model(pinned, local_mode=False).folder == snapshots[role]  # a reader can fetch it
    assert [t.ref for t in config.tasks] == [TASK_FILE]
    saved = yaml.safe_load((cached_run / "config.yaml").read_text(encoding="utf-8"))
    assert {k: v for k, v in config.to_dict().items() if k not in ("father", "mother", "tasks", "mri")} == \
        {k: v for k, v in EvolutionConfig.from_dict(saved).to_dict().items() if k not in ("father", "mother", "tasks", "mri")}


def test_the_published_recipe_keeps_the_runs_hash_and_remerges_the_same_child_from_the_hub_cache(cached_run, tmp_path):
    from darwin_core.merge.disk import merge_to_disk
    from darwin_core.recipe import Recipe
    from darwin_core.io.tensors import sha256_of_files

    run = _copy(cached_run, tmp_path)
    published = Recipe.load(run / CHILD)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert published.recipe_hash == report["best"]["recipe_hash"] == Recipe.load(run / "best-recipe.yaml").recipe_hash
    assert published.father.path is None and published.mother.path is None
    again = merge_to_disk(published, tmp_path / "again")
    weights = lambda digests: {k: v for k, v in digests.items() if k.endswith(".safetensors")}  # noqa: E731
    assert weights(sha256_of_files(again)) == weights(sha256_of_files(run / CHILD)) != {}


def test_a_parent_is_named_by_scheme_or_folder_name_never_by_its_path(local_run, offline_cache):
    from darwin_core.parents.names import parent_label

    _, snapshots = offline_cache
    assert parent_label(str(local_run / CHILD)) == "run:local"  # an earlier run's child, as `run:` names it
    assert parent_label(str(snapshots["father"])) == REPO_IDS["father"]  # a cache snapshot typed as a folder
    assert parent_label("/srv/models/gone-model") == "gone-model"  # a folder since removed: its name only
    assert parent_label("org/name@main") == "org/name@main" and parent_label("demo:father") == "demo:father"
