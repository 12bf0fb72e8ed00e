"""Small helpers every tab shares: where the app runs, how failures are shown, how numbers are written.

The UI never shows a stack trace: a `DarwinError` is a sentence written for the user and is shown as is;
anything else is a bug, so it is logged in full on the server and the page gets one line saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from darwin_core.api import DarwinError
from darwin_core.api import local_mode_default, on_space  # noqa: F401 — where the app runs, for every tab

LOG = logging.getLogger("darwin.ui")

T = TypeVar("T")
JOB_CHECK_SECONDS = 30.0  # how often a page (Evolve, Runs) asks the Hub how a run's Job stands, with the visitor's token


def server_name_default() -> str:
    """GRADIO_SERVER_NAME if set; else all interfaces on a Space (its proxy must reach us), loopback locally."""
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space() else "127.0.0.1")


def error_markdown(error: BaseException) -> str:
    """One visible line for a failure: the DarwinError's own sentence, or a short note for a bug."""
    if isinstance(error, DarwinError):
        return f"**⚠ {error}**"
    return f"**⚠ Unexpected error ({type(error).__name__}): {error}.** The server log has the details."


def guarded(action: Callable[[], T], what: str) -> tuple[T | None, str]:
    """Run `action`; return (result, "") or (None, error_markdown) — the handler shows the message.

    `what` names the action for the server log, so a bug report can be matched with its traceback.
    """
    try:
        return action(), ""
    except DarwinError as error:
        return None, error_markdown(error)
    except Exception as error:  # noqa: BLE001 — a bug must still not reach the page as a traceback
        LOG.exception("unexpected error while %s", what)
        return None, error_markdown(error)


def human_bytes(count: int | None) -> str:
    """Sizes as people read them (binary units, like `du -h`)."""
    if count is None:
        return "—"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(count: int | None) -> str:
    """Parameter counts in the K/M/B style model cards use, with the exact number beside it."""
    if count is None:
        return "—"
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix} ({count:,})"
    return f"{count:,}"


def percent(value: float | None) -> str:
    """Accuracies (0..1) as percentages with one decimal, or a dash when not measured."""
    return "—" if value is None else f"{100 * value:.1f}%"


def chosen_ref(pick: str | None, typed: str | None, role: str) -> str:
    """A typed Hub id / path wins over the dropdown; neither is one clear sentence."""
    typed = (typed or "").strip()
    if typed:
        return typed
    if pick:
        return pick
    raise DarwinError(f"Pick a demo {role} or type a Hub id or local folder for the {role}.")
