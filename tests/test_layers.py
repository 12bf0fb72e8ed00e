"""The house reads in flow order: a module imports only from its own layer or the layers below it.

Every import counts, also those inside functions (a lazy import is still a dependency). A module's layer is
the longest entry of LAYERS that prefixes its dotted name, so `darwin_core.merge.methods` (the kernels a
recipe names) sits below `darwin_core.recipe`, and the rest of `darwin_core.merge` (writing a recipe's child
to disk, the mergekit export) above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bottom to top. Entries on one line share a layer.
LAYERS: list[tuple[str, ...]] = [
    ("darwin_core.errors",),
    ("darwin_core.io",),
    ("darwin_core.parents",),
    ("darwin_core.mri",),
    ("darwin_core.merge.methods",),
    ("darwin_core.recipe",),
    ("darwin_core.genome",),
    ("darwin_core.merge",),
    ("darwin_core.fitness",),
    ("darwin_core.evolution",),
    ("darwin_core.health",),
    ("darwin_core.publishing",),
    ("darwin_core.chat",),
    ("darwin_core.runs",),
    ("darwin_core.zoo", "darwin_core.testing"),
    ("darwin_core.api",),
    ("darwin_core.cli", "darwin_core.__main__", "darwin_core"),
    ("ui",),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest entry that is `module` or a package above it."""
    best, best_length = None, -1
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_length:
                best, best_length = index, len(entry)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py")
    return best


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, module) of every darwin_core/ui module `path` imports, resolving `from pkg import submodule`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            for alias in node.names:  # `from darwin_core.mri import scan` names the module darwin_core.mri.scan
                candidate = node.module + "." + alias.name
                if (root / Path(*candidate.split("."))).with_suffix(".py").is_file() or (root / Path(*candidate.split("."))).is_dir():
                    found.append((node.lineno, candidate))
    return [(line, name) for line, name in found if name.split(".")[0] in ("darwin_core", "ui")]


def layer_violations(root: Path = REPO) -> list[str]:
    violations = []
    for path in sorted([*root.glob("darwin_core/**/*.py"), *root.glob("ui/**/*.py")]):
        source = module_name(path, root)
        for line, target in imported_modules(path, root):
            if layer_of(target) > layer_of(source):
                violations.append(f"{path.relative_to(root)}:{line} ({source}, layer {layer_of(source)}) imports "
                                  f"{target} (layer {layer_of(target)})")
    return violations


def test_no_module_imports_from_a_layer_above_its_own():
    violations = layer_violations()
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_the_layer_check_catches_a_deliberate_violation(tmp_path):
    """A copy of the tree with one upward import (the tensor reader importing the evolution) must fail."""
    for package in ("darwin_core", "ui"):
        for path in (REPO / package).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    reader = tmp_path / "darwin_core" / "io" / "tensors.py"
    reader.write_text(reader.read_text() + "\n\ndef _late():\n    from darwin_core.evolution import pipeline  # noqa\n")
    violations = layer_violations(tmp_path)
    assert violations and all("darwin_core/io/tensors.py" in v and "imports darwin_core.evolution" in v for v in violations)


@pytest.mark.parametrize("package", ["darwin_core", "ui"])
def test_every_module_has_a_layer(package):
    for path in (REPO / package).rglob("*.py"):
        layer_of(module_name(path))


def test_no_tab_imports_another_and_only_the_app_imports_tabs():
    """Tabs share what they show through ui/views.py, ui/common.py and ui/session.py, never through each other."""
    offenders = []
    for path in sorted((REPO / "ui").rglob("*.py")):
        source = module_name(path)
        for line, target in imported_modules(path):
            if target.startswith("ui.tabs.") and target != source and source != "ui.app":
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_the_ui_reaches_darwin_core_only_through_the_api():
    """`ui/` lays out components and calls `darwin_core.api`; every rule lives behind it."""
    offenders = []
    for path in sorted((REPO / "ui").rglob("*.py")):
        for line, target in imported_modules(path):
            if target.startswith("darwin_core") and target not in ("darwin_core", "darwin_core.api"):
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_every_name_the_api_re_exports_exists():
    import importlib

    from darwin_core import api

    missing = [name for name, module in api.REEXPORTS.items() if not hasattr(importlib.import_module(module), name)]
    assert not missing


def test_no_module_over_500_lines_and_no_function_over_80():
    """The house's size rule (STYLE.md): a module does one job, a function fits on a screen."""
    too_big = []
    for path in sorted([*(REPO / "darwin_core").rglob("*.py"), *(REPO / "ui").rglob("*.py")]):
        text = path.read_text()
        if len(text.splitlines()) > 500:
            too_big.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                too_big.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, "\n".join(too_big)
