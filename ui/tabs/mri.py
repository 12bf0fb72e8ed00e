"""MRI tab: scan the father, the mother or both, then show where their skills live.

The click handler queues the scan as a job of the worker (`api.scan`) and returns; a `gr.Timer` polls until the
job's `mri.json` is there. A scan waits while another device job (an evolution, a health check) runs, so two
models never share the accelerator, and the same parents with the same probe set are served from the stored
scan, for a reload, another browser or a later run. Pictures come from `ui/plots.py` (pure figure functions);
the prescription table aggregates seed 002's per-tensor mri_ratio by layer and role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core import api
from ui import session
from ui.common import chosen_ref, guarded

PROBE_CHOICES = [("the demo tasks' worked examples", "demo"), ("the five default categories (reasoning, code, math, knowledge, language)", "default")]
SCAN_CHOICES = [("both parents (adds divergence and the prescription)", "both"), ("father only", "father"), ("mother only", "mother")]
PRESCRIPTION_HEADERS = ["layer", "role", "tensors", "mean mri_ratio (share of mother)"]
POLL_SECONDS = 1.5

# ------------------------------------------------------------------------------------------- rendering


def prescription_table(prescription: Mapping[str, float]) -> pd.DataFrame:
    """Seed 002's per-tensor mri_ratio, averaged per layer and role (the per-tensor list is in the scan JSON)."""
    from darwin_core.api import classify

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
    lines.append(_probes_line(scan, scans[0][1]))
    if "prescription" in scan:
        ratios = list(scan["prescription"].values())
        if ratios:
            lines.append(f"- **Prescription**: {len(ratios)} tensors, mean share of the mother {sum(ratios) / len(ratios):.3f}")
    return "\n".join(lines)


def _probes_line(scan: Mapping, single: Mapping) -> str:
    """Which probe texts the scan ran (a pair scan also says where they came from, e.g. a run's search split)."""
    texts = single["probes"].get("texts") or {}
    source = scan.get("probe_source")
    counts = ", ".join(f"{category} ({len(items)} texts)" for category, items in texts.items())
    return "- **Probes**: " + (f"{source}: " if source else "") + (counts or ", ".join(single["probes"].get("categories", [])))


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
    """Resolve the parents and queue the scan (or find it stored); returns (job, message)."""
    def work() -> dict:
        picks = {"father": (father_pick, father_typed), "mother": (mother_pick, mother_typed)}
        refs = {role: chosen_ref(*picks[role], role) for role in ("father", "mother")}
        job_id, labels = api.scan(which, refs, probes, local_mode=local_mode, token=token, zoo_dir=zoo_dir,
                                  runs_dir=runs_dir)
        return {"job": job_id, "labels": labels, "which": which}

    return guarded(work, "starting an MRI scan")


def poll_scan(job: Mapping | None, *, runs_dir: Path) -> tuple:
    """Timer tick: (status, timer, summary, four figures, prescription table) — gr.skip() while nothing changed."""
    skip = (gr.skip(),) * 6
    if not job:
        return ("", gr.Timer(active=False), *skip)
    state, payload = api.job_result(job["job"], runs_dir)
    labels = job["labels"]
    if state == "queued":
        return ("Waiting for the device: another job (an evolution, a scan or a health check) runs first; the "
                "scan starts as soon as it is done.", gr.Timer(active=True), *skip)
    if state in ("starting", "running"):
        return (f"Scanning {' and '.join(labels)}… (this page can be closed; the scan keeps going)", gr.Timer(active=True), *skip)
    if state == "failed":
        return (f"**⚠ {payload}**", gr.Timer(active=False), *skip)
    if state != "finished":
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
        lambda found: poll_scan(found, runs_dir=runs_dir), inputs=[job], outputs=[status, timer, summary, first, second, advantage, divergence, prescription],
        api_visibility="private", show_progress="hidden",
    )
    return {"scan": scan, "status": status, "timer": timer, "job": job}
