"""The embedded demo families as parents: where they live, their manifests and their member folders.

Two families ship. The zoo (`assets/zoo`: `demo:base`, `demo:father`, `demo:mother`) is the easy case, where a
50/50 blend already keeps both parents' skills; the rivals (`assets/rivals`: `demo:rivals_father`,
`demo:rivals_mother`, fine-tuned from the zoo's base) interfere, so a uniform blend loses both skills. The
rivals folder sits beside the zoo's (a zoo folder elsewhere, as in tests, has its rivals beside it or none).

The `demo:` scheme of a parent name resolves here; the builders that write the families are `darwin_core.zoo`.
"""

from __future__ import annotations

import json
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import REPO_ROOT

DEFAULT_ZOO_DIR = REPO_ROOT / "assets" / "zoo"
DEFAULT_RIVALS_DIR = REPO_ROOT / "assets" / "rivals"
MEMBERS = ("base", "father", "mother")
MANIFEST = "zoo.json"
RIVALS_FOLDER = "rivals"
RIVALS_PREFIX = "rivals_"  # demo names: demo:rivals_father (a demo name is a Python identifier)
RIVALS_SHIPPED = ("father", "mother")  # the rivals' base is the zoo's base, not shipped twice


def read_manifest(folder: Path | str) -> dict:
    """The zoo.json of one built family, as written by its build."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DarwinError(f"No demo zoo at {Path(folder)}; build it with `python -m darwin_core zoo build`.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DarwinError(f"The demo zoo manifest {path} is not valid JSON ({error.msg}).") from None


def rivals_dir(zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> Path:
    """Where the rivals family of a zoo folder lives: beside it."""
    return Path(zoo_dir).parent / RIVALS_FOLDER


def _rivals_manifest(zoo_dir: Path | str) -> dict | None:
    """The rivals' zoo.json when the family is built beside this zoo, else None (it is optional)."""
    folder = rivals_dir(zoo_dir)
    if not (folder / MANIFEST).is_file():
        return None
    return read_manifest(folder)


def load_zoo_manifest(zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> dict:
    """The zoo's zoo.json, with the rivals' shipped members added to `models` under their demo names
    (`rivals_father`: its own skills and held-out accuracies) and `families` naming who belongs where.

    The page lists the demo parents from this; `skills` stays the zoo's (a rivals member names its own).
    `read_manifest` gives one family's file as built."""
    manifest = read_manifest(zoo_dir)
    families = {"zoo": list(MEMBERS)}
    rivals = _rivals_manifest(zoo_dir)
    if rivals is not None:
        names = [RIVALS_PREFIX + member for member in RIVALS_SHIPPED]
        for member, name in zip(RIVALS_SHIPPED, names):
            manifest["models"][name] = {**rivals["models"][member], "family": "rivals"}
        families["rivals"] = names
    manifest["families"] = families
    return manifest


def zoo_paths(zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> dict[str, Path]:
    """{demo name: model folder}: base, father, mother (checked to exist), then the rivals' shipped members
    when that family is built beside the zoo (checked too)."""
    root = Path(zoo_dir)
    paths = {m: root / m for m in MEMBERS}
    missing = [m for m, p in paths.items() if not (p / "model.safetensors").is_file()]
    if missing:
        raise DarwinError(f"The demo zoo at {root} lacks {', '.join(missing)}; build it with `python -m darwin_core zoo build`.")
    if _rivals_manifest(root) is not None:
        rivals = {RIVALS_PREFIX + m: rivals_dir(root) / m for m in RIVALS_SHIPPED}
        missing = [m for m, p in rivals.items() if not (p / "model.safetensors").is_file()]
        if missing:
            raise DarwinError(f"The rivals family at {rivals_dir(root)} lacks {', '.join(missing)}; build it with "
                              "`python -m darwin_core zoo build --family rivals`.")
        paths.update(rivals)
    return paths


def demo_name_of(folder: Path | str, zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> str | None:
    """The demo name (`rivals_father`) of a member's folder, None for any other folder: a folder of the rivals is
    not a direct child of the zoo's, so its name alone (`father`) would name the wrong parent."""
    try:
        target = Path(folder).resolve()
        members = zoo_paths(zoo_dir)
    except (OSError, DarwinError):
        return None
    return next((name for name, path in members.items() if path.resolve() == target), None)
