"""Whole-or-nothing writes: the one way Darwin puts a file or a folder at its final path.

A reader (the UI polling a run, a worker resuming it, ``from_pretrained`` loading a child) must see either
the old content or the new, never half of either, and a power cut must not leave a renamed file whose data
never reached the disk. So every write goes to a temporary name beside the target, is fsynced, is moved into
place with one ``os.replace``, and the folder holding it is fsynced so that the rename itself is durable.

Folders get the same treatment: the new folder is built under a hidden name (``.<name>.partial-<pid>``), its
files are fsynced, and it replaces the target in two renames (the old folder first steps aside as
``.<name>.old-<pid>``). A process killed between the two renames leaves the old folder under its ``.old``
name and no target; ``clean_stale_partials`` puts it back, so a crash never loses the previous version.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of a folder (a rename into it) durable; best effort where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at ``path`` only if the block ends without an exception.

    The temporary file is created beside the target (a rename is atomic only within one filesystem) with the
    permissions a plain ``open`` would give it, fsynced before the rename, and the folder fsynced after it.
    """
    target = Path(path)
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write-to-temp, fsync, rename, fsync the folder: readers see the old file or the new one, never a mix."""
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``atomic_write_bytes`` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def partial_folder_for(target: str | os.PathLike[str]) -> Path:
    """The hidden folder beside ``target`` this process builds a replacement in (never read as a model)."""
    target = Path(target)
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def backup_folder_for(target: str | os.PathLike[str]) -> Path:
    """Where ``replace_folder`` moves the previous ``target`` while the new one takes its place."""
    target = Path(target)
    return target.parent / f".{target.name}.old-{os.getpid()}"


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``folder`` (cheap for files already synced), so a rename of it is safe."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def replace_folder(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put the finished folder ``new`` at ``target``, replacing what is there only once ``new`` is durable.

    The previous target is moved aside (not deleted) before the rename and removed after it; if the rename
    fails it is moved back, so at every moment either the old or the new folder is there (or, after a kill
    between the two renames, the old one under its ``.old`` name, which ``clean_stale_partials`` restores).
    """
    new, target = Path(new), Path(target)
    fsync_tree(new)
    backup = None
    if target.exists() or target.is_symlink():
        backup = backup_folder_for(target)
        _remove(backup)
        os.replace(target, backup)
    try:
        os.replace(new, target)
    except OSError:
        if backup is not None:
            os.replace(backup, target)
        raise
    fsync_dir(target.parent)
    if backup is not None:
        _remove(backup)


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree if it is there (leftovers and backups are not worth an error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            path.unlink()


def is_partial_folder(path: str | os.PathLike[str]) -> bool:
    """True for the hidden temp/backup folders the writer uses; they are never models."""
    return _PARTIAL_RE.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id still runs (a zombie, killed but not reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def clean_stale_partials(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove temp/backup folders left beside ``out_dir`` by writers that died; returns what was removed."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    candidates = []
    for candidate in out_dir.parent.glob(f".{_glob_escape(out_dir.name)}.*-*"):
        match = _PARTIAL_RE.match(candidate.name)
        if match is None or match["name"] != out_dir.name:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        candidates.append((match["kind"] != "old", candidate))
    for is_partial, candidate in sorted(candidates):
        # A writer killed between its two renames leaves the previous model as `.old-<pid>` and no target:
        # put the previous model back rather than lose it.
        if not is_partial and not out_dir.exists():
            os.replace(candidate, out_dir)
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
