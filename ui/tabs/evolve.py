"""Evolve tab: set up a search, queue it, and watch it live from the run folder.

Launch only validates the settings and queues a run (`darwin_core.runs.queue.submit`); the evolution runs in the
jobs worker, a separate process that outlives this page. A `gr.Timer` re-reads the run folder every couple of
seconds: fitness per candidate and best so far per generation with the parents and baselines as reference
lines, the best genome, ETA, candidates per minute, memory. The run id is kept in the browser
(`gr.BrowserState`), so a reload re-attaches to the run; another browser opens it from the Runs tab and
watches. Cancel and resume are for the run's owner only (ui/session.py).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core import api
from darwin_core.api import DarwinError
from darwin_core.api import CANCELLED
from ui import job_launch, session
from ui.views import render_run, signature
from ui.common import JOB_CHECK_SECONDS, chosen_ref, guarded

POLL_SECONDS = 2.0
DEMO_HEADERS = ["task", "what it asks", "weight", "items"]
EXTRA_HEADERS = ["source", "name", "weight", "items"]
SETTING_NAMES = ["demo_tasks", "extra_tasks", "uploads", "upload_weight", "genome", "method", "population", "sigma0",
                 "generations", "seed", "proxy_items", "topk_full", "frozen_layers", "mri", "patience", "start", "selection"]


# ------------------------------------------------------------------------------------------- tasks


def demo_task_rows() -> pd.DataFrame:
    """Every demo skill with its weight (the zoo's skills 1, the others 0 = unused) and an empty item count
    (= its whole fixed pool of 400, half search, half held-out)."""
    from darwin_core.api import DEMO_SKILLS, SKILLS

    rows = [[name, skill.description, 1.0 if name in DEMO_SKILLS else 0.0, None] for name, skill in SKILLS.items()]
    return pd.DataFrame(rows, columns=DEMO_HEADERS)


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DarwinError(f"{value!r} is not a number.") from None
    return None if math.isnan(number) else number


def _items(value: Any, task: str) -> int | None:
    number = _number(value)
    if number is None:
        return None
    if number != int(number) or number < 2:
        raise DarwinError(f"The item count of task {task!r} must be a whole number of at least 2.")
    return int(number)


def _rows(table: Any) -> list[list[Any]]:
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        return table.values.tolist()
    if isinstance(table, Mapping):  # the API form of a Dataframe value
        return list(table.get("data") or [])
    return [list(row) for row in table]


def task_specs(demo_table: Any, extra_table: Any, uploads: Sequence[Any] | None, upload_weight: Any,
               *, quotas: Any = None) -> list[dict[str, Any]]:
    """The run's tasks from the three inputs: demo skills with a positive weight, extra Hub / lm-eval rows, and
    uploaded files (still where Gradio put them; `stage_tasks` copies them once everything has been checked)."""
    from darwin_core.api import check_upload

    specs: list[dict[str, Any]] = []
    for row in _rows(demo_table):
        name, weight = str(row[0]).strip(), _number(row[2])
        if name and weight:
            if weight < 0:
                raise DarwinError(f"The weight of task {name!r} must not be negative.")
            spec = {"demo": name, "weight": weight}
            limit = _items(row[3] if len(row) > 3 else None, name)
            if limit is not None:
                spec["limit"] = limit
            specs.append(spec)
    for row in _rows(extra_table):
        source, name = str(row[0] or "").strip().lower(), str(row[1] or "").strip()
        if not name:
            continue
        weight = _number(row[2]) if len(row) > 2 else None
        source = {"hub dataset": "hub", "lm-eval": "lm_eval", "lm_eval": "lm_eval", "hub": "hub"}.get(source)
        if source is None:
            raise DarwinError(f"Task {name[:80]!r}: the source must be 'hub' (a Hub dataset) or 'lm_eval' (an lm-evaluation-harness task).")
        spec = {source: name, "weight": 1.0 if weight is None else weight}
        limit = _items(row[3] if len(row) > 3 else None, name)
        if limit is not None:
            spec["limit"] = limit
        specs.append(spec)
    weight = _number(upload_weight)
    for upload in uploads or []:
        path = Path(getattr(upload, "name", None) or upload)
        if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
            raise DarwinError(f"{path.name[:80]} is not a .jsonl, .json or .csv file.")
        if quotas is not None and path.is_file():
            check_upload(quotas, path.name, path.stat().st_size)
        specs.append({"file": str(path), "name": path.stem, "weight": 1.0 if weight is None else weight})
    if not specs:
        raise DarwinError("Choose at least one fitness task: give a demo task a weight above 0, add a Hub or lm-eval task, or upload a file.")
    return specs






# ------------------------------------------------------------------------------------------- launching




def _whole(value: Any, name: str) -> int:
    number = _number(value)
    if number is None or number != int(number):
        raise DarwinError(f"{name} must be a whole number.")
    return int(number)




def breed_request(father_pick, father_typed, mother_pick, mother_typed, demo_table, extra_table, uploads,
                  upload_weight, genome, method, population, sigma0, generations, seed, proxy_items, topk_full,
                  frozen, use_mri=False, patience=0, start="neutral", selection="topk", *, local_mode: bool) -> Any:
    """The form as a breeding request (a local run and a Hugging Face Job read the same form the same way)."""
    quotas = None if local_mode else api.Quotas.from_env()
    return api.BreedRequest(
        father=chosen_ref(father_pick, father_typed, "father"),
        mother=chosen_ref(mother_pick, mother_typed, "mother"),
        tasks=task_specs(demo_table, extra_table, uploads, upload_weight, quotas=quotas),
        settings={
            "genome": genome,
            "method": None if not method or method == "default" else method,
            "population": _whole(population, "The population"),
            "generations": _whole(generations, "The number of generations"),
            "sigma0": _number(sigma0) if _number(sigma0) is not None else 0.2,
            "seed": _whole(seed, "The seed"),
            "proxy_items": _whole(proxy_items, "Proxy items per task"),
            "topk_full": _whole(topk_full, "Top-k for the full search set"),
            "mri": "auto" if use_mri else None,
            "patience": _whole(patience if patience not in (None, "") else 0, "Patience"),
            **_budget_settings(start, selection),
        },
        frozen_layers=frozen,
    )


def launch_run(state: Any, *form: Any, runs_dir: Path, local_mode: bool, zoo_dir: str | Path | None,
               token: str | None, user: str | None) -> str:
    """Read the form into a breeding request and queue it (`api.breed` checks everything before writing)."""
    request = breed_request(*form, local_mode=local_mode)
    return api.breed(request, session.visitor(state, user), runs_dir=runs_dir, local_mode=local_mode, token=token,
                     zoo_dir=zoo_dir)


def job_config(state: Any, *form: Any, runs_dir: Path, local_mode: bool, zoo_dir: str | Path | None,
               token: str | None, user: str | None) -> Any:
    """The form as a checked config for a Hugging Face Job: every check of a local launch, nothing queued here."""
    request = breed_request(*form, local_mode=local_mode)
    return api.check_breed(request, session.visitor(state, user), runs_dir=runs_dir, local_mode=local_mode,
                           token=token, zoo_dir=zoo_dir).config


def _budget_settings(start: str | None, selection: str | None) -> dict[str, str]:
    """The search-budget settings the form changed from their defaults (a default stays out of the config, so
    the run's config.yaml reads as it always did)."""
    out = {}
    if start and start != "neutral":
        out["start"] = start
    if selection and selection != "topk":
        out["selection"] = selection
    return out


# ------------------------------------------------------------------------------------------- reading a run


@functools.lru_cache(maxsize=64)
def _launch_estimate(run_dir: Path) -> str:
    """The run's cost estimate as it stood at launch (computed once per run: it reads the tasks)."""
    try:
        return api.estimate_run_cost(run_dir).sentence()
    except (DarwinError, OSError, ValueError):
        return ""


def budget_markdown(run_dir: Path) -> str:
    """The cost estimate at launch and where the time goes, from the timings every evaluation records (merge and
    scoring seconds, tokens): candidates per minute and the search ETA at the measured speed."""
    lines = [_launch_estimate(run_dir)]
    try:
        folder = api.RunFolder(run_dir)
        events = folder.events()
        generations = int(folder.read_status().get("generations") or 0)
    except (DarwinError, OSError, ValueError):
        events, generations = [], 0
    speed = api.throughput(events)
    if speed is not None:
        tokens = f", {speed.tokens_per_second / 1000:.1f}k tokens/s scored" if speed.tokens_per_second else ""
        lines.append(f"Measured: **{speed.seconds_per_evaluation:.2f} s** per evaluation "
                     f"({100 * speed.merge_share:.0f}% merging{tokens}), **{speed.per_minute:.1f}** candidate evaluations per minute")
        eta = api.timed_eta_seconds(events, generations) if generations else None
        if eta:
            lines.append(f"Search ETA at that speed: **{_minutes(eta)}**")
    text = "  \n".join(line for line in lines if line)
    return "\n\n" + text if text else ""


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"




















# ------------------------------------------------------------------------------------------- the tab


def _task_inputs() -> list[gr.components.Component]:
    """The fitness-task inputs: demo tasks, Hub/lm-eval tasks, uploads and their weight."""
    with gr.Accordion("Fitness tasks", open=True):
        demo_tasks = gr.Dataframe(
            value=demo_task_rows(), headers=DEMO_HEADERS, datatype=["str", "str", "number", "number"],
            label="Demo tasks (weight 0 = not used; items = how many of its 400 fixed items to use, blank = all; "
                  "split half search, half held-out)",
            interactive=True, elem_id="evolve-demo-tasks", static_columns=[0, 1],
        )
        extra_tasks = gr.Dataframe(
            value=pd.DataFrame([["hub", "", 1.0, None]], columns=EXTRA_HEADERS), headers=EXTRA_HEADERS,
            datatype=["str", "str", "number", "number"], interactive=True, elem_id="evolve-extra-tasks",
            label="Hub datasets (source 'hub', e.g. allenai/ai2_arc) and lm-evaluation-harness tasks (source 'lm_eval', "
                  "e.g. arc_easy); items = how many to load (blank = all), split half search, half held-out",
        )
        with gr.Row():
            uploads = gr.File(label="Your own tasks (.jsonl / .json / .csv: prompt + answer, or prompt + choices + answer)",
                              file_count="multiple", file_types=[".jsonl", ".json", ".csv"], elem_id="evolve-uploads")
            upload_weight = gr.Number(1.0, label="Weight of each uploaded task", minimum=0, elem_id="evolve-upload-weight")
    return [demo_tasks, extra_tasks, uploads, upload_weight]


def family_defaults(father_pick, father_typed, mother_pick, mother_typed) -> tuple[Any, ...]:
    """(demo tasks, genome, method, MRI) as a family's shipped config breeds it (the rivals: per-layer, linear, their
    two skills), or no change for any other pair: the page breeds a family the way its `breed.yaml` does."""
    try:
        father, mother = chosen_ref(father_pick, father_typed, "father"), chosen_ref(mother_pick, mother_typed, "mother")
    except DarwinError:
        return (gr.skip(),) * 4
    settings = api.family_breed_settings(father, mother)
    if settings is None:
        return (gr.skip(),) * 4
    rows = demo_task_rows()
    if "tasks" in settings:
        rows["weight"] = [1.0 if name in settings["tasks"] else 0.0 for name in rows[DEMO_HEADERS[0]]]
    return (rows, settings.get("genome", gr.skip()), settings.get("method", gr.skip()),
            settings["mri"] == "auto" if "mri" in settings else gr.skip())


def _follow_family(parent_inputs: Sequence[gr.components.Component], form: list[gr.components.Component]) -> None:
    """Picking a family's two parents sets the tasks, genome, method and MRI inputs to its shipped config."""
    for parent_input in parent_inputs:
        parent_input.change(family_defaults, inputs=list(parent_inputs), outputs=form, api_visibility="private",
                            show_progress="hidden")


def _search_inputs() -> dict[str, gr.components.Component]:
    """The search-setting inputs, by name."""
    from darwin_core.api import SPACE_NAMES
    from darwin_core.api import method_names

    with gr.Accordion("Search settings", open=True):
        with gr.Row():
            genome = gr.Dropdown(list(SPACE_NAMES), value="darwin-v6", label="Genome space", elem_id="evolve-genome")
            method = gr.Dropdown(["default", *method_names()], value="default", label="Merge method (default: the space's own)",
                                 elem_id="evolve-method")
            frozen = gr.Textbox(label="Frozen layers (kept from the father)", placeholder="e.g. 0, 3, 5-7", elem_id="evolve-frozen")
            use_mri = gr.Checkbox(True, label="MRI prescription: scan the parents first (darwin-v6's mri_trust gene "
                                  "blends it in; also a reference line)", elem_id="evolve-mri")
        with gr.Row():
            population = gr.Number(8, label="Population", precision=0, minimum=2, elem_id="evolve-population")
            sigma0 = gr.Number(0.2, label="Sigma (initial step size)", minimum=0.01, maximum=1, elem_id="evolve-sigma")
            generations = gr.Number(10, label="Generations", precision=0, minimum=1, elem_id="evolve-generations")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="evolve-seed")
            proxy_items = gr.Number(16, label="Proxy items per task (phase 1)", precision=0, minimum=1, elem_id="evolve-proxy")
            topk_full = gr.Number(2, label="Top-k on the full search set (phase 2)", precision=0, minimum=0, elem_id="evolve-topk")
            patience = gr.Number(0, label="Stop early after this many generations without a better child (0 = never)",
                                 precision=0, minimum=0, elem_id="evolve-patience")
        with gr.Row():
            start = gr.Radio(["neutral", "mri"], value="neutral", label="CMA-ES starts from (mri: the MRI prescription; "
                             "needs the MRI scan)", elem_id="evolve-start")
            selection = gr.Radio(["topk", "halving"], value="topk", label="Who reaches the full search set (topk: the "
                                 "top-k by proxy; halving: successive halving, proxy → more items → full split)",
                                 elem_id="evolve-selection")
    return {"genome": genome, "method": method, "frozen": frozen, "use_mri": use_mri, "population": population,
            "sigma0": sigma0, "generations": generations, "seed": seed, "proxy_items": proxy_items,
            "topk_full": topk_full, "patience": patience, "start": start, "selection": selection}


def _manager(action: str, *, runs_dir: Path, local_mode: bool):
    """The Cancel / Resume handler: the page's current run, its owner only."""

    def core(state, token, user):
        who = session.visitor(state, user)

        def act() -> str:
            run_id = session.current_run(state)  # a forged id is refused before any path is built
            if not run_id:
                raise DarwinError("There is no run on this page to " + action + ".")
            session.require_owner(runs_dir / run_id, who, session.app_secret(runs_dir), local_mode=local_mode, action=action)
            if action == "cancel":
                after = api.cancel(run_id, runs_dir)
                return "Cancelled." if after == CANCELLED else f"Asked the run to stop (it stops before its next candidate; now {after})."
            api.resume(run_id, runs_dir)
            return "Queued again: the run continues from its last checkpoint."

        done, message = guarded(act, f"{action} a run")
        return (f"{done}" if done else message), gr.Timer(active=True)

    return session.with_token(core, ["state"])


def _job_block(session_state: gr.BrowserState, form: Sequence[gr.components.Component], *, runs_dir: Path,
               local_mode: bool, zoo_dir: str | Path | None) -> Any:
    """"Run as a Hugging Face Job" under the launch button: the same form and checks, on the visitor's account."""
    return job_launch.build_job_launch(
        session_state, form, ["father_pick", "father_typed", "mother_pick", "mother_typed", *SETTING_NAMES],
        make_config=functools.partial(job_config, runs_dir=runs_dir, local_mode=local_mode, zoo_dir=zoo_dir),
        runs_dir=runs_dir, local_mode=local_mode, zoo_dir=zoo_dir)


def build_evolve_tab(demo: gr.Blocks, session_state: gr.BrowserState, parent_inputs: Sequence[gr.components.Component], *,
                     runs_dir: str | Path, local_mode: bool, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Lay out the Evolve tab; `parent_inputs` = the Parents tab's (father pick, father typed, mother pick,
    mother typed). Returns its components by name."""
    runs_dir = Path(runs_dir)
    gr.Markdown(
        "Breed the parents chosen in the Parents tab. CMA-ES proposes merge recipes (genomes); each candidate child "
        "is built in memory and scored on the **search** half of the tasks; the **held-out** half is used only for "
        "the final report. The run goes on in the background: close or reload this page and come back."
    )
    demo_tasks, extra_tasks, uploads, upload_weight = _task_inputs()
    search = _search_inputs()
    if not local_mode:
        from darwin_core.api import Quotas

        gr.Markdown(Quotas.from_env().markdown(), elem_id="evolve-limits")
    launch = gr.Button("Launch evolution", variant="primary", elem_id="evolve-launch")
    error = gr.Markdown(elem_id="evolve-error", elem_classes=["darwin-error"])
    settings = [demo_tasks, extra_tasks, uploads, upload_weight, *(search[name] for name in (
        "genome", "method", "population", "sigma0", "generations", "seed", "proxy_items", "topk_full", "frozen", "use_mri",
        "patience", "start", "selection"))]

    _follow_family(parent_inputs, [demo_tasks, search["genome"], search["method"], search["use_mri"]])
    _job_block(session_state, [*parent_inputs, *settings], runs_dir=runs_dir, local_mode=local_mode, zoo_dir=zoo_dir)
    header = gr.Markdown("No run yet: launch one, or open one in the Runs tab.", elem_id="evolve-header")
    with gr.Row():
        cancel = gr.Button("Cancel run", variant="stop", elem_id="evolve-cancel")
        resume = gr.Button("Resume run", elem_id="evolve-resume")
    notice = gr.Markdown(elem_id="evolve-notice")
    run_error = gr.Markdown(elem_id="evolve-run-error", elem_classes=["darwin-error"])
    with gr.Row():
        curve = gr.Plot(label="Fitness", elem_id="evolve-curve")
        stats = gr.Markdown(elem_id="evolve-stats")
    genome_plot = gr.Plot(label="Best genome", elem_id="evolve-genome-plot")
    rendered = gr.State(None)
    timer = gr.Timer(POLL_SECONDS, active=True)

    def launch_core(state, *args):
        *values, token, user = args
        state = session.ensure_session(state)
        run_id, message = guarded(lambda: launch_run(state, *values, runs_dir=runs_dir, local_mode=local_mode,
                                                     zoo_dir=zoo_dir, token=token, user=user), "launching a run")
        if run_id is None:
            return gr.skip(), message
        return session.with_run(state, run_id), ""

    launch.click(
        session.with_token(launch_core, ["state", "father_pick", "father_typed", "mother_pick", "mother_typed", *SETTING_NAMES]),
        inputs=[session_state, *parent_inputs, *settings], outputs=[session_state, error],
        api_name="evolve_launch", api_description="Queue an evolution of the chosen parents; returns the browser state with its run id.",
    )

    manage = functools.partial(_manager, runs_dir=runs_dir, local_mode=local_mode)
    cancel.click(manage("cancel"), inputs=[session_state], outputs=[notice, timer], api_name="evolve_cancel",
                 api_description="Cancel the page's current run (its owner only).")
    resume.click(manage("resume"), inputs=[session_state], outputs=[notice, timer], api_name="evolve_resume",
                 api_description="Resume the page's current run from its last checkpoint (its owner only).")

    job_checked = gr.State(0.0)
    _wire_live_view(timer, session_state, rendered, job_checked,
                    [header, run_error, curve, genome_plot, stats, timer, rendered, error, job_checked],
                    runs_dir=runs_dir, local_mode=local_mode)
    return {"launch": launch, "cancel": cancel, "resume": resume, "timer": timer, "header": header, "error": error}


def _wire_live_view(timer: gr.Timer, session_state: gr.BrowserState, rendered: gr.State, job_checked: gr.State,
                    outputs: list[gr.components.Component], *, runs_dir: Path, local_mode: bool) -> None:
    """Each tick re-draws the page's run when its folder changed (`signature`); `outputs` are header, run error,
    curve, genome, stats, the timer, the signature drawn, the launch error and the time the Job was last asked."""

    def poll_core(state, last, checked, token, user):
        run_id, _ = guarded(lambda: session.current_run(state), "reading the page's run")
        who = session.visitor(state, user)
        if run_id and time.time() - (checked or 0.0) >= JOB_CHECK_SECONDS:
            # a Job that died writes nothing more: ask the Hub now and then, or the run would look running for ever
            guarded(lambda: api.follow_hf_job(run_id, who, runs_dir=runs_dir, token=token, local_mode=local_mode),
                    "asking the Hub about the run's Job")
            checked = time.time()
        now = signature(run_id, runs_dir)
        if last is not None and now == last:
            return (gr.skip(),) * 8 + (checked,)
        if not run_id:
            return ("No run yet: launch one, or open one in the Runs tab.", "", None, None, "", gr.Timer(active=True), now,
                    gr.skip(), checked)
        view, message = guarded(lambda: render_run(run_id, runs_dir=runs_dir, who=who, local_mode=local_mode), "reading a run")
        if view is None:
            return (f"Run `{run_id}`", message, None, None, "", gr.Timer(active=False), now, gr.skip(), checked)
        return (view["header"], view["error"], view["curve"], view["genome"], view["stats"] + budget_markdown(runs_dir / run_id),
                gr.Timer(active=not view["final"]), now, gr.skip(), checked)

    timer.tick(session.with_token(poll_core, ["state", "last", "checked"]), inputs=[session_state, rendered, job_checked],
               outputs=outputs, api_visibility="private", show_progress="hidden")
    # A new current run (launched here, opened in the Runs tab, found again after a reload): render it at once.
    fresh = session.with_token(lambda state, token, user: poll_core(state, None, 0.0, token, user), ["state"])
    session_state.change(fresh, inputs=[session_state], outputs=outputs, api_visibility="private", show_progress="hidden")
