"""A run is a folder: the one source of truth about an evolution, read by the UI, the CLI and the worker.

Layout of `runs/<run_id>/`:

    config.yaml          the EvolutionConfig as submitted (never rewritten by the run)
    status.json          {"state": queued|starting|running|finished|failed|cancelled, timestamps, error,
                         phase, generation, generations, best_fitness, device_memory_bytes, cwd, genome_space}
    events.jsonl         append-only log with wall-clock times (started, generation done, resumed, ...)
    evaluations.jsonl    one JSON line per measurement, deterministic content only (no times), so an
                         interrupted-and-resumed run ends with a byte-identical file
    checkpoint.pkl       pickled CMA-ES object (which owns its RNG) + loop state, written atomically after
                         every generation
    best-recipe.yaml     the best child's recipe
    report.json          the best candidate, and the held-out comparison of the child (loaded back from child/)
                         with the parents and baselines: scores, paired bootstrap 95% intervals, exact McNemar p
    heldout-results.json every model's per-item held-out results (what the report's statistics are computed from)
    mri.json             the parents' pair scan the MRI prescription came from (runs with `mri` set)
    health.json          the child's check-up against both parents (written by the Health tab / `health` CLI)
    owner.json           who may cancel or publish the run on a shared Space (hashed; written by the UI)
    child/               the best child merged to disk (safetensors + config + tokenizer + darwin-recipe.yaml)
    cancel               flag file: present = the user asked to stop; the loop checks it between candidates
    error.log            the traceback of an unexpected failure (status.json keeps the one-sentence error)
    run.log              what the run printed, when the background worker executed it
    .lock                held (flock) by the process executing the run: "running" + free lock = interrupted

Beside the runs: `worker.log`, `.worker.lock` (held by the one worker) and `.queue.lock` (see jobs.py).

Every whole-file write goes through `io.atomic` (a temporary file in the same folder, fsync, `os.replace`), so
a reader or a crash never sees half a status, checkpoint or recipe. JSONL files are appended line by line; a line torn by a
kill is ignored on read and cut off on resume.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import pickle
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import atomic_write_bytes, atomic_write_text  # callers also import them from here

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: assets/, and the cwd of worker processes
RUNS_DIR_ENV = "DARWIN_RUNS_DIR"
CONFIG = "config.yaml"
STATUS = "status.json"
EVENTS = "events.jsonl"
EVALUATIONS = "evaluations.jsonl"
CHECKPOINT = "checkpoint.pkl"
BEST_RECIPE = "best-recipe.yaml"
REPORT = "report.json"
MRI_SCAN = "mri.json"
CHILD = "child"
CANCEL = "cancel"
ERROR_LOG = "error.log"
PUBLISHED = "published.json"  # written once the child is on the Hub: from then on anyone may breed from it
LOCK = ".lock"

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
FINISHED, FAILED, CANCELLED = "finished", "failed", "cancelled"
INTERRUPTED = "interrupted"  # derived, never written: status says running but no process holds the lock
STATES = (QUEUED, STARTING, RUNNING, FINISHED, FAILED, CANCELLED)
FINAL_STATES = (FINISHED, FAILED, CANCELLED)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def runs_dir_default(value: str | Path | None = None) -> Path:
    """The runs folder: the given one, else $DARWIN_RUNS_DIR (e.g. a mounted Storage Bucket), else ./runs."""
    return Path(value or os.environ.get(RUNS_DIR_ENV) or "runs")


def now_iso() -> str:
    """UTC wall-clock time, second resolution, for humans reading status and events."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """Sortable by creation time and unique without coordination: `20260102-130405-1a2b3c`."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    """A run id is one path component of safe characters (it names a folder and appears in URLs)."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or run_id in (".", ".."):
        raise DarwinError(f"Run id {run_id!r} is not valid; use letters, digits, '.', '_' or '-' (at most 128).")
    return run_id


def _json_line(record: dict[str, Any]) -> bytes:
    # sort_keys + repr-exact floats: the same record always gives the same bytes.
    return (json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a JSONL file; a final line torn by a kill (no newline or bad JSON) is ignored."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is incomplete by definition
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return records


class RunFolder:
    """Typed access to one run folder; holds no state of its own besides the path."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file(CONFIG).is_file()

    # ------------------------------------------------------------------ creation / config

    @classmethod
    def create(cls, runs_dir: Path | str, config_yaml: str, *, run_id: str | None = None, state: str = QUEUED) -> "RunFolder":
        """A new folder with its config and a first status; refuses to reuse an existing run id."""
        runs_dir = Path(runs_dir)
        run_id = check_run_id(run_id) if run_id else new_run_id()
        runs_dir.mkdir(parents=True, exist_ok=True)
        folder = cls(runs_dir / run_id)
        try:
            folder.path.mkdir()
        except FileExistsError:
            raise DarwinError(f"A run named {run_id!r} already exists in {runs_dir}; choose another run id.") from None
        stamp = time.time()
        folder.write_status({"state": state, "run_id": run_id, "created_at": now_iso(), "queued_at": stamp})
        # The config goes last: a folder counts as a run only once its config is there.
        atomic_write_text(folder.file(CONFIG), config_yaml)
        folder.append_event("submitted" if state == QUEUED else "created")
        return folder

    def config_text(self) -> str:
        try:
            return self.file(CONFIG).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DarwinError(f"{self.path} is not a run folder (it has no {CONFIG}).") from None

    # ------------------------------------------------------------------ status

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.file(STATUS).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"state": QUEUED, "run_id": self.run_id}
        except json.JSONDecodeError:  # cannot happen with atomic writes, but a hand-edited file can be broken
            return {"state": FAILED, "run_id": self.run_id, "error": "The run's status file is unreadable."}

    def write_status(self, status: dict[str, Any]) -> None:
        atomic_write_text(self.file(STATUS), json.dumps(status, indent=1, sort_keys=True, allow_nan=False) + "\n")

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into status.json (None removes a key). Only one process writes at a time (see jobs)."""
        status = self.read_status()
        for key, value in fields.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        status["updated_at"] = now_iso()
        self.write_status(status)
        return status

    # ------------------------------------------------------------------ logs

    def append_event(self, event: str, **data: Any) -> None:
        record = {"event": event, "time": now_iso(), "t": round(time.time(), 3), **data}
        with open(self.file(EVENTS), "ab") as handle:
            handle.write(_json_line(record))

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(EVENTS))

    def append_evaluation(self, record: dict[str, Any]) -> None:
        """One measurement per line, flushed and fsynced: what was measured survives a kill."""
        with open(self.file(EVALUATIONS), "ab") as handle:
            handle.write(_json_line(record))
            handle.flush()
            os.fsync(handle.fileno())

    def evaluations(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(EVALUATIONS))

    def evaluations_size(self) -> int:
        try:
            return self.file(EVALUATIONS).stat().st_size
        except FileNotFoundError:
            return 0

    def truncate_evaluations(self, size: int) -> None:
        """Cut evaluations.jsonl back to `size` bytes (the length recorded with the last checkpoint)."""
        path = self.file(EVALUATIONS)
        if not path.exists():
            if size:
                raise DarwinError(f"The run's {EVALUATIONS} is missing but its checkpoint expects {size} bytes.")
            return
        if path.stat().st_size < size:
            raise DarwinError(f"The run's {EVALUATIONS} is shorter than its checkpoint expects; the folder was changed by hand.")
        with open(path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    # ------------------------------------------------------------------ checkpoint

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_bytes(self.file(CHECKPOINT), pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    def read_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or None. Only our own worker writes it (it is a pickle: never load foreign ones)."""
        try:
            data = self.file(CHECKPOINT).read_bytes()
        except FileNotFoundError:
            return None
        return pickle.loads(data)

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).is_file()

    # ------------------------------------------------------------------ cancel flag

    def request_cancel(self) -> None:
        atomic_write_text(self.file(CANCEL), now_iso() + "\n")

    def cancel_requested(self) -> bool:
        return self.file(CANCEL).exists()

    def clear_cancel(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file(CANCEL).unlink()

    # ------------------------------------------------------------------ execution lock

    @contextlib.contextmanager
    def hold_lock(self) -> Iterator[None]:
        """Held for as long as a process executes this run; the kernel frees it when that process dies."""
        handle = open(self.file(LOCK), "a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DarwinError(f"Run {self.run_id} is already being executed by another process.") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # closing the descriptor releases the flock

    def is_active(self) -> bool:
        """True while some process holds this run's execution lock."""
        return lock_is_held(self.file(LOCK))


def lock_is_held(path: Path) -> bool:
    """True while some process holds an flock on `path` (tried without blocking, released at once)."""
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def run_folders(runs_dir: Path | str) -> list[RunFolder]:
    """Every run in a runs folder (folders with a config), oldest id first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return [RunFolder(p) for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG).is_file()]
