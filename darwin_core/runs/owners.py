"""Who owns a run, and what a visitor has asked of the queue.

A run started from the page records its owners in `owner.json` in the run folder, as keyed hashes
(HMAC-SHA256 with a server-side secret) of "session:<id>" and, when signed in, "user:<name>": the folder says
who may cancel or publish the run without holding anything a visitor could replay, and it never holds a token.
Everyone else can watch. Runs with no owner record (started from the CLI) can be managed from the page only in
local mode, where whoever sees the page also owns the machine.

The secret comes from DARWIN_SESSION_SECRET, else from `<runs dir>/.darwin-secret` (created once, mode 0600),
so it survives restarts: owners stay owners and the browser state stays readable after the app restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import atomic_write_text

OWNER_FILE = "owner.json"
SECRET_FILE = ".darwin-secret"
SECRET_ENV = "DARWIN_SESSION_SECRET"
REFUSED = "Only the person who started this run can {action} it; you can watch it."


def app_secret(runs_dir: str | Path) -> str:
    """The server-side secret: the env var, else a random one kept in the runs folder (created on first use)."""
    value = os.environ.get(SECRET_ENV, "").strip()
    if value:
        return value
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    candidate = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(candidate + "\n")
    return candidate

@dataclass(frozen=True)
class Visitor:
    """Who acts: the browser session, and the signed-in user's name on a Space (None when signed out)."""

    session: str
    user: str | None = None

    def keys(self) -> list[str]:
        keys = [f"session:{self.session}"]
        if self.user:
            keys.append(f"user:{self.user}")
        return keys

def _digest(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()

def record_owner(run_dir: str | Path, who: Visitor, secret: str) -> None:
    """Write owner.json into a run folder: keyed hashes of the visitor's session (and user), nothing else."""
    owners = [_digest(key, secret) for key in who.keys()]
    document = {"owners": owners, "signed_in": who.user is not None}
    atomic_write_text(Path(run_dir) / OWNER_FILE, json.dumps(document, indent=1, sort_keys=True) + "\n")

def read_owners(run_dir: str | Path) -> list[str] | None:
    """The owner hashes of a run, or None when the run records no owner (started from the CLI)."""
    try:
        document = json.loads((Path(run_dir) / OWNER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return []  # unreadable: nobody may manage it from the page
    owners = document.get("owners") if isinstance(document, dict) else None
    return [o for o in owners if isinstance(o, str)] if isinstance(owners, list) else []

def is_owner(run_dir: str | Path, who: Visitor, secret: str, *, local_mode: bool) -> bool:
    owners = read_owners(run_dir)
    if owners is None:
        return local_mode
    mine = {_digest(key, secret) for key in who.keys()}
    return any(hmac.compare_digest(owner, digest) for owner in owners for digest in mine)

def require_owner(run_dir: str | Path, who: Visitor, secret: str, *, local_mode: bool, action: str) -> None:
    """Raise the clear refusal sentence unless `who` owns the run."""
    if not is_owner(run_dir, who, secret, local_mode=local_mode):
        if read_owners(run_dir) is None:
            raise DarwinError(f"This run was started outside the page; {action} it from the command line.")
        raise DarwinError(REFUSED.format(action=action))


def visitor_usage(runs_dir: Path, who: Visitor, secret: str, *, now: float | None = None) -> dict[str, int]:
    """This visitor's runs queued or running now, and the candidates their runs of the last 24 hours asked for."""
    import time

    import yaml

    from darwin_core.io.runfolder import run_folders
    from darwin_core.runs.queue import read_state
    from darwin_core.runs.quotas import DAY_SECONDS

    now = time.time() if now is None else now
    active = candidates = 0
    for folder in run_folders(runs_dir):
        if not is_owner(folder.path, who, secret, local_mode=False):
            continue
        status = folder.read_status()
        if read_state(folder) in ("queued", "starting", "running"):
            active += 1
        if now - float(status.get("queued_at") or 0.0) < DAY_SECONDS:
            try:
                config = yaml.safe_load(folder.config_text()) or {}
                candidates += int(config.get("population") or 0) * int(config.get("generations") or 0)
            except (yaml.YAMLError, OSError, TypeError, ValueError):
                continue
    return {"active_runs": active, "candidates_today": candidates}


def may_breed_from(run_id: str, *, runs_dir: Path, who: Visitor, secret: str, local_mode: bool) -> bool:
    """A run's child may be bred by the run's owner, or by anyone once it has been published."""
    from darwin_core.io.runfolder import PUBLISHED, check_run_id

    folder = Path(runs_dir) / check_run_id(run_id)
    return (folder / PUBLISHED).is_file() or is_owner(folder, who, secret, local_mode=local_mode)
