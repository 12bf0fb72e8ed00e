"""Who is looking at the page, and who owns a run.

A visitor is identified by a random session id kept in the browser (`gr.BrowserState`, so it survives a
reload and is the same in every tab of that browser), or, on a Space, by the signed-in user's name. The page's
"current run" lives in the same browser state, so a reload re-attaches to the run it was watching.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import atomic_write_text

OWNER_FILE = "owner.json"
SECRET_FILE = ".darwin-secret"
SECRET_ENV = "DARWIN_SESSION_SECRET"
STORAGE_KEY = "darwin-session"
T = TypeVar("T")
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


def browser_state(runs_dir: str | Path):
    """The one `gr.BrowserState` of the page: {"session": id, "run_id": current run or absent}."""
    import gradio as gr

    # The secret only scrambles localStorage; the server never trusts it for more than "which session is this".
    secret = hashlib.sha256(("browser-state:" + app_secret(runs_dir)).encode()).hexdigest()[:32]
    return gr.BrowserState({}, storage_key=STORAGE_KEY, secret=secret)


def ensure_session(state: Any) -> dict[str, Any]:
    """A copy of the browser state with a session id (a new random one on the first visit)."""
    out = dict(state) if isinstance(state, dict) else {}
    session = out.get("session")
    if not isinstance(session, str) or len(session) < 16:
        out["session"] = secrets.token_urlsafe(18)
    return out


def current_run(state: Any) -> str | None:
    """The page's run id, or None; an API caller can send any state, so an id that is not a valid run id
    (`../../etc`) is refused here, before any handler builds a path from it."""
    from darwin_core.io.runfolder import check_run_id

    run_id = state.get("run_id") if isinstance(state, dict) else None
    if not isinstance(run_id, str) or not run_id:
        return None
    return check_run_id(run_id)


def with_run(state: Any, run_id: str | None) -> dict[str, Any]:
    out = ensure_session(state)
    if run_id:
        out["run_id"] = run_id
    else:
        out.pop("run_id", None)
    return out


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


def visitor(state: Any, user: str | None = None) -> Visitor:
    """The Visitor from the browser state and the signed-in user's name (None when signed out or off a Space)."""
    session = ensure_session(state)["session"]  # no id yet: a fresh one, which owns nothing
    return Visitor(session=str(session), user=str(user) if user else None)


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


# --------------------------------------------------------------------------------------------- handlers that act for someone


def token_is_fresh(oauth_token: Any, *, margin_seconds: int = 120) -> bool:
    """False when a `gr.OAuthToken` has expired (or will within the margin): ask to sign in again, don't fail."""
    import time

    expires_at = getattr(oauth_token, "expires_at", None)
    return not isinstance(expires_at, (int, float)) or expires_at > time.time() + margin_seconds


def with_token(fn: Callable[..., T], names: Sequence[str] | None = None, *, n_inputs: int | None = None) -> Callable[..., T]:
    """An event handler calling `fn(*inputs, token, user)` with the visitor's Hub identity. The inputs are named
    by `names`, else by `fn`'s own parameters before (token, user), else `n_inputs` generic names; the names
    become the API's parameter names.

    On a Space the handler declares `gr.OAuthProfile | None` and `gr.OAuthToken | None` parameters, so Gradio
    injects the signed-in visitor's profile and token (never the Space's own HF_TOKEN, which would let a visitor
    act as the Space's owner); an expired token counts as signed out. Elsewhere it declares none (a LoginButton-less
    app must not touch OAuth) and the token is HF_TOKEN from the environment, the user signed in locally.
    The token is passed on and never logged: `repr()` of a gr.OAuthToken prints it.
    """
    import inspect

    from ui.common import on_space

    if names is None and n_inputs is not None:
        names = [f"input_{i}" for i in range(n_inputs)]
    if names is None:
        own = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        if len(own) < 2 or any(p.default is not p.empty for p in own[:-2]):
            raise TypeError("with_token needs fn(*inputs, token, user) with plain positional inputs, or explicit names")
        names = [p.name for p in own[:-2]]
    n_inputs = len(names)
    positional = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    if on_space():
        import gradio as gr

        def handler(*args: Any) -> T:
            inputs, profile, oauth_token = args[:n_inputs], args[n_inputs], args[n_inputs + 1]
            fresh = oauth_token is not None and token_is_fresh(oauth_token)
            token = oauth_token.token if fresh else None
            user = getattr(profile, "username", None) if profile is not None else None
            return fn(*inputs, token, user)

        extra = {"profile": gr.OAuthProfile | None, "oauth_token": gr.OAuthToken | None}
        handler.__signature__ = inspect.Signature(positional + [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=hint)
            for name, hint in extra.items()
        ])
        handler.__annotations__ = dict(extra)
    else:

        def handler(*args: Any) -> T:
            return fn(*args[:n_inputs], os.environ.get("HF_TOKEN") or None, None)

        handler.__signature__ = inspect.Signature(positional)
        handler.__annotations__ = {}
    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


def attach(demo: Any, state: Any) -> None:
    """On every page load: give a first-time browser its session id (a reload keeps the one it has)."""

    def first_visit(current: Any) -> Any:
        import gradio as gr

        fresh = ensure_session(current)
        return gr.skip() if fresh == current else fresh

    demo.load(first_visit, inputs=[state], outputs=[state], api_visibility="private", show_progress="hidden")
