"""Publish tab: the child's model card (generated from what the run measured, editable), then out it goes.

The card comes from `darwin_core.publishing.cardgen` (the run folder's recipe, report, health check, parents' licenses)
through `darwin_core.publishing.card.build_card`; the license warnings are shown above it. Push uploads the child folder
with the card as its README: on a Space with the visitor's own OAuth token ("Sign in with Hugging Face" at the top
of the page; an expired sign-in asks to sign in again), locally with HF_TOKEN. The token is passed to
`darwin_core.publishing.push.push_to_hub` and nowhere else: never into the run folder, a log line or the page. Download
as a zip and (local mode only) save to a folder are the other ways out. Only the run's owner may do any of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from darwin_core import api
from darwin_core.api import DarwinError
from darwin_core.api import CHILD, FINISHED
from ui import session
from ui.common import guarded, on_space

ZIPS = "darwin-zips"


def _run_with_child(state: Any, runs_dir: Path) -> tuple[str, Path]:
    run_id = session.current_run(state)
    if not run_id:
        raise DarwinError("Open a run first (Evolve or Runs tab): publishing needs a finished run's child.")
    run = api.read_run(run_id, runs_dir)
    if run["state"] != FINISHED or not run.get("child_dir"):
        raise DarwinError(f"Run {run_id} is {run['state']}; its child can be published once the run has finished.")
    return run_id, runs_dir / run_id


def card_preview(state: Any, repo_id: str | None, *, runs_dir: Path, zoo_dir: str | Path | None) -> tuple[str, str, str]:
    """(header, license warnings markdown, card text) for the page's current run.

    Open to every visitor (a watcher may read any run's card), so it only reads: nothing is written into the run
    folder, and the card names no path of this machine (see darwin_core.publishing.cardgen)."""
    run_id, folder = _run_with_child(state, runs_dir)
    text, warnings = api.card_text(folder, repo_id=(repo_id or "").strip() or None, zoo_dir=zoo_dir)
    header = f"**Run `{run_id}`** — the card below is generated from what the run measured; edit it freely before publishing."
    return header, "\n\n".join(f"**⚠ License:** {w}" for w in warnings), text


def _owned_child(state: Any, user: str | None, action: str, *, runs_dir: Path, local_mode: bool) -> tuple[str, Path]:
    run_id, folder = _run_with_child(state, runs_dir)
    session.require_owner(folder, session.visitor(state, user), session.app_secret(runs_dir), local_mode=local_mode, action=action)
    return run_id, folder


def _with_card(folder: Path, card: str | None, repo_id: str | None, zoo_dir: str | Path | None) -> None:
    """Write the card (the edited one, else a fresh one) as the child's README, with its pictures: the only write
    into the child folder, reached through an owner-checked action (push, zip, save)."""
    text = card if card and card.strip() else api.card_text(folder, repo_id=repo_id, zoo_dir=zoo_dir)[0]
    api.write_card(folder, text)


def push(state: Any, repo_id: str | None, private: bool, card: str | None, *, token: str | None, user: str | None,
         runs_dir: Path, local_mode: bool, zoo_dir: str | Path | None, endpoint: str | None) -> str:
    """Publish the current run's child; returns the markdown with the repo link."""
    _, folder = _owned_child(state, user, "publish", runs_dir=runs_dir, local_mode=local_mode)
    repo = (repo_id or "").strip()
    if not repo:
        raise DarwinError("Give the repository a name (e.g. my-darwin-child or your-name/my-darwin-child).")
    if not token:
        if on_space():
            raise DarwinError("Sign in with Hugging Face (the button at the top of the page) to publish; if you were signed in, the sign-in has expired: sign in again.")
        raise DarwinError("Set HF_TOKEN (a token with write access) in the environment that runs Darwin to publish.")
    if "/" not in repo and user:
        repo = f"{user}/{repo}"
    _with_card(folder, card, repo, zoo_dir)
    url = api.push_to_hub(folder / CHILD, repo, token=token, private=bool(private), endpoint=endpoint)
    if not private:  # public on the Hub now: anyone may breed from it (darwin_core.parents, `run:` parents)
        api.mark_published(folder, repo, url)
    return f"✅ Published: [{url}]({url})" + (" (private)" if private else "")


def zip_download(state: Any, card: str | None, *, user: str | None, runs_dir: Path, local_mode: bool,
                 zoo_dir: str | Path | None) -> str:
    run_id, folder = _owned_child(state, user, "download", runs_dir=runs_dir, local_mode=local_mode)
    _with_card(folder, card, None, zoo_dir)
    # One zip per run, replaced on each download (bounded disk use), in the temp folder: Gradio serves files from
    # there whatever the runs folder is (a mounted bucket outside the working and temp folders is refused).
    import hashlib
    import tempfile

    where = hashlib.sha256(str(runs_dir.resolve()).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / ZIPS / where / f"darwin-child-{run_id}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(api.zip_child(folder / CHILD, target))


def save_local(state: Any, destination: str | None, card: str | None, *, user: str | None, runs_dir: Path,
               local_mode: bool, zoo_dir: str | Path | None) -> str:
    if not local_mode:
        raise DarwinError("Saving to a folder is only possible when Darwin runs locally; download the zip instead.")
    _, folder = _owned_child(state, user, "save", runs_dir=runs_dir, local_mode=local_mode)
    if not (destination or "").strip():
        raise DarwinError("Give the folder to save the child in.")
    _with_card(folder, card, None, zoo_dir)
    saved = api.save_locally(folder / CHILD, Path(destination.strip()).expanduser())
    return f"✅ Saved to `{saved}` (load it with `AutoModelForCausalLM.from_pretrained(\"{saved}\")`)."


def build_publish_tab(demo: gr.Blocks, session_state: gr.BrowserState, *, runs_dir: str | Path, local_mode: bool,
                      zoo_dir: str | Path | None = None, hub_endpoint: str | None = None,
                      tab: gr.Tab | None = None) -> dict[str, Any]:
    """Lay out the Publish tab for the page's current run; `hub_endpoint` overrides the Hub's URL (tests);
    `tab` (its gr.Tab) regenerates the card when the tab is selected."""
    runs_dir = Path(runs_dir)
    sign_in = ("Sign in with Hugging Face (top of the page) to push with your own account; the Space never uses its own token for you."
               if on_space() else "Pushing uses the HF_TOKEN of the environment that runs Darwin.")
    gr.Markdown(f"Publish the current run's child with its model card. {sign_in}")
    header = gr.Markdown(elem_id="publish-header")
    warnings = gr.Markdown(elem_id="publish-warnings")
    error = gr.Markdown(elem_id="publish-error", elem_classes=["darwin-error"])
    with gr.Row():
        repo = gr.Textbox(label="Repository", placeholder="my-darwin-child or your-name/my-darwin-child", elem_id="publish-repo")
        private = gr.Checkbox(True, label="Private", elem_id="publish-private")
        regenerate = gr.Button("Regenerate card", elem_id="publish-regenerate")
    with gr.Row():
        card = gr.Textbox(label="Model card (markdown, editable)", lines=24, max_lines=60, elem_id="publish-card")
        preview = gr.Markdown(elem_id="publish-preview", label="Preview")
    with gr.Row():
        push_button = gr.Button("Push to the Hub", variant="primary", elem_id="publish-push")
        zip_button = gr.Button("Download as zip", elem_id="publish-zip")
    result = gr.Markdown(elem_id="publish-result")
    zip_file = gr.File(label="Child (zip)", interactive=False, elem_id="publish-zip-file")
    with gr.Row(visible=local_mode):
        destination = gr.Textbox(label="Save to folder (on this machine)", placeholder="/path/to/child", elem_id="publish-dest")
        save_button = gr.Button("Save locally", elem_id="publish-save")

    def on_preview(state, repo_id):
        found, message = guarded(lambda: card_preview(state, repo_id, runs_dir=runs_dir, zoo_dir=zoo_dir), "generating the card")
        if found is None:
            return "", "", message, "", ""
        head, warn, text = found
        return head, warn, "", text, _preview(text, state, runs_dir)

    preview_outputs = [header, warnings, error, card, preview]
    regenerate.click(on_preview, inputs=[session_state, repo], outputs=preview_outputs, api_name="publish_card",
                     api_description="The model card of the page's current run, generated from its run folder.")
    session_state.change(on_preview, inputs=[session_state, repo], outputs=preview_outputs, api_visibility="private",
                         show_progress="hidden")
    if tab is not None:
        tab.select(on_preview, inputs=[session_state, repo], outputs=preview_outputs, api_visibility="private",
                   show_progress="hidden")
    card.input(lambda text, state: _preview(text, state, runs_dir), inputs=[card, session_state], outputs=[preview],
               api_visibility="private", show_progress="hidden", trigger_mode="always_last")

    def push_core(state, repo_id, is_private, text, token, user):
        url, message = guarded(lambda: push(state, repo_id, is_private, text, token=token, user=user, runs_dir=runs_dir,
                                            local_mode=local_mode, zoo_dir=zoo_dir, endpoint=hub_endpoint), "publishing")
        return url or message

    push_button.click(session.with_token(push_core, ["state", "repo_id", "private", "card"]), inputs=[session_state, repo, private, card], outputs=[result],
                      api_name="publish_push", api_description="Push the current run's child with its card to the Hub (its owner only).")

    def zip_core(state, text, token, user):
        path, message = guarded(lambda: zip_download(state, text, user=user, runs_dir=runs_dir, local_mode=local_mode,
                                                     zoo_dir=zoo_dir), "zipping the child")
        return (path, "✅ The zip is ready below.") if path else (None, message)

    zip_button.click(session.with_token(zip_core, ["state", "card"]), inputs=[session_state, card], outputs=[zip_file, result],
                     api_name="publish_zip", api_description="The current run's child as a zip (its owner only).")

    def save_core(state, dest, text, token, user):
        done, message = guarded(lambda: save_local(state, dest, text, user=user, runs_dir=runs_dir, local_mode=local_mode,
                                                   zoo_dir=zoo_dir), "saving the child")
        return done or message

    save_button.click(session.with_token(save_core, ["state", "destination", "card"]), inputs=[session_state, destination, card], outputs=[result],
                      api_name="publish_save", api_description="Copy the current run's child to a local folder (local mode, its owner only).")
    return {"card": card, "push": push_button, "result": result, "zip": zip_button, "save": save_button}


def _preview(text: str | None, state: Any, runs_dir: Path) -> str:
    """The preview: the card's body with its pictures inlined (in the repo they sit beside the README; here the
    page has no URL for them), drawn in memory from the page's current run — anyone may preview any run's card,
    so previewing writes nothing into its folder."""
    body = _body(text)
    found, _ = guarded(lambda: _run_with_child(state, runs_dir), "finding the run")
    if found is None:
        return body
    return api.inline_pictures(body, found[1])


def _body(text: str | None) -> str:
    """The card without its YAML metadata header, for the preview (the Hub renders the metadata separately)."""
    text = text or ""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            meta = text[3:end].strip()
            return f"```yaml\n{meta}\n```\n" + text[end + 4:]
    return text
