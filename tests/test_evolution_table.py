"""scripts/evolution_table.py: one uniform grid (the library's), the rivals measured with their shipped config,
and the genesis section another script writes is kept when the document is regenerated."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from darwin_core.evolution.report import UNIFORM_GRID
from darwin_core.parents.demo import DEFAULT_RIVALS_DIR
from darwin_core.zoo.rivals import BREED_CONFIG

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "evolution_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("evolution_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_table_uses_the_librarys_grid_and_the_rivals_shipped_config():
    table = load_script()
    assert not hasattr(table, "GRID") and not hasattr(table, "uniform_grid") and table.UNIFORM_GRID is UNIFORM_GRID
    rivals = next(f for f in table.FAMILIES if f.name == "rivals")
    assert rivals.shipped == DEFAULT_RIVALS_DIR / BREED_CONFIG
    config = table.family_config(rivals, seed=0)
    assert (config.genome, config.method, config.mri, config.device) == ("per-layer", "linear", "auto", "cpu")
    assert config.father == str(rivals.father) and [t.ref for t in config.tasks] == ["double", "shift"]
    changed = {key for search in rivals.searches for key in search.changes}
    assert changed == {"genome", "method", "start", "selection"}  # the A/B rows change one setting each


def test_the_genesis_section_is_kept(tmp_path):
    table = load_script()
    doc = tmp_path / "evolution.md"
    assert table.genesis_section(doc) is None
    section = "<!-- genesis:begin -->\n## Genesis\n\n| a | b |\n<!-- genesis:end -->"
    doc.write_text("# old\n\nold numbers\n\n" + section + "\n\ntrailing\n")
    assert table.genesis_section(doc) == section
