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
MAX_NAME_CHARS = 1024  # longer than any Hub id (96 + 96 + a revision) or sane path; the OS refuses longer names
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

    if not isinstance(ref, (str, type(None))):
        raise DarwinError(f"A parent is named by text (a Hub id or a folder), not by {type(ref).__name__}.")
    text = (ref or "").strip()
    if len(text) > MAX_NAME_CHARS:  # before any file-system call: a name this long makes the OS raise
        raise DarwinError(f"A parent name of {len(text)} characters is neither a Hub id (at most 96 characters "
                          f"for the name) nor a folder path.")
    if text.startswith(DEMO_PREFIX):
        name = text[len(DEMO_PREFIX):]
        if not name.isidentifier():
            raise DarwinError(f"{text!r} is not a demo model; the demo parents are named like demo:father.")
        return ParentName(Scheme.DEMO, name)
    if text.startswith(RUN_PREFIX):
        return ParentName(Scheme.RUN, check_run_id(text[len(RUN_PREFIX):]))
    try:
        kind, target, revision = hub.parse_ref(text, local_mode=local_mode)
    except OSError:  # the file system refused to look the name up (a path component over its length limit)
        raise DarwinError(f"{text[:77] + '...' if len(text) > 80 else text} is neither a Hub model id nor a folder "
                          "this machine can open.") from None
    if kind == "hub":
        _check_hub_id(target, text)
    return ParentName(Scheme.LOCAL if kind == "local" else Scheme.HUB, target, revision)


def _check_hub_id(repo_id: str, text: str) -> None:
    """The Hub's own rules for a repo id (length, `--`, `..`, `.git`), as one sentence instead of its exception."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise DarwinError(f"{shown} is not a Hub model id: a name of at most 96 letters, digits, '-', '_' or '.', "
                          "without '--' or '..', optionally after 'org/' and before '@revision'.") from None


def check_local_folder(path: str | Path, who: str = "parent") -> Path:
    """A local parent's folder, or one sentence: it does not exist, or it is a file where a model folder goes."""
    folder = Path(path).expanduser()
    try:
        if folder.is_file():
            raise DarwinError(f"The {who} {path} is a file, not a model folder.")
        if not folder.is_dir():
            raise DarwinError(f"The folder {path} does not exist.")
    except OSError as error:
        raise DarwinError(f"The {who} folder {path} cannot be read ({error.strerror or type(error).__name__}).") from None
    return folder


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
    if name.scheme is Scheme.LOCAL:
        check_local_folder(name.target)
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
