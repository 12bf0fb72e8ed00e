"""Health tab: the current run's child against both parents, and its held-out results.

The health check (`darwin_core.health.checkup.check_health`: interference, function loss, NaN/Inf, perplexity,
degeneration, layer by layer with the MRI's probe importance) loads three models, so it is a job of the worker
(`api.check`), queued behind any evolution or scan in flight, and writes `health.json` into the run folder, where
the card and every other browser find it. It starts by itself the first time the run's owner looks at a finished run here, or with
the button; a `gr.Timer` polls until it is there. The held-out table (intervals and McNemar p) and the evidence
(the sentence, the manual-vs-evolution table, the tasks with their item counts, the probes) are the run's own
report.json, measured by the run, rendered by the same function as the card's (`api.report_evidence`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core import api
from darwin_core.api import DarwinError
from darwin_core.api import FINISHED
from ui import plots, run_plots, session
from ui.common import guarded
from ui.views import HELDOUT_HEADERS, heldout_table, report_markdown

POLL_SECONDS = 1.5
VERDICT_TEXT = {"healthy": "✅ Healthy", "warning": "🟡 Warning", "broken": "❌ Broken"}


def verdict_markdown(report: Mapping) -> str:
    verdict = report.get("verdict", "?")
    lines = [f"### {VERDICT_TEXT.get(verdict, verdict)}", report.get("summary", "")]
    findings = report.get("findings") or []
    if findings:
        lines.append("\n".join(f"- **{f['severity']}** ({f['kind']}): {f['message']}" for f in findings))
    return "\n\n".join(line for line in lines if line)


def view(run_id: str | None, *, runs_dir: Path, who: session.Visitor, local_mode: bool, start: bool) -> dict[str, Any]:
    """What the tab shows for a run; starts the check when asked (or by itself for the owner of a finished run)."""
    if not run_id:
        raise DarwinError("Open a run first (Evolve or Runs tab): the health check compares its child with its parents.")
    run = api.read_run(run_id, runs_dir)
    folder = runs_dir / run_id
    owner = session.is_owner(folder, who, session.app_secret(runs_dir), local_mode=local_mode)
    out: dict[str, Any] = {
        "header": f"**Run `{run_id}`** — {run['state']}",
        "report": report_markdown(run),
        "heldout": heldout_table(run.get("report")),
        "evidence": api.report_evidence(run["report"]) if run.get("report") else "",
        "heldout_plot": run_plots.heldout_figure(run["report"]["heldout"]) if (run.get("report") or {}).get("heldout") else None,
        "verdict": "", "chart": None, "status": "", "polling": False,
    }
    job = api.health_job_id(run_id)
    state, payload = api.job_result(job, runs_dir)
    stored = api.run_health(run_id, runs_dir)
    if stored is not None and state in ("none", "finished"):
        state, payload = "finished", stored
    if state == "none" and run["state"] == FINISHED and run.get("child_dir") and (start or owner):
        if start and not owner:
            session.require_owner(folder, who, session.app_secret(runs_dir), local_mode=local_mode, action="check")
        api.check(run_id, runs_dir)
        state, payload = api.job_result(job, runs_dir)
    if state == "finished":
        out["verdict"], out["chart"] = verdict_markdown(payload), plots.health_chart(payload)
    elif state == "queued":
        out["status"], out["polling"] = "Checking the child against both parents: waiting for the device, where another job runs first.", True
    elif state in ("starting", "running"):
        out["status"], out["polling"] = "Checking the child against both parents… (loads three models; the page can be closed)", True
    elif state == "failed":
        out["status"] = f"**⚠ The health check failed: {payload}**"
    elif run["state"] != FINISHED or not run.get("child_dir"):
        out["status"] = "The health check runs once the run has finished and its child is on disk."
    else:
        out["status"] = "No health check yet; its owner can start it."
    return out


def build_health_tab(demo: gr.Blocks, session_state: gr.BrowserState, *, runs_dir: str | Path, local_mode: bool,
                     tab: gr.Tab | None = None) -> dict[str, Any]:
    """Lay out the Health tab for the page's current run; `tab` (its gr.Tab) refreshes it when selected."""
    runs_dir = Path(runs_dir)
    gr.Markdown(
        "Is the child healthy compared with its parents? Layer by layer: interference (the child leans on a layer "
        "far more than either parent), function loss (a layer both parents rely on went quiet), NaN/Inf, perplexity "
        "on the probe texts, repetition in greedy generations, and per task whether the child kept the better "
        "parent's skill on held-out items. Below: the evidence the run measured (its report.json)."
    )
    header = gr.Markdown(elem_id="health-header")
    check = gr.Button("Run health check", elem_id="health-check")
    status = gr.Markdown(elem_id="health-status", elem_classes=["darwin-error"])
    verdict = gr.Markdown(elem_id="health-verdict")
    chart = gr.Plot(label="Layer importance: child vs parents", elem_id="health-chart")
    report = gr.Markdown(elem_id="health-report")
    evidence = gr.Markdown(elem_id="health-evidence")
    heldout = gr.Dataframe(headers=HELDOUT_HEADERS, interactive=False, label="Held-out results (never seen by the search)",
                           elem_id="health-heldout", wrap=True)
    heldout_plot = gr.Plot(label="Held-out accuracy", elem_id="health-heldout-plot")
    timer = gr.Timer(POLL_SECONDS, active=False)

    outputs = [header, status, verdict, chart, report, evidence, heldout, heldout_plot, timer]

    def show(start: bool):
        def core(state, token, user):
            who = session.visitor(state, user)
            found, message = guarded(lambda: view(session.current_run(state), runs_dir=runs_dir, who=who,
                                                  local_mode=local_mode, start=start), "showing the health check")
            if found is None:
                return ("", message, "", None, "", "", gr.skip(), gr.skip(), gr.Timer(active=False))
            return (found["header"], found["status"], found["verdict"], found["chart"], found["report"], found["evidence"],
                    found["heldout"], found["heldout_plot"], gr.Timer(active=found["polling"]))

        return session.with_token(core, ["state"])

    check.click(show(True), inputs=[session_state], outputs=outputs, api_name="health_check",
                api_description="Start (or show) the health check of the page's current run.")
    timer.tick(show(False), inputs=[session_state], outputs=outputs, api_visibility="private", show_progress="hidden")
    session_state.change(show(False), inputs=[session_state], outputs=outputs, api_visibility="private", show_progress="hidden")
    if tab is not None:
        tab.select(show(False), inputs=[session_state], outputs=outputs, api_visibility="private", show_progress="hidden")
    return {"check": check, "status": status, "verdict": verdict, "timer": timer}

