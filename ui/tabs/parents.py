"""Parents tab: pick a father and a mother, see what each is, and whether they can be bred.

Each parent is one of the embedded demo parents or a child of an earlier finished run (both picked from a
dropdown; they live on the server, so they are allowed on a Space too) or a Hub id / local folder typed in the
text field (a typed value wins). What a
model *is* (architecture, layers, hidden size, parameters, bytes, dtype) comes from `darwin_core.parents.hub`, which
reads the config and safetensors headers without downloading weights; the demo parents' held-out accuracies
come from the zoo manifest, measured when the zoo was built. The UI only renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from darwin_core import api
from darwin_core.api import DEMO_PREFIX
from darwin_core.api import RUN_PREFIX as CHILD_PREFIX
from ui.common import chosen_ref, guarded, human_bytes, human_count, percent
from ui.session import with_token

DEFAULT_FATHER = f"{DEMO_PREFIX}father"
DEFAULT_MOTHER = f"{DEMO_PREFIX}mother"
FACTS_HEADERS = ["", "Father", "Mother"]
COMPAT_HEADERS = ["", "Father", "Mother", "Same"]


@dataclass(frozen=True)
class ParentFacts:
    """What the tab shows about one parent; None / empty = not known (shown as a dash)."""

    label: str
    architecture: str | None
    layers: int | None
    hidden_size: int | None
    parameters: int | None
    bytes: int | None
    dtype: str | None
    heldout_accuracy: dict[str, float] = field(default_factory=dict)
    composite: float | None = None
    license: str | None = None
    access: str | None = None  # public / gated / private (Hub models); local for folders


# ------------------------------------------------------------------------------------------- demo zoo


def load_demo_zoo(zoo_dir: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """The zoo manifest and the member folders (raises DarwinError when the zoo is missing or incomplete)."""

    root = Path(zoo_dir) if zoo_dir is not None else api.DEFAULT_ZOO_DIR
    return api.load_zoo_manifest(root), api.zoo_paths(root)


def demo_choices(manifest: dict[str, Any], folders: dict[str, Path]) -> list[tuple[str, str]]:
    """Dropdown entries (label, value) for the demo models that ship as folders."""
    models = manifest.get("models", {})
    skills = manifest.get("skills", [])
    choices = []
    for name in folders:
        entry = models.get(name, {})
        best = [s for s in skills if entry.get("heldout_accuracy", {}).get(s) is not None]
        note = f" — {entry.get('architecture', '?')}" + (f", {len(best)} skills measured" if best else "")
        choices.append((f"demo {name}{note}", f"{DEMO_PREFIX}{name}"))
    return choices


def child_choices(runs_dir: str | Path | None) -> list[tuple[str, str]]:
    """Children of this app's finished runs, newest first, as dropdown (label, value) pairs."""

    if runs_dir is None:
        return []
    choices = []
    for run in api.list_runs(runs_dir):
        if run["state"] == "finished" and (Path(run["path"]) / "child" / "config.json").is_file():
            fitness = run.get("best_fitness")
            note = f" — search fitness {fitness:.4f}" if isinstance(fitness, (int, float)) else ""
            choices.append((f"child of run {run['run_id']}{note}", f"{CHILD_PREFIX}{run['run_id']}"))
    return choices


def parent_choices(zoo_dir: str | Path | None, runs_dir: str | Path | None) -> list[tuple[str, str]]:
    """What the parent dropdowns offer: the demo parents, then earlier children (nothing when the zoo is missing)."""
    zoo, _ = guarded(lambda: load_demo_zoo(zoo_dir), "loading the demo zoo")
    return (demo_choices(*zoo) if zoo is not None else []) + child_choices(runs_dir)




# ------------------------------------------------------------------------------------------- resolving


def resolve_parent(ref: str, *, local_mode: bool, token: str | None, zoo_dir: str | Path | None = None,
                   runs_dir: str | Path | None = None, may_breed_run: Any = None):
    """(ModelRef, ParentFacts) for a demo name ("demo:father"), an earlier child ("run:<id>") or a Hub id / folder.

    Every scheme resolves in darwin_core.parents; may_breed_run(run_id) is the visitor's right to a `run:` child.
    """
    from darwin_core.api import Scheme, parse_parent, resolve_parent_name

    name = parse_parent(ref, local_mode=local_mode)
    model = resolve_parent_name(ref, local_mode=local_mode, token=token, runs_dir=runs_dir, zoo_dir=zoo_dir,
                                may_breed_run=may_breed_run)
    if name.scheme is Scheme.RUN:
        return model, _facts(model, f"child of run {name.target}", {})
    if name.scheme is Scheme.DEMO:
        manifest, _ = load_demo_zoo(zoo_dir)
        return model, _facts(model, f"demo {name.target}", manifest.get("models", {}).get(name.target, {}))
    return model, _facts(model, ref, {})


def _facts(model: Any, label: str, zoo_entry: dict[str, Any]) -> ParentFacts:
    """ParentFacts from a api.ModelRef plus, for demo parents, the zoo manifest's measured accuracies."""
    family = model.text_model_type
    architecture = model.architecture if family == model.architecture else f"{model.architecture} ({family})"
    return ParentFacts(
        label=label,
        architecture=architecture,
        layers=model.num_layers,
        hidden_size=model.hidden_size,
        parameters=model.parameters or None,
        bytes=model.bytes or None,
        dtype=stored_dtypes(model.tensors),
        heldout_accuracy=dict(zoo_entry.get("heldout_accuracy") or {}),
        composite=zoo_entry.get("composite"),
        license=model.license,
        access="local" if model.local else "private" if model.private else "gated" if model.gated else "public",
    )


def stored_dtypes(tensors: dict[str, tuple[tuple[int, ...], str]]) -> str | None:
    """The dtypes the weights are stored in, the one holding most parameters first ("BF16, F32")."""
    counts: dict[str, int] = {}
    for shape, dtype in tensors.values():
        counts[dtype] = counts.get(dtype, 0) + math.prod(shape)
    return ", ".join(sorted(counts, key=lambda d: -counts[d])) or None


# ------------------------------------------------------------------------------------------- rendering


def facts_table(father: ParentFacts, mother: ParentFacts) -> pd.DataFrame:
    """One row per fact, one column per parent; accuracy rows for every skill either parent was measured on."""
    rows: list[list[str]] = [
        ["Model", father.label, mother.label],
        ["Architecture", father.architecture or "—", mother.architecture or "—"],
        ["Layers", _text(father.layers), _text(mother.layers)],
        ["Hidden size", _text(father.hidden_size), _text(mother.hidden_size)],
        ["Parameters", human_count(father.parameters), human_count(mother.parameters)],
        ["Weights on disk", human_bytes(father.bytes), human_bytes(mother.bytes)],
        ["Dtype", father.dtype or "—", mother.dtype or "—"],
        ["License", father.license or "—", mother.license or "—"],
        ["Access", father.access or "—", mother.access or "—"],
    ]
    skills = list(dict.fromkeys([*father.heldout_accuracy, *mother.heldout_accuracy]))
    for skill in skills:
        rows.append([f"Held-out accuracy: {skill}", percent(father.heldout_accuracy.get(skill)), percent(mother.heldout_accuracy.get(skill))])
    if father.composite is not None or mother.composite is not None:
        rows.append(["Held-out composite (mean)", percent(father.composite), percent(mother.composite)])
    return pd.DataFrame(rows, columns=FACTS_HEADERS)


VERDICTS = {
    "full": "Breedable: every tensor can be blended.",
    "wrapper": "Breedable by canonical name: the language tensors pair across the multimodal wrapper.",
    "ffn_only": "Breedable, feed-forward only: the FFNs are bred, everything else stays the father's.",
    "incompatible": "Not breedable.",
}


def compatibility_view(father: Any, mother: Any, compat: Any) -> tuple[pd.DataFrame, str]:
    """What decides compatibility, side by side, and the verdict with api.compatibility's reason."""
    def row(name: str, a: Any, b: Any) -> list[str]:
        return [name, _text(a), _text(b), "yes" if a == b else "no"]

    languages = [sum(1 for n in ref.tensors if api.classify(n).tower == "language") for ref in (father, mother)]
    rows = [
        row("Family", father.text_model_type, mother.text_model_type),
        row("Layers", father.num_layers, mother.num_layers),
        row("Hidden size", father.hidden_size, mother.hidden_size),
        row("Vocabulary", father.vocab_size, mother.vocab_size),
        row("Language-model tensors", *languages),
        row("License", father.license, mother.license),
    ]
    verdict = f"**{VERDICTS.get(compat.verdict, compat.verdict)}** {compat.reason}"
    if compat.differing:
        shown = ", ".join(f"`{name}`" for name in compat.differing[:5])
        verdict += f"\n\nDiffering tensors: {shown}" + (" …" if len(compat.differing) > 5 else "")
    return pd.DataFrame(rows, columns=COMPAT_HEADERS), verdict


RELATIONS = {
    "same": "The parents' tokenizers have the same vocabulary.",
    "mother_adds": "The mother's vocabulary is the father's plus tokens of her own.",
    "father_adds": "The father's vocabulary is the mother's plus tokens of his own.",
    "different": "The parents' vocabularies differ.",
    "unknown": "",
}


def tokenizer_view(father: Any, mother: Any) -> tuple[str, str]:
    """(the tokenizer report as markdown, the broken-tokenizer sentence or "") for two resolved parents.

    Tokenizers are read only from folders on this machine (demo parents, earlier children, local folders, Hub
    models in the cache); for a parent not downloaded yet the report says they are compared when a run fetches it.
    """
    folders = [getattr(model, "folder", None) for model in (father, mother)]
    if None in folders:
        return "**Tokenizers:** compared when a run downloads the parents.", ""
    report = api.tokenizer_report(folders[0], folders[1])
    lines = [RELATIONS.get(report.relation.value, "")] + list(report.differences)
    if report.relation.value not in ("same", "unknown"):
        lines.append("The child speaks the father's vocabulary unless the recipe sets `tokenizer_source: mother` "
                     "or `union` (embedding and head rows aligned by token, as mergekit does).")
    text = "**Tokenizers:** " + " ".join(line for line in lines if line)
    if report.findings:
        text += "\n\n**Broken tokenizer:** " + " ".join(report.findings)
    return text, report.findings[0] if report.findings else ""


def _text(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else str(value)


def inspect_parents(father_pick: str | None, father_typed: str | None, mother_pick: str | None, mother_typed: str | None,
                    *, local_mode: bool, token: str | None, zoo_dir: str | Path | None = None,
                    runs_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    """Everything the tab shows: (facts table, compatibility table, verdict, error message)."""

    def work() -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
        father_ref = chosen_ref(father_pick, father_typed, "father")
        mother_ref = chosen_ref(mother_pick, mother_typed, "mother")
        father, father_facts = resolve_parent(father_ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
        mother, mother_facts = resolve_parent(mother_ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
        compat_table, verdict = compatibility_view(father, mother, api.compatibility(father, mother))
        tokenizers, broken = tokenizer_view(father, mother)  # a broken tokenizer: its sentence in the error line
        return facts_table(father_facts, mother_facts), compat_table, verdict + "\n\n" + tokenizers, f"**⚠ {broken}**" if broken else ""

    result, error = guarded(work, "inspecting the parents")
    if result is None:
        return pd.DataFrame(columns=FACTS_HEADERS), pd.DataFrame(columns=COMPAT_HEADERS), "", error
    return result


def parents_layer_map(father_pick: str | None, father_typed: str | None, mother_pick: str | None,
                      mother_typed: str | None, *, local_mode: bool, token: str | None,
                      zoo_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> Any:
    """The layer map picture beside an FFN-only verdict (father layer → mother layer, kept layers marked); hidden
    for every other pair and on errors (`inspect_parents` reports those)."""
    from ui.plots import layer_map_figure

    def work() -> Any:
        father_ref = chosen_ref(father_pick, father_typed, "father")
        mother_ref = chosen_ref(mother_pick, mother_typed, "mother")
        father, _ = resolve_parent(father_ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
        mother, _ = resolve_parent(mother_ref, local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)
        return api.layer_map_rows(father, mother)

    rows, _ = guarded(work, "mapping the parents' layers")
    if not rows:
        return gr.update(value=None, visible=False)
    return gr.update(value=layer_map_figure(rows), visible=True)


# ------------------------------------------------------------------------------------------- the tab


def build_parents_tab(demo: gr.Blocks, *, local_mode: bool, zoo_dir: str | Path | None = None,
                      runs_dir: str | Path | None = None) -> list[gr.components.Component]:
    """Lay out the Parents tab inside the current Blocks context and wire its one event.

    Returns the parent inputs (father pick, father typed, mother pick, mother typed) for the tabs that act on
    the chosen parents (MRI, Evolve).
    """
    zoo, zoo_error = guarded(lambda: load_demo_zoo(zoo_dir), "loading the demo zoo")
    choices = (demo_choices(*zoo) if zoo is not None else []) + child_choices(runs_dir)
    values = {value for _, value in choices}
    where = "a Hub id (`org/name` or `org/name@revision`)" + (" or a local folder" if local_mode else "")

    gr.Markdown(
        "Pick the two parents. The demo parents ship with the app (a shared base fine-tuned on different skills); "
        f"or type {where}. Only config and safetensors headers are read here; weights are downloaded when a "
        "run needs them."
    )
    if zoo_error:
        gr.Markdown(zoo_error, elem_classes=["darwin-error"])
    with gr.Row():
        with gr.Column():
            father_pick = gr.Dropdown(choices, value=DEFAULT_FATHER if DEFAULT_FATHER in values else None,
                                      label="Father (demo parent or an earlier child)", elem_id="father-pick")
            father_typed = gr.Textbox(label="…or father Hub id / folder", placeholder="org/name", elem_id="father-typed")
            father_matches = gr.Dropdown([], label="Matches on the Hub (as you type)", elem_id="father-matches")
        with gr.Column():
            mother_pick = gr.Dropdown(choices, value=DEFAULT_MOTHER if DEFAULT_MOTHER in values else None,
                                      label="Mother (demo parent or an earlier child)", elem_id="mother-pick")
            mother_typed = gr.Textbox(label="…or mother Hub id / folder", placeholder="org/name", elem_id="mother-typed")
            mother_matches = gr.Dropdown([], label="Matches on the Hub (as you type)", elem_id="mother-matches")
    inspect = gr.Button("Inspect parents", variant="primary", elem_id="inspect-parents")
    error = gr.Markdown(elem_id="parents-error", elem_classes=["darwin-error"])
    facts = gr.Dataframe(headers=FACTS_HEADERS, label="Parents", interactive=False, elem_id="parents-facts", wrap=True)
    verdict = gr.Markdown(elem_id="parents-verdict")
    layer_map = gr.Plot(label="Layer map (FFN-only breeding)", visible=False, elem_id="parents-layer-map")
    compat = gr.Dataframe(headers=COMPAT_HEADERS, label="Compatibility", interactive=False,
                          elem_id="parents-compat", wrap=True)

    inputs = [father_pick, father_typed, mother_pick, mother_typed]
    outputs = [facts, compat, verdict, error]

    def parents_info(father_pick, father_typed, mother_pick, mother_typed, token, user):
        return inspect_parents(father_pick, father_typed, mother_pick, mother_typed,
                               local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)

    def layer_map_info(father_pick, father_typed, mother_pick, mother_typed, token, user):
        return parents_layer_map(father_pick, father_typed, mother_pick, mother_typed,
                                 local_mode=local_mode, token=token, zoo_dir=zoo_dir, runs_dir=runs_dir)

    def refresh_choices():  # children of runs that finished since the page was built
        choices = parent_choices(zoo_dir, runs_dir)
        return gr.update(choices=choices), gr.update(choices=choices)

    demo.load(refresh_choices, outputs=[father_pick, mother_pick], api_name="parent_choices")

    def search(query, token, user):  # the visitor's token, so their private repos are suggested too

        return gr.update(choices=api.search_models(query or "", token=token), value=None)

    for role, typed, matches in (("father", father_typed, father_matches), ("mother", mother_typed, mother_matches)):
        # Suggestions while typing (online only; nothing offline); picking one fills the field and inspects.
        typed.input(with_token(search), inputs=[typed], outputs=[matches], api_name=f"{role}_search",
                    trigger_mode="always_last", show_progress="hidden")
        matches.input(lambda picked, current: picked or current, inputs=[matches, typed], outputs=[typed]).then(
            with_token(parents_info, n_inputs=len(inputs)), inputs=inputs, outputs=outputs)

    gr.on(
        triggers=[demo.load, inspect.click, father_pick.input, mother_pick.input, father_typed.submit, mother_typed.submit],
        # On a Space the signed-in visitor's token, else HF_TOKEN (ui.session.with_token says why).
        fn=with_token(parents_info, n_inputs=len(inputs)),
        inputs=inputs,
        outputs=outputs,
        api_name="parents_info",
        api_description="Facts, held-out accuracies and breeding compatibility of a father and a mother.",
        trigger_mode="always_last",
    ).then(with_token(layer_map_info, n_inputs=len(inputs)), inputs=inputs, outputs=[layer_map],
           api_name="parents_layer_map")
    return inputs
