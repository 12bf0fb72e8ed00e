"""The embedded demo family as parents: where the zoo lives, its manifest and its member folders.

The `demo:` scheme of a parent name resolves here; the builder that writes the zoo is `darwin_core.zoo`.
"""

from __future__ import annotations

import json
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import REPO_ROOT

DEFAULT_ZOO_DIR = REPO_ROOT / "assets" / "zoo"
MEMBERS = ("base", "father", "mother")
MANIFEST = "zoo.json"


def load_zoo_manifest(zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> dict:
    """zoo.json of a built zoo."""
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        raise DarwinError(f"No demo zoo at {Path(zoo_dir)}; build it with `python -m darwin_core zoo build`.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DarwinError(f"The demo zoo manifest {path} is not valid JSON ({error.msg}).") from None


def zoo_paths(zoo_dir: Path | str = DEFAULT_ZOO_DIR) -> dict[str, Path]:
    """{"base"|"father"|"mother": model folder}, checked to exist."""
    root = Path(zoo_dir)
    paths = {m: root / m for m in MEMBERS}
    missing = [m for m, p in paths.items() if not (p / "model.safetensors").is_file()]
    if missing:
        raise DarwinError(f"The demo zoo at {root} lacks {', '.join(missing)}; build it with `python -m darwin_core zoo build`.")
    return paths
