"""Runs tab: every run folder, started here or with `python -m darwin_core`, with its status and best fitness.

The list is read from the runs folder each time (the folder is the truth; nothing is cached in the page).
Opening a run makes it the page's current run: the Evolve, Health and Publish tabs follow it, and the run's
curve and held-out report show here. Anyone can open and watch any run; managing it stays with its owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core.runs import queue as jobs
from darwin_core.parents.names import parent_label
from darwin_core.errors import DarwinError
from ui import run_plots, session
from ui.common import guarded, percent
from ui.evolve_tab import STATE_TEXT, run_error

RUN_HEADERS = ["run", "state", "father", "mother", "generation", "best fitness", "created"]
HELDOUT_HEADERS = ["task", "items", "child", "father", "mother", "child − father [95% CI]", "p vs father",
                   "child − mother [95% CI]", "p vs mother"]


HIDDEN_PARENT = "a gated or private Hub model"


def _name(ref: Any, run: Mapping | None = None) -> str:
    """A parent as everyone may see it: a gated or private parent's pinned id only in its owner's Evolve tab."""
    if run is not None and run.get("parents_restricted"):
        return HIDDEN_PARENT
    return parent_label(str(ref)) if ref else "—"


def runs_table(runs_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """(the table of every run, newest first, the run ids for the picker)."""
    runs = jobs.list_runs(runs_dir)
    rows = []
    for run in runs:
        best = run.get("best_fitness")
        rows.append([
            run["run_id"], STATE_TEXT.get(run["state"], run["state"]), _name(run.get("father"), run), _name(run.get("mother"), run),
            f"{run.get('generation') or 0}/{run.get('generations') or '?'}",
            f"{best:.4f}" if isinstance(best, (int, float)) else "—", run.get("created_at") or "—",
        ])
    return pd.DataFrame(rows, columns=RUN_HEADERS), [run["run_id"] for run in runs]


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def heldout_table(report: Mapping | None) -> pd.DataFrame:
    """The held-out comparison of report.json: scores, the paired-bootstrap interval of the difference, McNemar p."""
    from darwin_core.publishing.cardgen import heldout_rows

    rows = []
    for r in heldout_rows((report or {}).get("heldout")):
        rows.append([
            r.task, r.n_items, percent(r.child), percent(r.father), percent(r.mother),
            f"{_points(r.child - r.father)} [{_points(r.ci_vs_father[0])}, {_points(r.ci_vs_father[1])}]", f"{r.p_vs_father:.3g}",
            f"{_points(r.child - r.mother)} [{_points(r.ci_vs_mother[0])}, {_points(r.ci_vs_mother[1])}]", f"{r.p_vs_mother:.3g}",
        ])
    return pd.DataFrame(rows, columns=HELDOUT_HEADERS)


def report_markdown(run: Mapping) -> str:
    """What the run concluded, in words, from report.json (only measured numbers)."""
    report = run.get("report")
    if not report:
        if run.get("state") == "finished":
            return "The run finished without a report."
        return "The report appears when the run has finished: the best child is merged to disk and measured on the held-out split."
    lines = []
    best = report.get("best") or {}
    if best.get("kind") == "baseline":
        candidate = report.get("best_candidate") or {}
        lines.append(f"No candidate beat the **{best.get('name')}** reference on the full search split (search fitness "
                     f"**{best.get('fitness', 0):.4f}** against the best candidate {candidate.get('name')}'s "
                     f"{candidate.get('fitness', 0):.4f}), so the child is that recipe.")
    elif best:
        lines.append(f"Best candidate **{best.get('name')}** (generation {best.get('generation')}), search fitness **{best.get('fitness', 0):.4f}**.")
    heldout = report.get("heldout")
    if heldout:
        verdict = "beats both parents" if heldout.get("beats_both_parents") else (
            "beats the father" if heldout.get("beats_father") else "beats the mother" if heldout.get("beats_mother") else
            "does not beat either parent")
        composite = heldout["models"]["child"]["composite"]
        lines.append(
            f"On the held-out split the child scores **{percent(composite)}** (weighted composite) and {verdict} at "
            f"p < {heldout.get('significance', 0.05)} (exact McNemar on paired items)."
        )
    else:
        lines.append("This run did not measure a held-out split.")
    return "\n\n".join(lines)


def open_run(run_id: str, runs_dir: Path) -> dict[str, Any]:
    run = jobs.read_run(run_id, runs_dir)
    header = f"**Run `{run['run_id']}`** — {STATE_TEXT.get(run['state'], run['state'])} · father `{_name(run.get('father'), run)}` × mother `{_name(run.get('mother'), run)}`"
    return {
        "header": header,
        "error": run_error(run),
        "curve": run_plots.fitness_figure(run["curves"]),
        "report": report_markdown(run),
        "heldout": heldout_table(run.get("report")),
    }


def build_runs_tab(demo: gr.Blocks, session_state: gr.BrowserState, *, runs_dir: str | Path,
                   tab: gr.Tab | None = None) -> dict[str, Any]:
    """Lay out the Runs tab; `tab` (its gr.Tab) refreshes the list whenever the tab is selected."""
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

    def list_runs(state):
        found, message = guarded(lambda: runs_table(runs_dir), "listing runs")
        if found is None:
            return gr.skip(), gr.skip(), message
        frame, ids = found
        current, _ = guarded(lambda: session.current_run(state), "reading the page's run")
        return frame, gr.Dropdown(choices=ids, value=current if current in ids else (ids[0] if ids else None)), ""

    refresh.click(list_runs, inputs=[session_state], outputs=[table, picker, error], api_name="runs_list",
                  api_description="Every run in the runs folder with its state and best fitness.")
    demo.load(list_runs, inputs=[session_state], outputs=[table, picker, error], api_visibility="private")
    if tab is not None:
        tab.select(list_runs, inputs=[session_state], outputs=[table, picker, error], api_visibility="private")

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
