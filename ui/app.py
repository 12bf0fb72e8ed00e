"""The Darwin page: one tab per step of breeding, read top to bottom like the page it draws.

The UI holds no breeding logic: each tab calls darwin_core and renders what comes back. Long work (evolution)
runs in a worker that writes a run folder; the page polls the folder, so a reload finds the run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core import api
from darwin_core.api import runs_dir_default
from ui import session
from ui.tabs import evolve, health, mri, parents, publish, runs, try_it
from ui.common import local_mode_default, on_space, server_name_default

THEME = gr.themes.Soft(primary_hue="emerald", secondary_hue="sky")
CSS = """
.darwin-error { color: var(--error-text-color); }
"""

INTRO = (
    "# Darwin\n"
    "Breed a language model from two parents by recombining their weights — no gradient step. "
    "Pick a father and a mother, scan where their skills live, let CMA-ES search layer-wise merge recipes "
    "against a fitness benchmark, check the child's health, talk to it beside its parents, and publish it with a "
    "model card."
)


def build_demo(*, runs_dir: str | Path | None = None, local_mode: bool | None = None, zoo_dir: str | Path | None = None) -> gr.Blocks:
    """Build the whole page; nothing is read from the runs folder (beyond its session secret) or the Hub until an
    event asks for it.

    runs_dir defaults to DARWIN_RUNS_DIR or ./runs; local_mode (local folders allowed as parents) defaults to
    "not on a Space"; zoo_dir points at another demo zoo (tests), default the shipped assets/zoo/.
    """
    runs_dir = runs_dir_default(runs_dir)
    local_mode = local_mode_default() if local_mode is None else local_mode
    if not local_mode:
        # A public server acts for visitors only with their own tokens: its own leaves the process for good.
        from darwin_core.api import seal_ambient_token

        seal_ambient_token()
    api.start_worker_if_queued(runs_dir)  # runs queued before a restart start now, not at the next launch
    # Resolve transformers' lazy attributes once, here: handlers and background scans run in threads, and two
    # threads resolving the same lazy attribute at once can fail with an ImportError.
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    with gr.Blocks(title="Darwin") as demo:
        # The browser's session id and the page's current run (kept in localStorage: a reload finds the run again).
        state = session.browser_state(runs_dir)
        session.attach(demo, state)
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                gr.Markdown(INTRO)
            if on_space():
                # Created only on a Space: elsewhere Gradio mocks OAuth by calling the Hub at build time.
                with gr.Column(scale=1, min_width=180):
                    gr.LoginButton()
        with gr.Tabs():
            with gr.Tab("Parents", id="parents"):
                parent_inputs = parents.build_parents_tab(demo, local_mode=local_mode, zoo_dir=zoo_dir, runs_dir=runs_dir)
            with gr.Tab("MRI", id="mri"):
                mri.build_mri_tab(demo, parent_inputs, runs_dir=runs_dir, local_mode=local_mode, zoo_dir=zoo_dir)
            with gr.Tab("Evolve", id="evolve"):
                evolve.build_evolve_tab(demo, state, parent_inputs, runs_dir=runs_dir, local_mode=local_mode,
                                            zoo_dir=zoo_dir)
            with gr.Tab("Health", id="health") as tab:
                health.build_health_tab(demo, state, runs_dir=runs_dir, local_mode=local_mode, tab=tab)
            with gr.Tab("Try it", id="try-it") as tab:
                try_it.build_try_it_tab(demo, state, runs_dir=runs_dir, local_mode=local_mode, tab=tab)
            with gr.Tab("Publish", id="publish") as tab:
                publish.build_publish_tab(demo, state, runs_dir=runs_dir, local_mode=local_mode, zoo_dir=zoo_dir,
                                              tab=tab)
            with gr.Tab("Runs", id="runs") as tab:
                runs.build_runs_tab(demo, state, runs_dir=runs_dir, tab=tab, local_mode=local_mode)
    return demo


def launch_kwargs() -> dict[str, Any]:
    """What app.py passes to launch(): in Gradio 6 theme and css belong to launch(), not to Blocks()."""
    kwargs: dict[str, Any] = {"server_name": server_name_default(), "theme": THEME, "css": CSS}
    if not local_mode_default():  # Gradio refuses bigger uploads at /gradio_api/upload, before they reach a disk
        from darwin_core.api import Quotas

        kwargs["max_file_size"] = Quotas.from_env().upload_bytes
    return kwargs
