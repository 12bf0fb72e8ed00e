"""Who is looking at the page, and who owns a run.

A visitor is identified by a random session id kept in the browser (`gr.BrowserState`, so it survives a
reload and is the same in every tab of that browser), or, on a Space, by the signed-in user's name. The page's
"current run" lives in the same browser state, so a reload re-attaches to the run it was watching.

Who owns a run (keyed hashes in the run folder's owner.json, never a token) is decided in
`darwin_core.runs.owners`; this module only reads the visitor from the page.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from darwin_core.api import (  # noqa: F401 — ownership lives in darwin_core.runs.owners; the tabs reach it here
    OWNER_FILE, REFUSED, SECRET_ENV, SECRET_FILE, Visitor, app_secret, is_owner, read_owners, record_owner,
    require_owner,
)

STORAGE_KEY = "darwin-session"
__all__ = ["OWNER_FILE", "REFUSED", "SECRET_ENV", "SECRET_FILE", "Visitor", "app_secret", "is_owner", "read_owners",
           "record_owner", "require_owner", "visitor", "with_token", "current_run", "with_run", "ensure_session"]
T = TypeVar("T")




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
    from darwin_core.api import check_run_id

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




def visitor(state: Any, user: str | None = None) -> Visitor:
    """The Visitor from the browser state and the signed-in user's name (None when signed out or off a Space)."""
    session = ensure_session(state)["session"]  # no id yet: a fresh one, which owns nothing
    return Visitor(session=str(session), user=str(user) if user else None)












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
