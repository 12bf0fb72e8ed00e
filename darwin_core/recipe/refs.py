"""ParentRef: how a recipe names a parent model — by what it is, never by where it lies.

A Hub parent is its id and commit; a local folder is the sha256 of its weight files (`weights_sha256`), so
renaming or moving the folder never changes a recipe's hash, hence never the DARE masks it seeds or a child's
bytes. `demo:` and `run:` names are stable names of this machine's parents and are hashed as names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.io.hashes import sha256_file
from darwin_core.io.weight_files import PICKLE_INDEX, SAFETENSORS_INDEX, pickle_files

STABLE_PREFIXES = ("demo:", "run:")


def weight_files(folder: Path) -> list[str]:
    """The weight files of a model folder (safetensors and their index, else pickle), sorted by name."""
    names = sorted(p.name for p in folder.glob("*.safetensors"))
    names += [SAFETENSORS_INDEX] if (folder / SAFETENSORS_INDEX).is_file() else []
    if not names:
        names = pickle_files(folder) + ([PICKLE_INDEX] if (folder / PICKLE_INDEX).is_file() else [])
    return sorted(names)


def weights_sha256(folder: str | os.PathLike[str]) -> str:
    """sha256 over the weight files of a folder ("name\0sha256 of the file" per line, sorted): what it holds.

    Cached by each file's size and modification time, so a run's many recipes hash a 60 GB parent once.
    """
    folder = Path(folder).resolve()
    names = weight_files(folder)
    if not names:
        raise DarwinError(f"The folder {folder} has no weight files (safetensors or pytorch_model*.bin).")
    stats = tuple((name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns) for name in names)
    return _digest(str(folder), stats)


@lru_cache(maxsize=256)
def _digest(folder: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    lines = "".join(f"{name}\0{sha256_file(Path(folder) / name)}\n" for name, _, _ in stats)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ParentRef:
    """A parent model: Hub id (or a local name) + revision; `path` is where it lies on this machine; `sha256`
    the digest of a local folder's weight files (`weights_sha256`), which names it in the hash (`identity`).

    `path` is cosmetic for the hash and for equality: the same model at another place on another machine is
    the same parent. It is a server path, so it never leaves the machine: `public()` drops it for what is
    published (the child's darwin-recipe.yaml, the card). A local folder's `id` is its name, for people only.
    """

    id: str
    revision: str | None = None
    path: str | None = field(default=None, compare=False)
    sha256: str | None = None

    @classmethod
    def local(cls, folder: str | os.PathLike[str]) -> ParentRef:
        """A folder on this machine, named in the hash by the sha256 of its weight files."""
        path = Path(folder)
        return cls(id=path.name, path=str(path), sha256=weights_sha256(path))

    def identity(self) -> dict[str, Any]:
        """What names this parent in the recipe hash: its content digest when it is a local folder, else its
        id and revision (a Hub commit; `demo:`/`run:` names as they are)."""
        if self.sha256 and not self.id.startswith(STABLE_PREFIXES):
            return {"sha256": self.sha256}
        return {"id": self.id, "revision": self.revision}

    def check_content(self) -> None:
        """Refuse a folder that no longer holds the weights this reference was made from."""
        if self.sha256 and self.path and weights_sha256(self.path) != self.sha256:
            raise DarwinError(f"The folder {self.path} holds other weights than the recipe names (sha256 "
                              f"{self.sha256[:12]}…), so its child would not be the recipe's.")

    @classmethod
    def of(cls, value: Any) -> ParentRef:
        """Accept a ParentRef, a dict, an "id@revision" string, a local folder (Path), or a hub ModelRef."""
        if isinstance(value, ParentRef):
            return value
        if isinstance(value, os.PathLike):
            return cls.local(value)
        if isinstance(value, str):
            if not value.strip():
                raise DarwinError("A parent model reference is empty.")
            if os.path.isdir(value):
                return cls.of(Path(value))
            ident, _, revision = value.partition("@")
            return cls(id=ident, revision=revision or None)
        if isinstance(value, Mapping):
            if not value.get("id"):
                raise DarwinError("A parent in the recipe has no id.")
            return cls(id=str(value["id"]), revision=_opt_str(value.get("revision")), path=_opt_str(value.get("path")),
                       sha256=_opt_str(value.get("sha256")))
        # darwin_core.parents.hub.ModelRef: pin the resolved commit when there is one; local models are named by folder
        ident = getattr(value, "id", None)
        if ident:
            folder = getattr(value, "folder", None)
            if getattr(value, "local", False) and folder is not None:
                return cls.local(folder)
            revision = getattr(value, "commit", None) or getattr(value, "revision", None)
            return cls(id=str(ident), revision=_opt_str(revision), path=str(folder) if folder else None)
        raise DarwinError(f"Cannot use {value!r} as a parent model reference.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.revision:
            out["revision"] = self.revision
        if self.sha256:
            out["sha256"] = self.sha256
        if self.path:
            out["path"] = self.path
        return out

    def label(self) -> str:
        return f"{self.id}@{self.revision}" if self.revision else self.id

    def public(self) -> ParentRef:
        """This parent as a reader elsewhere sees it: id and revision only, no path on this machine."""
        return replace(self, path=None)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
