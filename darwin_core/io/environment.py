"""Where this process runs, for the rules that differ between a user's own machine and a public server.

Local mode (naming folders and files of the machine that runs Darwin) is the user's own business on their
machine and a hole on a public Space. The page decides it at start-up; the worker that executes queued runs
decides it again from the same environment, so a config that says `local_mode: true` (written by someone who
could write the runs folder, e.g. a shared Storage Bucket) does not unlock the server's disk (runs/queue.py).
"""

from __future__ import annotations

import os

from darwin_core.errors import DarwinError

LOCAL_MODE_ENV = "DARWIN_LOCAL_MODE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def on_space() -> bool:
    """True on a Hugging Face Space (the runtime sets SPACE_ID); decides sign-in and the default mode."""
    return bool(os.environ.get("SPACE_ID"))


def local_mode_default() -> bool:
    """Local mode lets a user name folders on the machine that runs the app.

    Off on a Space (a visitor must not read the server's disk), on everywhere else. DARWIN_LOCAL_MODE=1/0
    overrides the guess, e.g. to turn local paths off on a self-hosted public server.
    """
    value = os.environ.get(LOCAL_MODE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value:
        raise DarwinError(f"{LOCAL_MODE_ENV} must be 1 or 0, not {value!r}.")
    return not on_space()
