"""Runs tab: every run folder, started here or with `python -m darwin_core`, with its status and best fitness.

The list is read from the runs folder each time (the folder is the truth; nothing is cached in the page).
Opening a run makes it the page's current run: the Evolve, Health and Publish tabs follow it, and the run's
curve and held-out report show here. Anyone can open and watch any run; managing it stays with its owner.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core import api
from darwin_core.api import DarwinError
from ui import run_plots, session
from ui.common import JOB_CHECK_SECONDS, guarded
from ui.views import HELDOUT_HEADERS, STATE_TEXT, heldout_table, public_parent_name, report_markdown, run_error

RUN_HEADERS = ["run", "state", "father", "mother", "generation", "best fitness", "created"]






def runs_table(runs: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """(the table of these runs (`api.list_runs`: newest first), the run ids for the picker)."""
    rows = []
    for run in runs:
        best = run.get("best_fitness")
        rows.append([
            run["run_id"], STATE_TEXT.get(run["state"], run["state"]), public_parent_name(run.get("father"), run), public_parent_name(run.get("mother"), run),
            f"{run.get('generation') or 0}/{run.get('generations') or '?'}",
            f"{best:.4f}" if isinstance(best, (int, float)) else "—", run.get("created_at") or "—",
        ])
    return pd.DataFrame(rows, columns=RUN_HEADERS), [run["run_id"] for run in runs]








def open_run(run_id: str, runs_dir: Path) -> dict[str, Any]:
    run = api.read_run(run_id, runs_dir)
    header = f"**Run `{run['run_id']}`** — {STATE_TEXT.get(run['state'], run['state'])} · father `{public_parent_name(run.get('father'), run)}` × mother `{public_parent_name(run.get('mother'), run)}`"
    return {
        "header": header,
        "error": run_error(run),
        "curve": run_plots.fitness_figure(run["curves"]),
        "report": report_markdown(run),
        "heldout": heldout_table(run.get("report")),
    }


def build_runs_tab(demo: gr.Blocks, session_state: gr.BrowserState, *, runs_dir: str | Path,
                   tab: gr.Tab | None = None, local_mode: bool = True) -> dict[str, Any]:
    """Lay out the Runs tab; `tab` (its gr.Tab) refreshes the list whenever the tab is selected. Listing also asks
    the Hub, at most every JOB_CHECK_SECONDS per page and with the visitor's token, how their newest Job runs
    stand (`api.follow_hf_jobs`), so a Job that died is listed as failed without its Evolve tab open."""
    runs_dir = Path(runs_dir)
    gr.Markdown(
        "Every run — started here or with `python -m darwin_core evolve` — is a folder in the runs folder "
        "(set by DARWIN_RUNS_DIR). Open one to watch it in the Evolve tab, check its health or publish its child."
    )
    refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(headers=RUN_HEADERS, interactive=False, label="Runs", elem_id="runs-table", wrap=True)
    with gr.Row():
        picker = gr.Dropdown([], label="Run", elem_id="runs-pick", allow_custom_value=True)
        open_button = gr.Button("Open", variant="primary", elem_id="runs-open")
    error = gr.Markdown(elem_id="runs-error", elem_classes=["darwin-error"])
    header = gr.Markdown(elem_id="runs-header")
    run_failure = gr.Markdown(elem_id="runs-run-error", elem_classes=["darwin-error"])
    curve = gr.Plot(label="Fitness", elem_id="runs-curve")
    report = gr.Markdown(elem_id="runs-report")
    heldout = gr.Dataframe(headers=HELDOUT_HEADERS, interactive=False, label="Held-out results", elem_id="runs-heldout", wrap=True)

    jobs_checked = gr.State(0.0)

    def list_runs(state, checked, token, user):
        runs, message = guarded(lambda: api.list_runs(runs_dir), "listing runs")
        if runs is not None and time.time() - (checked or 0.0) >= JOB_CHECK_SECONDS:
            who = session.visitor(state, user)
            settled, _ = guarded(lambda: api.follow_hf_jobs(who, runs_dir=runs_dir, token=token, local_mode=local_mode,
                                                             runs=runs), "asking the Hub about your runs' Jobs")
            checked = time.time()
            if settled:  # a Job found dead is listed as failed: read again (else the one read serves)
                runs, message = guarded(lambda: api.list_runs(runs_dir), "listing runs")
        if runs is None:
            return gr.skip(), gr.skip(), message, checked
        frame, ids = runs_table(runs)
        current, _ = guarded(lambda: session.current_run(state), "reading the page's run")
        return frame, gr.Dropdown(choices=ids, value=current if current in ids else (ids[0] if ids else None)), "", checked

    listing = session.with_token(list_runs, ["state", "checked"])
    inputs, outputs = [session_state, jobs_checked], [table, picker, error, jobs_checked]
    refresh.click(listing, inputs=inputs, outputs=outputs, api_name="runs_list",
                  api_description="Every run in the runs folder with its state and best fitness.")
    demo.load(listing, inputs=inputs, outputs=outputs, api_visibility="private")
    if tab is not None:
        tab.select(listing, inputs=inputs, outputs=outputs, api_visibility="private")

    def on_open(state, run_id):
        def work():
            if not run_id:
                raise DarwinError("Pick a run to open.")
            return open_run(run_id, runs_dir)

        view, message = guarded(work, "opening a run")
        if view is None:
            return (gr.skip(), message) + (gr.skip(),) * 5
        return (session.with_run(state, run_id), "", view["header"], view["error"], view["curve"], view["report"], view["heldout"])

    open_button.click(on_open, inputs=[session_state, picker],
                      outputs=[session_state, error, header, run_failure, curve, report, heldout], api_name="runs_open",
                      api_description="Open a run: it becomes this page's current run in every tab.")
    return {"table": table, "picker": picker, "open": open_button, "refresh": refresh}
