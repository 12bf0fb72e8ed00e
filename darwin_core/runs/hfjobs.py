"""A breeding run launched from the Space as a Hugging Face Job, with the visitor's own token and hardware bill.

The Space's GPU holds one small pair; a bigger pair (or a visitor who wants more GPUs) runs as a Job:

    the Space            writes the run folder (config, owner, status "starting", the job's id) into its runs
                         folder, which is a Storage Bucket it mounts, and asks `run_job` for the flavour
                         chosen from the pair's size and the estimate, with the visitor's OAuth token
    the Job              runs the Space's own image with the same bucket mounted at the same path:
                         `torchrun --nproc-per-node <GPUs> -m darwin_core evolve <run>/config.yaml`, so the run
                         folder fills exactly as a local run's would; then, when asked, it pushes the child
                         with the same token (`darwin_core push`)
    the Space            polls that folder like any other run (the Runs tab, the live curves)

The token travels only as a Job secret (`HF_TOKEN`): never in the command line, the environment, the run folder
or a log line. The Job's timeout comes from the estimate with a margin (the Hub's default, 30 minutes, would
end most real runs half-way).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import FAILED, RUNNING, STARTING, RunFolder

BUCKET_ENV = "DARWIN_RUNS_BUCKET"  # "owner/bucket" (optionally "owner/bucket/prefix"): the bucket the runs folder is
IMAGE_ENV = "DARWIN_JOB_IMAGE"  # the image a Job runs; default: this Space's own (hf.co/spaces/<SPACE_ID>)
JOB_RUN_ENV = "DARWIN_HF_JOB_RUN"  # set in the Job's environment: the run id this process is the Job of
JOB_GONE = "GONE"  # not a Hub stage: the Hub answers 404 for the Job (deleted, or no longer kept)
JOBS_ASKED_PER_LISTING = 3  # the Runs tab asks the Hub about at most this many of the visitor's Job runs per listing
ENDED_STAGES = ("COMPLETED", "CANCELED", "ERROR", "DELETED", JOB_GONE)  # stages of a Job that no longer runs
MEMORY_MARGIN = 1.25  # activations, the evaluator's batches and allocator slack above parents + resident child
TIMEOUT_MARGIN = 1.5
TIMEOUT_FLOOR_SECONDS = 30 * 60
TIMEOUT_CEILING_SECONDS = 48 * 3600
TARGET_HOURS = 2.0  # more GPUs only when one would need longer than this (billed per GPU-minute either way)


@dataclass(frozen=True)
class Flavor:
    """A Jobs hardware flavour: its name in `run_job`, how many GPUs and how much memory each has."""

    name: str
    gpus: int
    gpu_memory_gb: float
    family: str


# Smallest first within a family; families cheapest first. Names are huggingface_hub's JobHardware values.
FLAVORS: tuple[Flavor, ...] = (
    Flavor("l4x1", 1, 24, "l4"), Flavor("l4x4", 4, 24, "l4"),
    Flavor("l40sx1", 1, 48, "l40s"), Flavor("l40sx4", 4, 48, "l40s"), Flavor("l40sx8", 8, 48, "l40s"),
    Flavor("a100-large", 1, 80, "a100"), Flavor("a100x4", 4, 80, "a100"), Flavor("a100x8", 8, 80, "a100"),
    Flavor("h200", 1, 141, "h200"), Flavor("h200x2", 2, 141, "h200"), Flavor("h200x4", 4, 141, "h200"),
    Flavor("h200x8", 8, 141, "h200"),
)
FLAVOR_NAMES = tuple(f.name for f in FLAVORS)


@dataclass(frozen=True)
class JobPlan:
    """What the launch asks for, and why (the page shows it beside the flavour dropdown)."""

    flavor: str
    gpus: int
    timeout_seconds: int
    estimated_seconds: float
    memory_per_gpu_gb: float
    reason: str


def memory_per_rank_gb(pair_bytes: int) -> float:
    """What one rank holds: both parents and the resident child (each about half the pair), with a margin."""
    return pair_bytes * 1.5 / 1e9 * MEMORY_MARGIN


def candidates_in_run(config: Any) -> int:
    """How many measurements a run makes: the baselines, then every generation's population and its top-k."""
    return 4 + int(config.generations) * (int(config.population) + int(config.topk_full))


def estimate_seconds_per_candidate(config: Any, pair_bytes: int, *, tokens_per_item: int = 64,
                                   flops_per_second: float = 1e14, load_bytes_per_second: float = 1e10) -> float:
    """A rough cost of one candidate on one GPU before anything was measured: writing the child (half the pair's
    bytes) plus a forward pass of 2·parameters FLOPs per token over the Phase 1 items (bf16: two bytes a
    parameter). Only the flavour and the timeout follow from it; a measured rate from an earlier run is better."""
    child_parameters = pair_bytes / 2 / 2
    items = int(config.proxy_items) * max(1, len(config.tasks))
    return pair_bytes / 2 / load_bytes_per_second + 2 * child_parameters * items * tokens_per_item / flops_per_second


def plan_job(config: Any, pair_bytes: int, seconds_per_candidate: float, *, flavor: str | None = None) -> JobPlan:
    """The flavour for a pair of `pair_bytes` (both parents' weights) whose candidate takes `seconds_per_candidate`
    on one GPU: the cheapest family whose GPU holds a rank, with enough GPUs that the run ends within TARGET_HOURS
    (up to the family's largest), and a timeout of the estimate with a margin. `flavor` overrides the choice
    (the visitor picked one) but is still checked to hold the pair."""
    need = memory_per_rank_gb(pair_bytes)
    single_gpu_seconds = candidates_in_run(config) * float(seconds_per_candidate)
    if flavor is not None:
        chosen = next((f for f in FLAVORS if f.name == flavor), None)
        if chosen is None:
            raise DarwinError(f"Unknown Jobs flavour {flavor!r}; choose one of {', '.join(FLAVOR_NAMES)}.")
        if chosen.gpu_memory_gb < need:
            raise DarwinError(f"The pair needs about {need:.0f} GB per GPU; {flavor} has {chosen.gpu_memory_gb:.0f} GB.")
        reason = "the flavour you chose"
    else:
        fitting = [f for f in FLAVORS if f.gpu_memory_gb >= need]
        if not fitting:
            raise DarwinError(f"The pair needs about {need:.0f} GB per GPU, more than any Jobs flavour has.")
        family = [f for f in fitting if f.family == fitting[0].family]
        wanted = math.ceil(single_gpu_seconds / (TARGET_HOURS * 3600))
        chosen = next((f for f in family if f.gpus >= wanted), family[-1])
        reason = (f"{need:.0f} GB per GPU fits {chosen.family.upper()}; about {single_gpu_seconds / 60:.0f} GPU-minutes "
                  f"on {chosen.gpus} GPU{'s' if chosen.gpus > 1 else ''}")
    # A batch is spread over the ranks, but it cannot be split finer than one candidate per rank.
    per_batch = max(1, math.ceil(int(config.population) / chosen.gpus)) / max(1, int(config.population))
    estimated = single_gpu_seconds * max(per_batch, 1 / chosen.gpus)
    timeout = int(min(TIMEOUT_CEILING_SECONDS, max(TIMEOUT_FLOOR_SECONDS, estimated * TIMEOUT_MARGIN + 15 * 60)))
    return JobPlan(flavor=chosen.name, gpus=chosen.gpus, timeout_seconds=timeout, estimated_seconds=round(estimated, 1),
                   memory_per_gpu_gb=round(need, 1), reason=reason)


@dataclass(frozen=True)
class Bucket:
    """The Storage Bucket the Space's runs folder is: its id, the folder inside it, and where it is mounted."""

    source: str
    path: str | None
    mount_path: str

    @classmethod
    def from_env(cls, runs_dir: Path, environ: Mapping[str, str] | None = None) -> "Bucket":
        value = (os.environ if environ is None else environ).get(BUCKET_ENV, "").strip().strip("/")
        parts = value.split("/")
        if len(parts) < 2 or not all(parts):
            raise DarwinError(f"Running as a Job needs the runs folder in a Storage Bucket: set {BUCKET_ENV} to "
                              "owner/bucket (the bucket mounted as the runs folder).")
        return cls(source="/".join(parts[:2]), path="/".join(parts[2:]) or None, mount_path=str(Path(runs_dir).resolve()))


def job_image(environ: Mapping[str, str] | None = None) -> str:
    """The image the Job runs: DARWIN_JOB_IMAGE, else this Space's own image (the same code as the page)."""
    environ = os.environ if environ is None else environ
    if environ.get(IMAGE_ENV):
        return environ[IMAGE_ENV]
    if environ.get("SPACE_ID"):
        return f"hf.co/spaces/{environ['SPACE_ID']}"
    raise DarwinError(f"Running as a Job needs an image: this is not a Space; set {IMAGE_ENV}.")


def job_command(run_dir: Path, plan: JobPlan, push_repo: str | None = None) -> list[str]:
    """The Job's command line: the same evolve as a local run, on the run folder the Space wrote (no token here)."""
    runs_dir, run_id = run_dir.parent, run_dir.name
    evolve = ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(plan.gpus),
              "-m", "darwin_core", "evolve", str(run_dir / "config.yaml"), "--runs-dir", str(runs_dir), "--run-id", run_id]
    if push_repo is None:
        return evolve
    push = ["python", "-m", "darwin_core", "push", str(run_dir / "child"), "--repo", push_repo, "--private"]
    # One shell line so the push runs only after a finished evolve; every word is quoted, none is a secret.
    import shlex

    return ["bash", "-c", f"{shlex.join(evolve)} && {shlex.join(push)}"]


def launch_job(config: Any, runs_dir: str | Path, *, token: str | None, who: Any, plan: JobPlan,
               push_repo: str | None = None, run_id: str | None = None, endpoint: str | None = None,
               environ: Mapping[str, str] | None = None) -> str:
    """Write the run folder into the bucketed runs folder and start the Job that fills it; returns the run id.

    `config` is an EvolutionConfig already checked as for a local breeding (parents, tasks staged into the runs
    folder, quotas). The visitor's token pays for and runs the Job; without one nothing is written.
    """
    from huggingface_hub import HfApi, Volume

    from darwin_core.runs import queue
    from darwin_core.runs.owners import SECRET_ENV, app_secret, record_owner

    if not token:
        raise DarwinError("Sign in with Hugging Face (with the jobs permission) to run a breeding as a Job on your account.")
    if not os.environ.get(SECRET_ENV, "").strip():
        # Else the secret that signs owners and configs is a file in the runs folder, which the Job mounts.
        raise DarwinError(f"Running as a Job needs {SECRET_ENV} set as a Space secret (the runs folder is shared with the Job).")
    runs_dir = Path(runs_dir)
    bucket, image = Bucket.from_env(runs_dir, environ), job_image(environ)
    folder = queue.prepare_foreground(config, runs_dir, run_id=run_id, token=token)
    secret = app_secret(runs_dir)
    record_owner(folder.path, who, secret)
    # Sealed before the Job exists: from here on this machine reads the run as the Job's (see held_remotely).
    folder.update_status(hf_job={**asdict(plan), "config_seal": config_seal(folder, secret)}, phase="job submitted")
    volume = Volume(type="bucket", source=bucket.source, mount_path=bucket.mount_path, path=bucket.path)
    try:
        job = HfApi(endpoint=endpoint).run_job(
            image=image, command=job_command(Path(bucket.mount_path) / folder.run_id, plan, push_repo),
            env={"DARWIN_RUNS_DIR": bucket.mount_path, JOB_RUN_ENV: folder.run_id, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
            secrets={"HF_TOKEN": token}, flavor=plan.flavor, timeout=plan.timeout_seconds, volumes=[volume],
            name=f"darwin-{folder.run_id}", labels={"darwin-run": folder.run_id}, token=token,
        )
    except Exception as error:  # noqa: BLE001 — the Hub refused (no jobs scope, no credit): the run is failed, with why
        message = _hub_sentence(error)
        folder.update_status(state=FAILED, error=message)
        folder.append_event("failed", error=message)
        raise DarwinError(message) from None
    record_job(folder, {"id": job.id, "url": job.url, "owner": getattr(job.owner, "name", None)})
    return folder.run_id


def record_job(folder: RunFolder, job: Mapping[str, Any]) -> None:
    """The Job beside the run (status.json's `hf_job` and an event): how the page tells a Job's run from a local
    one, and where it finds the Job's page. The state is left alone: the Job's process may have taken the run."""
    merged = {**(folder.read_status().get("hf_job") or {}), **job}
    folder.update_status(hf_job=merged)
    folder.append_event("hf_job_submitted", job_id=merged["id"], flavor=merged.get("flavor"), gpus=merged.get("gpus"),
                        timeout_seconds=merged.get("timeout_seconds"), url=merged.get("url"))


def job_stage(run_dir: str | Path, *, token: str | None, endpoint: str | None = None) -> str | None:
    """The Hub's stage of a run's Job (SCHEDULING, RUNNING, COMPLETED, ERROR, …), None for a run that is no Job."""
    from huggingface_hub import HfApi

    job = RunFolder(run_dir).read_status().get("hf_job")
    if not job or not job.get("id"):
        return None
    info = HfApi(endpoint=endpoint).inspect_job(job_id=job["id"], namespace=job.get("owner"), token=token)
    return info.status.stage if info.status else None


def config_seal(folder: RunFolder, secret: str) -> str:
    """The Space's signature of a Job run's config (HMAC with the server secret, which the Job never sees): the
    run folder lives where the Job writes, so its config is trusted here only while it is the one the Space wrote."""
    import hmac

    message = f"job-config:{folder.run_id}:".encode() + folder.config_text().encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def held_remotely(folder: RunFolder) -> bool:
    """A Job's run that the Hub may still be running: its lock lives on the Job's machine, so no lock seen here
    means nothing (the run is not interrupted). False inside the Job itself, which takes the run as its own."""
    job = folder.read_status().get("hf_job")
    return bool(job) and not job.get("ended") and os.environ.get(JOB_RUN_ENV) != folder.run_id


def check_trusted_here(folder: RunFolder) -> None:
    """Before this machine executes or queues a run: a Job's run only with the config the Space sealed at launch
    (the Job, or anyone who can write the bucket, could have rewritten config.yaml; a run id a visitor does not
    own is refused before this by the owner check). Runs that never were Jobs, and the Job itself, pass."""
    import hmac

    from darwin_core.runs.owners import app_secret

    job = folder.read_status().get("hf_job")
    if not job or os.environ.get(JOB_RUN_ENV) == folder.run_id:
        return
    if not hmac.compare_digest(str(job.get("config_seal") or ""), config_seal(folder, app_secret(folder.path.parent))):
        raise DarwinError(f"Run {folder.run_id} ran as a Hugging Face Job and its config is no longer the one this "
                          "Space launched; it will not run here.")


def settle_job(run_dir: str | Path, stage: str | None) -> bool:
    """Record that a run's Job ended (`stage` from `job_stage`) while its status still says starting/running (the
    Job timed out, was cancelled or crashed): the run fails with a sentence and can be resumed. True if changed."""
    folder = RunFolder(run_dir)
    status = folder.read_status()
    job = status.get("hf_job")
    if not job or job.get("ended") or stage not in ENDED_STAGES or status.get("state") not in (STARTING, RUNNING):
        return False
    ended = "The Hub no longer knows the run's Hugging Face Job" if stage == JOB_GONE else f"The Hugging Face Job ended ({stage})"
    message = f"{ended} before the run finished; resume the run to continue from its last checkpoint."
    folder.update_status(state=FAILED, error=message, hf_job={**job, "ended": stage})
    folder.append_event("hf_job_ended", stage=stage)
    return True


def follow_job(run_dir: str | Path, *, token: str | None, endpoint: str | None = None) -> bool:
    """Ask the Hub how a run's Job stands and settle the run when the Job ended without finishing it: a Job that
    timed out or crashed writes nothing more, so without this the page would show the run running for ever and
    its owner could not resume it. Only runs the Hub may still hold ask (`held_remotely`); the token is the
    visitor's, the Job being on their account. A Job the Hub answers 404 for (deleted, or past its retention)
    will never write again: the run is settled too. A Hub that cannot answer now changes nothing. True if settled."""
    from huggingface_hub.errors import HfHubHTTPError

    from darwin_core.parents.hub import is_transport_error

    folder = RunFolder(run_dir)
    if not held_remotely(folder) or folder.read_status().get("state") not in (STARTING, RUNNING):
        return False
    try:
        stage = job_stage(folder.path, token=token, endpoint=endpoint)
    except HfHubHTTPError as error:
        if getattr(error.response, "status_code", None) != 404:
            return False
        stage = JOB_GONE
    except Exception as error:
        if isinstance(error, OSError) or is_transport_error(error):
            return False
        raise
    return settle_job(folder.path, stage)


def record_refusal_in_job(runs_dir: str | Path, run_id: str | None, message: str) -> bool:
    """Inside a Job, a run its checks refused before it started (a gated parent the token may not read, say)
    fails in its folder with the sentence, so the Space shows why instead of a run starting for ever. Anywhere
    else (a CLI run, whose refusal leaves no folder) nothing is written. True if recorded."""
    if not run_id or os.environ.get(JOB_RUN_ENV) != run_id:
        return False
    folder = RunFolder(Path(runs_dir) / run_id)
    if not folder.path.is_dir() or folder.read_status().get("state") not in (STARTING, RUNNING):
        return False
    folder.update_status(state=FAILED, error=message)
    folder.append_event("failed", error=message)
    return True


def _hub_sentence(error: Exception) -> str:
    """One sentence for a refused launch; the Hub's own message, never the request (it holds the secret)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return "The Hub refused to start the Job: sign in again and allow the jobs permission (it may also need credit)."
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"The Hub did not start the Job ({first[:200]})."
