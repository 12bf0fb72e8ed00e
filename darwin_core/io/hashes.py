"""File digests: what proves two children bit-identical and what zoo.json records."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of one file, read in chunks (model shards do not fit in memory twice)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_of_files(folder: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 hex digest of every file under ``folder``, keyed by POSIX relative path, sorted.

    Used to prove bit-identical children (same recipe, same parents → same digests) and for zoo.json.
    """
    folder = Path(folder)
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digests[path.relative_to(folder).as_posix()] = sha256_file(path)
    return digests
