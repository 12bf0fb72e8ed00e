"""MRI tab: scan the father, the mother or both in the background, then show where their skills live.

The click handler only starts a thread and returns; a `gr.Timer` polls until the scan's JSON is on disk. Scans
are kept under `<runs dir>/.mri/<key>.json` (key = the parents' folders, weight file sizes and times, and the
probe set), so a reload, another browser or a later run finds a finished scan at once. Pictures come from
`ui/plots.py` (pure figure functions); the prescription table aggregates seed 002's per-tensor mri_ratio by
layer and role.

`start_background` / `background_state` are the small thread runner the Health tab uses too: one model-loading
job at a time in this process (the accelerator is one resource), the result or a one-sentence failure written
next to where the result goes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import atomic_write_text
from ui import session
from ui.common import guarded

LOG = logging.getLogger("darwin.ui")

MRI_DIR = ".mri"
PROBE_CHOICES = [("the demo tasks' worked examples", "demo"), ("the five default categories (reasoning, code, math, knowledge, language)", "default")]
SCAN_CHOICES = [("both parents (adds divergence and the prescription)", "both"), ("father only", "father"), ("mother only", "mother")]
PRESCRIPTION_HEADERS = ["layer", "role", "tensors", "mean mri_ratio (share of mother)"]
POLL_SECONDS = 1.5

# ------------------------------------------------------------------------------------------- background jobs

_threads: dict[str, threading.Thread] = {}
_threads_lock = threading.Lock()
DEVICE_LOCK = threading.Lock()  # scans and health checks load models: one at a time in this process


def _error_path(result: Path) -> Path:
    return result.with_name(result.name + ".error")


def start_background(result: Path, work: Callable[[], Mapping], *, what: str) -> bool:
    """Run `work` in a thread and save what it returns as JSON at `result` (or its failure sentence beside it).

    Returns False when the result already exists or a thread for it is running (nothing started).
    """
    from darwin_core.mri.scan import save_json

    key = str(result.resolve())
    with _threads_lock:
        running = _threads.get(key)
        if result.is_file() or (running is not None and running.is_alive()):
            return False
        result.parent.mkdir(parents=True, exist_ok=True)
        _error_path(result).unlink(missing_ok=True)

        def target() -> None:
            try:
                with DEVICE_LOCK:
                    report = work()
                save_json(report, result)
            except DarwinError as error:
                atomic_write_text(_error_path(result), str(error))
            except Exception as error:  # noqa: BLE001 — a bug: the log gets the traceback, the page one line
                LOG.exception("unexpected error while %s", what)
                atomic_write_text(_error_path(result), f"Unexpected error ({type(error).__name__}) while {what}; the server log has the details.")

        thread = threading.Thread(target=target, name=f"darwin-{what}", daemon=True)
        _threads[key] = thread
        thread.start()
        return True


def join_background(timeout: float | None = None) -> None:
    """Wait for this process's background scans and checks (tests, and a clean shutdown, call it)."""
    with _threads_lock:
        threads = list(_threads.values())
    for thread in threads:
        thread.join(timeout)


def background_state(result: Path) -> tuple[str, Any]:
    """("done", parsed JSON) | ("failed", sentence) | ("running", None) | ("none", None)."""
    # Whether the thread is alive is read before the files: a thread that ends between the two reads has
    # written its result or its error by then, so a finished job is never mistaken for a lost one.
    with _threads_lock:
        thread = _threads.get(str(result.resolve()))
    alive = thread is not None and thread.is_alive()
    if result.is_file():
        try:
            return "done", json.loads(result.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return "failed", f"{result.name} is not valid JSON."
    error = _error_path(result)
    if error.is_file():
        return "failed", error.read_text(encoding="utf-8").strip()
    return ("running", None) if alive else ("none", None)


def compute_device() -> str:
    """Where scans and health checks run: the first GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------- parents → folders


def resolve_for_scan(pick: str | None, typed: str | None, role: str, *, local_mode: bool, token: str | None,
                     zoo_dir: str | Path | None, runs_dir: str | Path | None = None):
    """(the reference as the user gave it, its hub.ModelRef) — metadata only, nothing downloaded yet."""
    from ui import parents

    ref = parents.chosen_ref(pick, typed, role)
    model, _ = parents.resolve_parent(ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
    return ref, model


def _identity(model: Any) -> list[Any]:
    """What decides a scan's input: a folder's weight and config files (name, size, time), or a Hub commit."""
    if model.folder is None:
        return [model.id, model.commit or model.revision]
    folder = Path(model.folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json"))
    return [str(folder.resolve())] + [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]


def scan_path(runs_dir: Path, models: Sequence[Any], probes: str) -> Path:
    """Where the scan of these models with this probe set is kept (content-addressed by what decides it)."""
    key = json.dumps({"models": [_identity(m) for m in models], "probes": probes}, sort_keys=True)
    return runs_dir / MRI_DIR / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _scan_work(which: str, models: Sequence[Any], probes: str, token: str | None) -> Callable[[], Mapping]:
    """The scan, run in the background: downloads Hub parents first (weights, config, tokenizer only)."""

    def work() -> Mapping:
        from darwin_core.parents import hub
        from darwin_core.mri import scan as mri
        from darwin_core.fitness.probes import resolve_probes

        folders = [Path((m if m.folder is not None else hub.download(m, token)).folder) for m in models]
        chosen = None if probes == "default" else resolve_probes(probes)
        device = compute_device()
        if which == "both":
            return mri.scan_pair(folders[0], folders[1], probes=chosen, device=device)
        return mri.scan_model(folders[0], probes=chosen, device=device)

    return work


# ------------------------------------------------------------------------------------------- rendering


def prescription_table(prescription: Mapping[str, float]) -> pd.DataFrame:
    """Seed 002's per-tensor mri_ratio, averaged per layer and role (the per-tensor list is in the scan JSON)."""
    from darwin_core.parents.anatomy import classify

    groups: dict[tuple[int, str], list[float]] = {}
    for name, ratio in prescription.items():
        role = classify(name)
        layer = -1 if role.layer is None else role.layer
        groups.setdefault((layer, role.role), []).append(float(ratio))
    rows = [
        ["—" if layer < 0 else str(layer), role, len(values), round(sum(values) / len(values), 4)]
        for (layer, role), values in sorted(groups.items())
    ]
    return pd.DataFrame(rows, columns=PRESCRIPTION_HEADERS)


def _summary(scan: Mapping, labels: Sequence[str]) -> str:
    lines = []
    scans = [(labels[0], scan["father"]), (labels[1], scan["mother"])] if "father" in scan else [(labels[0], scan)]
    for label, single in scans:
        importance = single["probes"]["importance"]
        top = ", ".join(f"{c} L{max(range(len(v)), key=v.__getitem__)}" for c, v in importance.items() if v)
        ppl = single["probes"].get("perplexity_all")
        lines.append(
            f"- **{label}**: {single['model'].get('model_type')}, {single['model'].get('num_layers')} layers"
            + (f", perplexity on the probes {ppl:.3g}" if isinstance(ppl, (int, float)) else "")
            + f"; most important layer per probe: {top}"
        )
    if "prescription" in scan:
        ratios = list(scan["prescription"].values())
        if ratios:
            lines.append(f"- **Prescription**: {len(ratios)} tensors, mean share of the mother {sum(ratios) / len(ratios):.3f}")
    return "\n".join(lines)


def render_scan(scan: Mapping, labels: Sequence[str]) -> tuple:
    """(summary, father/first importance, mother importance, advantage, divergence, prescription table)."""
    from ui import plots

    if "father" in scan:  # a pair
        return (
            _summary(scan, labels),
            plots.importance_heatmap(scan["father"], title=f"Probe importance — father ({labels[0]})"),
            plots.importance_heatmap(scan["mother"], title=f"Probe importance — mother ({labels[1]})"),
            plots.advantage_heatmap(scan),
            plots.divergence_map(scan),
            prescription_table(scan["prescription"]),
        )
    return (
        _summary(scan, labels),
        plots.importance_heatmap(scan, title=f"Probe importance — {labels[0]}"),
        plots.static_profile_lines(scan, "entropy"),
        None,
        None,
        pd.DataFrame(columns=PRESCRIPTION_HEADERS),
    )


# ------------------------------------------------------------------------------------------- handlers


def start_scan(which: str, probes: str, father_pick, father_typed, mother_pick, mother_typed, *, runs_dir: Path,
               local_mode: bool, token: str | None, zoo_dir: str | Path | None) -> tuple[dict | None, str]:
    """Resolve the parents, start the scan in the background (or find it done); returns (job, message)."""
    def work() -> dict:
        if which not in ("both", "father", "mother"):
            raise DarwinError("Choose what to scan: both parents, the father or the mother.")
        roles = ["father", "mother"] if which == "both" else [which]
        picks = {"father": (father_pick, father_typed), "mother": (mother_pick, mother_typed)}
        refs, models = [], []
        for role in roles:
            ref, model = resolve_for_scan(*picks[role], role, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
            refs.append(ref)
            models.append(model)
        if which == "both":
            from darwin_core.parents import hub

            compat = hub.compatibility(*models)
            if compat.verdict != "full":
                raise DarwinError(f"A pair scan needs parents with the same tensors: {compat.reason}")
        result = scan_path(runs_dir, models, probes)
        # The token goes to the thread's download and nowhere else (never into the scan file or a log line).
        start_background(result, _scan_work(which, models, probes, token), what=f"scanning {' and '.join(refs)}")
        return {"path": str(result), "labels": refs, "which": which}

    job, error = guarded(work, "starting an MRI scan")
    return job, error


def poll_scan(job: Mapping | None) -> tuple:
    """Timer tick: (status, timer, summary, four figures, prescription table) — gr.skip() while nothing changed."""
    skip = (gr.skip(),) * 6
    if not job:
        return ("", gr.Timer(active=False), *skip)
    state, payload = background_state(Path(job["path"]))
    labels = job["labels"]
    if state == "running":
        return (f"Scanning {' and '.join(labels)}… (this page can be closed; the scan keeps going)", gr.Timer(active=True), *skip)
    if state == "failed":
        return (f"**⚠ {payload}**", gr.Timer(active=False), *skip)
    if state == "none":
        return ("The scan stopped before it finished (the server restarted?); press Scan again.", gr.Timer(active=False), *skip)
    return (f"Scan of {' and '.join(labels)} done.", gr.Timer(active=False), *render_scan(payload, labels))


# ------------------------------------------------------------------------------------------- the tab


def build_mri_tab(demo: gr.Blocks, parent_inputs: Sequence[gr.components.Component], *,
                  runs_dir: str | Path, local_mode: bool, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Lay out the MRI tab in the current Blocks context; `parent_inputs` = the Parents tab's
    (father pick, father typed, mother pick, mother typed). Returns its components by name."""
    runs_dir = Path(runs_dir)
    gr.Markdown(
        "The MRI runs short probe texts through a parent and measures, layer by layer, how much the output "
        "changes when that layer is skipped (`1 − cos`), plus weight statistics and — for a pair — where the two "
        "parents differ. From both parents' scans it computes the merge ratios seed 002 prescribes. The scan runs "
        "in the background on the parents chosen in the Parents tab."
    )
    with gr.Row():
        which = gr.Radio(SCAN_CHOICES, value="both", label="Scan", elem_id="mri-which")
        probes = gr.Radio(PROBE_CHOICES, value="demo", label="Probe texts", elem_id="mri-probes")
    scan = gr.Button("Scan", variant="primary", elem_id="mri-scan")
    status = gr.Markdown(elem_id="mri-status")
    summary = gr.Markdown(elem_id="mri-summary")
    with gr.Row():
        first = gr.Plot(label="Probe importance (father)", elem_id="mri-father")
        second = gr.Plot(label="Probe importance (mother) / static profile", elem_id="mri-mother")
    with gr.Row():
        advantage = gr.Plot(label="Layer advantage", elem_id="mri-advantage")
        divergence = gr.Plot(label="Parent divergence", elem_id="mri-divergence")
    prescription = gr.Dataframe(headers=PRESCRIPTION_HEADERS, label="MRI prescription (mean per layer and role)",
                                interactive=False, elem_id="mri-prescription")
    job = gr.State(None)
    timer = gr.Timer(POLL_SECONDS, active=False)

    def on_scan(which, probes, father_pick, father_typed, mother_pick, mother_typed, token, user):
        # The click handler itself is wrapped (session.with_token), so Gradio injects the visitor's sign-in on a
        # Space; a wrapped function called from a plain handler would get no sign-in arguments at all.
        found, error = start_scan(which, probes, father_pick, father_typed, mother_pick, mother_typed,
                                  runs_dir=runs_dir, local_mode=local_mode, token=token, zoo_dir=zoo_dir)
        if found is None:
            return None, error, gr.Timer(active=False)
        return found, "Starting the scan…", gr.Timer(active=True)

    scan.click(
        session.with_token(on_scan), inputs=[which, probes, *parent_inputs], outputs=[job, status, timer],
        api_name="mri_scan", api_description="Start an MRI scan of the chosen parents in the background.",
    )
    timer.tick(
        poll_scan, inputs=[job], outputs=[status, timer, summary, first, second, advantage, divergence, prescription],
        api_visibility="private", show_progress="hidden",
    )
    return {"scan": scan, "status": status, "timer": timer, "job": job}
