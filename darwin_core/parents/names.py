"""One way to name a parent, whoever names it: the page, the CLI, a run's config, the worker.

A parent is one of
- ``demo:<name>``: a member of the embedded demo zoo (ships with the app, so allowed on a public Space);
- ``run:<id>``: the child of a finished run in the runs folder (on the server; who may breed from it is the
  caller's rule: its owner, or anyone once the child is published);
- ``org/name`` or ``org/name@revision``: a Hub repo, resolved with the caller's token (or none);
- a local folder: only in local mode (the user owns the machine), never on a public Space.

A run's config names its parents this way, never by a server path, so the config can run with local mode off
(a Space's worker refuses every path a visitor could have typed) and a card built from it shows no server path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from darwin_core.errors import DarwinError

DEMO_PREFIX = "demo:"
RUN_PREFIX = "run:"


class Scheme(str, Enum):
    DEMO = "demo"
    RUN = "run"
    HUB = "hub"
    LOCAL = "local"


@dataclass(frozen=True)
class ParentName:
    """A parsed parent reference: its scheme and what it points at (demo name, run id, repo id or path)."""

    scheme: Scheme
    target: str
    revision: str | None = None


def parse_parent(ref: str, *, local_mode: bool) -> ParentName:
    """The scheme of what a user typed; one sentence for what is none of them (paths refused off local mode)."""
    from darwin_core import hub
    from darwin_core.runfolder import check_run_id

    text = (ref or "").strip()
    if text.startswith(DEMO_PREFIX):
        name = text[len(DEMO_PREFIX):]
        if not name.isidentifier():
            raise DarwinError(f"{text!r} is not a demo model; the demo parents are named like demo:father.")
        return ParentName(Scheme.DEMO, name)
    if text.startswith(RUN_PREFIX):
        return ParentName(Scheme.RUN, check_run_id(text[len(RUN_PREFIX):]))
    kind, target, revision = hub.parse_ref(text, local_mode=local_mode)
    return ParentName(Scheme.LOCAL if kind == "local" else Scheme.HUB, target, revision)


def run_child_folder(run_id: str, runs_dir: str | Path | None) -> Path:
    """The child folder of a finished run; one sentence when there is none."""
    from darwin_core.runfolder import CHILD, check_run_id

    folder = Path(runs_dir or ".") / check_run_id(run_id) / CHILD
    if runs_dir is None or not (folder / "config.json").is_file():
        raise DarwinError(f"Run {run_id} has no finished child to breed.")
    return folder


def demo_folder(name: str, zoo_dir: str | Path | None = None) -> Path:
    from darwin_core import zoo

    folders = zoo.zoo_paths(Path(zoo_dir) if zoo_dir is not None else zoo.DEFAULT_ZOO_DIR)
    if name not in folders:
        raise DarwinError(f"There is no demo model called {name!r}; the demo parents are {', '.join(folders)}.")
    return folders[name]


def resolve_parent_name(ref: str, *, local_mode: bool, token: str | None = None, runs_dir: str | Path | None = None,
                        zoo_dir: str | Path | None = None, may_breed_run: Callable[[str], bool] | None = None,
                        check_access: bool = True):
    """A hub.ModelRef for any parent name; demo and run parents are server folders, read even off local mode.

    may_breed_run(run_id) is the caller's permission rule for `run:` parents (None: allowed, as in the CLI and
    the worker, whose configs were checked when they were submitted). check_access=False only for the worker
    reading a commit the page already fetched with the visitor's token.
    """
    from darwin_core import hub

    name = parse_parent(ref, local_mode=local_mode)
    if name.scheme is Scheme.RUN:
        if may_breed_run is not None and not may_breed_run(name.target):
            raise DarwinError(f"The child of run {name.target} is not yours and has not been published; "
                              "only its owner can breed from it until then.")
        return hub.resolve_model(str(run_child_folder(name.target, runs_dir)), local_mode=True, token=None)
    if name.scheme is Scheme.DEMO:
        return hub.resolve_model(str(demo_folder(name.target, zoo_dir)), local_mode=True, token=None)
    return hub.resolve_model(ref.strip(), local_mode=local_mode, token=token, check_access=check_access)


def display_name(ref: str) -> str:
    """How a parent is shown to people: schemes and Hub ids as they are, a local folder by its folder name only."""
    text = (ref or "").strip()
    if text.startswith((DEMO_PREFIX, RUN_PREFIX)):
        return text
    try:
        name = parse_parent(text, local_mode=False)
    except DarwinError:
        return Path(text.rstrip("/")).name or text
    return f"{name.target}@{name.revision}" if name.revision else name.target
