"""Try-it tab: talk to the current run's child (or a candidate, or a parent) beside both parents, before publishing.

One prompt is answered by three models side by side: the one chosen (the child by default, any candidate the
search measured, or a parent) and the father and the mother, greedy or sampled, wrapped in the father's chat
template when his tokenizer has one. Generating loads each model in turn, so it is a job of the worker
(`api.chat`), queued behind any evolution, scan or health check; a `gr.Timer` polls until the answers are
there, and the same prompt with the same settings is answered from the stored result at once. Off local mode
only the run's owner may generate (anyone once the child is published), and the prompt is bounded by the
server's prompt_chars quota.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core import api
from darwin_core.api import DarwinError
from ui import session
from ui.common import guarded

POLL_SECONDS = 1.0
ANSWER_BOXES = 3
DECODING = [("greedy (the same answer every time)", "greedy"), ("sampled", "sampled")]
PARENTS = ("father", "mother")


def model_dropdown(run_id: str | None, runs_dir: Path) -> tuple[str, dict[str, Any]]:
    """(header, the dropdown's update) for the page's current run: its child first, then parents and candidates."""
    if not run_id:
        return "Open a run first (Evolve or Runs tab): its child and both parents answer here.", gr.update(choices=[], value=None)
    choices = api.chat_models(run_id, runs_dir)
    names = [name for _, name in choices]
    if "child" not in names:
        header = f"**Run `{run_id}`** has no child yet; its parents and measured candidates can answer already."
    else:
        header = f"**Run `{run_id}`** — its child, the father and the mother answer the same prompt side by side."
    return header, gr.update(choices=choices, value=names[0] if names else None)


def sampling_settings(decoding: str, temperature: Any, max_new_tokens: Any) -> dict[str, Any]:
    try:
        tokens = int(max_new_tokens)
    except (TypeError, ValueError):
        raise DarwinError("The answer length is a whole number of tokens.") from None
    settings: dict[str, Any] = {"sample": decoding == "sampled", "max_new_tokens": tokens}
    if decoding == "sampled":
        settings["temperature"] = float(temperature)
    return settings


def start_chat(state: Any, chosen: str | None, prompt: str | None, decoding: str, temperature: Any,
               max_new_tokens: Any, *, user: str | None, runs_dir: Path, local_mode: bool) -> dict[str, Any]:
    """Queue the prompt for the chosen model and both parents (or find the stored answers); returns the job."""
    run_id = session.current_run(state)
    if not run_id:
        raise DarwinError("Open a run first (Evolve or Runs tab): its child and both parents answer here.")
    if not chosen:
        raise DarwinError("Choose which model answers beside the parents.")
    who = session.visitor(state, user)
    if not api.may_breed_from(run_id, runs_dir=runs_dir, who=who, secret=session.app_secret(runs_dir), local_mode=local_mode):
        session.require_owner(runs_dir / run_id, who, session.app_secret(runs_dir), local_mode=local_mode,
                              action="talk to the models of")
    models = list(dict.fromkeys([chosen, *PARENTS]))
    job = api.chat(run_id, prompt or "", models, sampling_settings(decoding, temperature, max_new_tokens),
                   local_mode=local_mode, runs_dir=runs_dir)
    return {"job": job, "models": models}


def answer_updates(answers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One update per answer box: the model's label as the box's title and its answer as the text."""
    updates = [gr.update(label=a["label"], value=a["answer"]) for a in answers[:ANSWER_BOXES]]
    return updates + [gr.update(label="—", value="")] * (ANSWER_BOXES - len(updates))


def poll_chat(job: Mapping | None, *, runs_dir: Path) -> tuple:
    """Timer tick: (status, timer, one update per answer box) — gr.skip() while the answers are not there."""
    skip = (gr.skip(),) * ANSWER_BOXES
    if not job:
        return ("", gr.Timer(active=False), *skip)
    state, payload = api.job_result(job["job"], runs_dir)
    if state == "queued":
        return ("Waiting for the device: another job (an evolution, a scan or a health check) runs first.",
                gr.Timer(active=True), *skip)
    if state in ("starting", "running"):
        return (f"Generating with {', '.join(job['models'])}… (one model at a time)", gr.Timer(active=True), *skip)
    if state == "failed":
        return (f"**⚠ {payload}**", gr.Timer(active=False), *skip)
    if state != "finished":
        return ("The generation stopped before it finished (the server restarted?); press Generate again.",
                gr.Timer(active=False), *skip)
    seconds = sum(float(a.get("seconds") or 0) for a in payload["answers"])
    template = "the father's chat template" if payload.get("templated") else "the raw prompt (the father's tokenizer has no chat template)"
    return (f"Answered in {seconds:.1f} s on {payload.get('device')}, from {template}.", gr.Timer(active=False),
            *answer_updates(payload["answers"]))


def build_try_it_tab(demo: gr.Blocks, session_state: gr.BrowserState, *, runs_dir: str | Path, local_mode: bool,
                     tab: gr.Tab | None = None) -> dict[str, Any]:
    """Lay out the Try-it tab for the page's current run; `tab` (its gr.Tab) refreshes the model list when selected."""
    runs_dir = Path(runs_dir)
    gr.Markdown(
        "Talk to the child before you publish it: the same prompt goes to the child (or any candidate the search "
        "measured) and to both parents, and their answers appear side by side."
    )
    header = gr.Markdown(elem_id="try-header")
    with gr.Row():
        chosen = gr.Dropdown(choices=[], label="Beside the parents, the answer of", elem_id="try-model", scale=3)
        decoding = gr.Radio(DECODING, value="greedy", label="Decoding", elem_id="try-decoding", scale=2)
        temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampled)", elem_id="try-temperature")
        max_new_tokens = gr.Number(value=64, precision=0, minimum=1, maximum=1024, label="Answer length (tokens)",
                                   elem_id="try-tokens")
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="rev: hello =", elem_id="try-prompt")
    generate = gr.Button("Generate", variant="primary", elem_id="try-generate")
    status = gr.Markdown(elem_id="try-status")
    with gr.Row(equal_height=True):
        boxes = [gr.Textbox(label=label, lines=6, interactive=False, elem_id=f"try-answer-{i}")
                 for i, label in enumerate(("the chosen model", "the father", "the mother"))]
    job = gr.State(None)
    timer = gr.Timer(POLL_SECONDS, active=False)

    def refresh(state):
        found, message = guarded(lambda: model_dropdown(session.current_run(state), runs_dir), "listing the run's models")
        return found if found is not None else (message, gr.skip())

    def on_generate(state, chosen_name, text, how, temp, tokens, token, user):
        found, error = guarded(lambda: start_chat(state, chosen_name, text, how, temp, tokens, user=user, runs_dir=runs_dir,
                                                  local_mode=local_mode), "starting a chat")
        if found is None:
            return None, error, gr.Timer(active=False)
        return found, "Starting…", gr.Timer(active=True)

    generate.click(
        session.with_token(on_generate, ["state", "model", "prompt", "decoding", "temperature", "max_new_tokens"]),
        inputs=[session_state, chosen, prompt, decoding, temperature, max_new_tokens], outputs=[job, status, timer],
        api_name="try_generate", api_description="Ask the current run's chosen model and both parents one prompt.",
    )
    timer.tick(lambda found: poll_chat(found, runs_dir=runs_dir), inputs=[job], outputs=[status, timer, *boxes],
               api_visibility="private", show_progress="hidden")
    session_state.change(refresh, inputs=[session_state], outputs=[header, chosen], api_visibility="private",
                         show_progress="hidden")
    if tab is not None:
        tab.select(refresh, inputs=[session_state], outputs=[header, chosen], api_visibility="private",
                   show_progress="hidden")
    return {"generate": generate, "status": status, "answers": boxes, "model": chosen, "timer": timer}
