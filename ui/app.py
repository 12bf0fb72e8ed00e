"""The Darwin page: one tab per step of breeding, read top to bottom like the page it draws.

The UI holds no breeding logic: each tab calls darwin_core and renders what comes back. Long work (evolution)
runs in a worker that writes a run folder; the page polls the folder, so a reload finds the run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core.jobs import runs_dir_default
from ui import parents
from ui.common import local_mode_default, on_space, server_name_default

THEME = gr.themes.Soft(primary_hue="emerald", secondary_hue="sky")
CSS = """
.darwin-error { color: var(--error-text-color); }
"""

INTRO = (
    "# Darwin\n"
    "Breed a language model from two parents by recombining their weights — no gradient step. "
    "Pick a father and a mother, scan where their skills live, let CMA-ES search layer-wise merge recipes "
    "against a fitness benchmark, check the child's health, and publish it with a model card."
)

# The tabs that are still being built say what they will hold and nothing more: no widget that does nothing.
COMING = {
    "MRI": "Where each parent's skills live: per-layer probe importance, weight statistics and parent "
    "divergence, and the merge ratios they prescribe.",
    "Evolve": "A CMA-ES search over merge recipes against a fitness benchmark, with live curves read from the "
    "run folder, so it keeps going when this tab is closed.",
    "Health": "The child against both parents, layer by layer: interference, function loss, NaN/Inf, "
    "perplexity and a degeneration check, with a verdict.",
    "Publish": "The model card (recipe, genealogy, held-out results with intervals) and a push to the Hub "
    "— signed in on a Space, with HF_TOKEN locally — or a local copy.",
}


def build_demo(*, runs_dir: str | Path | None = None, local_mode: bool | None = None, zoo_dir: str | Path | None = None) -> gr.Blocks:
    """Build the whole page; nothing is read from the runs folder or the Hub until an event asks for it.

    runs_dir defaults to DARWIN_RUNS_DIR or ./runs; local_mode (local folders allowed as parents) defaults to
    "not on a Space"; zoo_dir points at another demo zoo (tests), default the shipped assets/zoo/.
    """
    runs_dir = runs_dir_default(runs_dir)
    local_mode = local_mode_default() if local_mode is None else local_mode
    with gr.Blocks(title="Darwin") as demo:
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                gr.Markdown(INTRO)
            if on_space():
                # Created only on a Space: elsewhere Gradio mocks OAuth by calling the Hub at build time.
                with gr.Column(scale=1, min_width=180):
                    gr.LoginButton()
        with gr.Tabs():
            with gr.Tab("Parents", id="parents"):
                parents.build_parents_tab(demo, local_mode=local_mode, zoo_dir=zoo_dir)
            for title, text in COMING.items():
                with gr.Tab(title, id=title.lower()):
                    gr.Markdown(f"{text}\n\n*Not available yet.*")
            with gr.Tab("Runs", id="runs"):
                gr.Markdown(
                    f"Every run — started here or with `python -m darwin_core` — is a folder under `{runs_dir}` "
                    "(set by DARWIN_RUNS_DIR). This tab will list them with their status and results.\n\n"
                    "*Not available yet.*"
                )
    return demo


def launch_kwargs() -> dict[str, Any]:
    """What app.py passes to launch(): in Gradio 6 theme and css belong to launch(), not to Blocks()."""
    return {"server_name": server_name_default(), "theme": THEME, "css": CSS}
