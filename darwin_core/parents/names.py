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
from darwin_core.io.runfolder import CHILD, CONFIG, check_run_id

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
    from darwin_core.parents import hub


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


    folder = Path(runs_dir or ".") / check_run_id(run_id) / CHILD
    if runs_dir is None or not (folder / "config.json").is_file():
        raise DarwinError(f"Run {run_id} has no finished child to breed.")
    return folder


def demo_folder(name: str, zoo_dir: str | Path | None = None) -> Path:
    from darwin_core.parents.demo import DEFAULT_ZOO_DIR, zoo_paths

    folders = zoo_paths(Path(zoo_dir) if zoo_dir is not None else DEFAULT_ZOO_DIR)
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
    from darwin_core.parents import hub

    name = parse_parent(ref, local_mode=local_mode)
    if name.scheme is Scheme.RUN:
        if may_breed_run is not None and not may_breed_run(name.target):
            raise DarwinError(f"The child of run {name.target} is not yours and has not been published; "
                              "only its owner can breed from it until then.")
        return hub.resolve_model(str(run_child_folder(name.target, runs_dir)), local_mode=True, token=None)
    if name.scheme is Scheme.DEMO:
        return hub.resolve_model(str(demo_folder(name.target, zoo_dir)), local_mode=True, token=None)
    return hub.resolve_model(ref.strip(), local_mode=local_mode, token=token, check_access=check_access)


def cached_repo(path: Path) -> tuple[str, str] | None:
    """(repo id, commit) when the folder is a snapshot of a Hugging Face cache (`models--org--name/snapshots/<sha>`)."""
    repo = path.parent.parent.name
    if path.parent.name != "snapshots" or not repo.startswith("models--") or repo.count("--") < 2:
        return None
    return repo[len("models--"):].replace("--", "/", 1), path.name


def _folder_label(path: Path, zoo_dir: str | Path | None) -> str:
    """A local folder's public name: a demo member, an earlier run's child, a cached Hub repo, else its name."""
    from darwin_core.parents.demo import DEFAULT_ZOO_DIR

    root = Path(zoo_dir) if zoo_dir is not None else DEFAULT_ZOO_DIR
    try:
        if path.resolve().parent == root.resolve():
            return f"demo:{path.name}"
    except OSError:
        pass
    if path.name == CHILD and (path.parent / CONFIG).is_file():
        return f"run:{path.parent.name}"
    cached = cached_repo(path)
    return cached[0] if cached else path.name


def parent_label(ref: str, zoo_dir: str | Path | None = None) -> str:
    """How a parent is named to people (card, pages): its Hub id as typed, `demo:<member>` / `run:<id>`, else a
    folder's name — never the path, which only means something on this machine (and tells a visitor its layout)."""
    from darwin_core.parents.hub import parse_ref

    text = str(ref).strip()
    if text.startswith((DEMO_PREFIX, RUN_PREFIX)):
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_label(path, zoo_dir)
    try:
        parse_ref(text, local_mode=False)
    except DarwinError:  # path-like (a folder since moved or deleted): its name only
        return path.name or "a local folder"
    return text
