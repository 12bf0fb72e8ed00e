"""ParentRef: how a recipe names a parent model (Hub id + revision; a local path that is never hashed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError


@dataclass(frozen=True)
class ParentRef:
    """A parent model: Hub id (or a local name) + revision; `path` is where it lies on this machine.

    `path` is cosmetic for the hash and for equality: the same model at another place on another machine is
    the same parent. It is a server path, so it never leaves the machine: `public()` drops it for what is
    published (the child's darwin-recipe.yaml, the card).
    """

    id: str
    revision: str | None = None
    path: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, value: Any) -> ParentRef:
        """Accept a ParentRef, a dict, an "id@revision" string, a local folder (Path), or a hub ModelRef."""
        if isinstance(value, ParentRef):
            return value
        if isinstance(value, os.PathLike):
            path = Path(value)
            return cls(id=path.name, path=str(path))
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
            return cls(id=str(value["id"]), revision=_opt_str(value.get("revision")), path=_opt_str(value.get("path")))
        # darwin_core.parents.hub.ModelRef: pin the resolved commit when there is one; local models are named by folder
        ident = getattr(value, "id", None)
        if ident:
            folder = getattr(value, "folder", None)
            if getattr(value, "local", False) and folder is not None:
                return cls(id=Path(folder).name, path=str(folder))
            revision = getattr(value, "commit", None) or getattr(value, "revision", None)
            return cls(id=str(ident), revision=_opt_str(revision), path=str(folder) if folder else None)
        raise DarwinError(f"Cannot use {value!r} as a parent model reference.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.revision:
            out["revision"] = self.revision
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
