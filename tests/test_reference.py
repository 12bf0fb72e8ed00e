"""docs/reference.md is the reference the code generates: every setting, recipe field and run-folder file
with its meaning, and the file equal to what `python scripts/reference.py` writes."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("darwin_reference", ROOT / "scripts" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_reference_is_what_the_code_generates() -> None:
    written = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert written == _generator().reference_markdown(), "run `python scripts/reference.py` and commit docs/reference.md"


def test_every_config_task_and_recipe_field_has_a_meaning() -> None:
    from darwin_core.evolution.config import EvolutionConfig, TaskSpec
    from darwin_core.recipe.recipe import RECIPE_FIELD_DOCS, Recipe

    reference = _generator()
    assert reference.missing_docs(EvolutionConfig) == []
    assert reference.missing_docs(TaskSpec) == []
    assert reference.missing_docs(Recipe, RECIPE_FIELD_DOCS) == []
    assert set(RECIPE_FIELD_DOCS) == {f.name for f in dataclasses.fields(Recipe)}, "a doc for a field that is gone"


def test_every_run_folder_file_has_a_meaning() -> None:
    entries = dict(_generator().run_folder_entries())
    for name in _generator().run_folder_files():
        assert entries.get(name), f"{name} is a run-folder file with no meaning in darwin_core/io/runfolder.py"


def test_a_setting_added_without_a_meaning_fails_the_check() -> None:
    from darwin_core.evolution.config import EvolutionConfig

    grown = dataclasses.make_dataclass("Grown", [("colour", str, dataclasses.field(default="red"))], bases=(EvolutionConfig,),
                                       frozen=True)
    assert _generator().missing_docs(grown) == ["colour"]


def test_the_readme_links_the_reference() -> None:
    assert "docs/reference.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("text", ["frozen_layers: 0-3", "frozen_layers: '0-3, 7'", "frozen_layers: [0, 1, 2, 3]"])
def test_frozen_layers_are_read_as_the_reference_says(text: str) -> None:
    from darwin_core.evolution.config import EvolutionConfig

    assert EvolutionConfig.from_yaml(f"father: a\nmother: b\n{text}\n").frozen_layers[:4] == (0, 1, 2, 3)


def test_a_generative_task_takes_its_own_max_new_tokens(tmp_path: Path) -> None:
    from darwin_core.evolution.config import EvolutionConfig
    from darwin_core.evolution.tasks import load_tasks

    items = tmp_path / "gen.jsonl"
    items.write_text("".join(f'{{"prompt": "q{k}", "answer": "a{k}"}}\n' for k in range(4)), encoding="utf-8")
    config = EvolutionConfig.from_yaml(f"father: a\nmother: b\ntasks: [{{file: {items}, max_new_tokens: 12}}, "
                                       "{demo: reverse, max_new_tokens: 9}]\n")
    tasks, _ = load_tasks(config)
    assert [t.max_new_tokens for t in tasks] == [12, 9]
    assert EvolutionConfig.from_yaml(config.to_yaml()) == config
