"""The Evolve tab's "Run as a Hugging Face Job" block: a flavour dropdown, an optional repo for the child, the
button and a status line.

The Job runs on the signed-in visitor's account with their OAuth token (the Space asks for the `jobs` scope);
the run folder lands in the runs folder the page already lists and polls, so the tab follows the Job's run as it
follows a local one (the launch returns the browser state with the new run id). What the form means as a breeding
config is the tab's business: it passes `make_config`, the same checks as a local breeding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core import api
from ui import session
from ui.common import guarded

AUTO = "auto (from the pair's size and the estimate)"
INPUT_NAMES = ("job_flavor", "job_push_repo")


@dataclass
class JobLaunch:
    """The block's components, for the tab to lay out events around (its launch is already wired)."""

    flavor: gr.Dropdown
    push_repo: gr.Textbox
    button: gr.Button
    status: gr.Markdown


def plan_sentence(run_id: str, plan: Any) -> str:
    """What the page says after a launch: which hardware, for how long at most, and why."""
    hours, minutes = divmod(int(plan.timeout_seconds) // 60, 60)
    limit = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
    return (f"Job started for run `{run_id}` on **{plan.flavor}** ({plan.gpus} GPU{'s' if plan.gpus > 1 else ''}, "
            f"about {plan.memory_per_gpu_gb:.0f} GB each; {plan.reason}); it stops after {limit} at most. "
            "It runs on your account and is billed to it; this page follows its run.")


def measured_seconds_per_candidate(config: Any, runs_dir: Path) -> float | None:
    """Seconds per evaluation from the cost estimate when an earlier run of these parents measured its speed (on
    this Space's device: a Job's GPU is at least as fast, so the timeout errs long); None leaves the launcher's
    estimate from the pair's size."""
    try:
        estimate = api.estimate_cost(config, runs_dir)
    except (api.DarwinError, OSError, ValueError):
        return None
    minutes = estimate.minutes
    return minutes * 60.0 / estimate.evaluations if minutes and estimate.evaluations else None


def launch_job_core(state: Any, *values: Any, make_config: Callable[..., Any], runs_dir: Path, local_mode: bool,
                    zoo_dir: str | Path | None) -> tuple[Any, str]:
    """The click: `values` are the tab's form values, then the flavour and the push repo, then (token, user)."""
    *form, flavor, push_repo, token, user = values
    state = session.ensure_session(state)

    def launch() -> tuple[str, Any]:
        config = make_config(state, *form, token=token, user=user)
        return api.launch_hf_job(config, session.visitor(state, user), runs_dir=runs_dir, token=token,
                                 local_mode=local_mode, flavor=None if not flavor or flavor == AUTO else flavor,
                                 push_repo=(push_repo or "").strip() or None, zoo_dir=zoo_dir,
                                 seconds_per_candidate=measured_seconds_per_candidate(config, runs_dir))

    launched, message = guarded(launch, "launching a Hugging Face Job")
    if launched is None:
        return gr.skip(), message
    run_id, plan = launched
    return session.with_run(state, run_id), plan_sentence(run_id, plan)


def build_job_launch(session_state: gr.BrowserState, form_inputs: Sequence[gr.components.Component],
                     form_names: Sequence[str], *, make_config: Callable[..., Any], runs_dir: Path, local_mode: bool,
                     zoo_dir: str | Path | None = None) -> JobLaunch:
    """Lay out the block where it is called (inside the Evolve tab) and wire its button.

    `make_config(state, *form_values, token=, user=)` returns the checked EvolutionConfig of the form (the tab's
    local-launch checks: parents, tasks staged into the runs folder, quotas); `form_names` name the values in
    the event's API.
    """
    with gr.Accordion("Run as a Hugging Face Job (your account, more GPUs)", open=False, elem_id="job-launch-block"):
        gr.Markdown("For a pair too big for this Space's GPU, or to go faster: the same breeding as a Hugging Face "
                    "Job on your own account, signed in with the *jobs* permission.")
        with gr.Row():
            flavor = gr.Dropdown([AUTO, *api.FLAVOR_NAMES], value=AUTO, label="Hardware", elem_id="job-flavor")
            push_repo = gr.Textbox(label="Push the child to (optional, private)", placeholder="you/your-child",
                                   elem_id="job-push-repo")
        button = gr.Button("Run as a Hugging Face Job", elem_id="job-launch")
        status = gr.Markdown(elem_id="job-status")

    def core(state: Any, *values: Any) -> tuple[Any, str]:
        return launch_job_core(state, *values, make_config=make_config, runs_dir=runs_dir, local_mode=local_mode,
                               zoo_dir=zoo_dir)

    button.click(session.with_token(core, ["state", *form_names, *INPUT_NAMES]),
                 inputs=[session_state, *form_inputs, flavor, push_repo], outputs=[session_state, status],
                 api_name="evolve_launch_job",
                 api_description="Run the form's breeding as a Hugging Face Job on the signed-in visitor's account.")
    return JobLaunch(flavor=flavor, push_repo=push_repo, button=button, status=status)
