"""The child's model card, generated from what the run measured (never from hand-typed numbers).

The card is built with `huggingface_hub.ModelCard`/`ModelCardData` so the Hub reads its metadata:
`base_model` lists both parents and `base_model_relation: merge` makes the Hub's model tree show
the child under both. Every number comes from the inputs (the run's report, health check and
recipe); a section whose data is absent says so instead of being filled in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

CARD_TAGS = ("merge", "evolutionary-merge", "darwin")
RECIPE_FILE = "darwin-recipe.yaml"  # the child's whole recipe, published beside the card
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_parents(*parents: str) -> list[str]:
    """The parents the Hub can link to: `base_model` only accepts repo ids, not demo names or local paths."""
    return [p for p in parents if HUB_REPO_ID.match(p) and not p.startswith((".", "/"))]


@dataclass
class HeldoutRow:
    """One line of the held-out table: scores on data the search never saw, child vs each parent."""

    task: str
    n_items: int
    child: float
    father: float
    mother: float
    ci_vs_father: tuple[float, float]
    ci_vs_mother: tuple[float, float]
    p_vs_father: float
    p_vs_mother: float


@dataclass
class CardInputs:
    father: str
    mother: str
    recipe_yaml: str
    recipe_hash: str
    method: str
    father_license: str | None = None
    mother_license: str | None = None
    repo_id: str | None = None
    genome: list[tuple[str, float]] = field(default_factory=list)  # the dimensions that have an effect on the child
    genome_hidden: int = 0  # dimensions of the genome left out: they have no effect on this child
    genome_space: str | None = None
    heldout: list[HeldoutRow] = field(default_factory=list)
    search_best: float | None = None
    reference_child: str | None = None  # set when no candidate beat this reference recipe, which became the child
    generations: int | None = None
    candidates: int | None = None
    health_verdict: str | None = None
    health_findings: list[str] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path in the repo)
    genealogy: list[str] = field(default_factory=list)  # ancestors of the parents, oldest first
    reproduce_command: str | None = None
    headline: str | None = None  # report.py's `headline`: beats both parents, or whom it does not beat on what
    evidence: list[dict[str, Any]] = field(default_factory=list)  # report.py's `evidence_rows`
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task → search / heldout item counts, weight
    probes: dict[str, Any] | None = None  # report.json's `probes`: source and texts per category
    layer_map: list[dict[str, Any]] = field(default_factory=list)  # FFN-only pairs: `pairing.layer_rows`


def evidence_inputs(report: Mapping[str, Any]) -> dict[str, Any]:
    """The CardInputs fields of the evidence, from report.json alone (older reports: computed from its numbers)."""
    from darwin_core.evolution.report import evidence_rows, headline

    heldout = report.get("heldout") or {}
    tasks = dict(report.get("tasks") or {})
    if not tasks:
        tasks = {task: {"heldout": n} for task, n in (heldout.get("items") or {}).items()}
    return {
        "headline": heldout.get("headline") or (headline(heldout) if heldout else None),
        "evidence": list(heldout.get("evidence") or (evidence_rows(heldout) if heldout else [])),
        "tasks": tasks,
        "probes": report.get("probes"),
    }


def resolve_license(father_license: str | None, mother_license: str | None) -> tuple[str | None, list[str]]:
    """The child's license and the warnings a user must see before publishing."""
    if father_license and mother_license and father_license != mother_license:
        warning = (
            f"The parents' licenses differ ({father_license} vs {mother_license}): "
            "check that both allow a merged model before publishing; the card says 'other'."
        )
        return "other", [warning]
    chosen = father_license or mother_license
    if chosen is None:
        return None, ["Neither parent declares a license: set one before publishing."]
    if not (father_license and mother_license):
        return chosen, [f"Only one parent declares a license ({chosen}); check the other parent's terms."]
    return chosen, []


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _heldout_table(rows: list[HeldoutRow]) -> str:
    if not rows:
        return "No held-out evaluation was recorded for this child.\n"
    lines = [
        "| task | items | child | father | mother | child − father (95% CI) | p (McNemar) | child − mother (95% CI) | p (McNemar) |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.task} | {r.n_items} | {_pct(r.child)} | {_pct(r.father)} | {_pct(r.mother)} "
            f"| {_pct(r.child - r.father)} [{_pct(r.ci_vs_father[0])}, {_pct(r.ci_vs_father[1])}] | {r.p_vs_father:.3g} "
            f"| {_pct(r.child - r.mother)} [{_pct(r.ci_vs_mother[0])}, {_pct(r.ci_vs_mother[1])}] | {r.p_vs_mother:.3g} |"
        )
    return "\n".join(lines) + "\n\nScores are accuracies in percent on the held-out split; intervals are paired bootstrap 95% intervals of the difference.\n"


def evidence_table(rows: list[Mapping[str, Any]]) -> str:
    """The manual-vs-evolution table: each recipe's held-out composite and the child's difference against it."""
    if not rows:
        return "No held-out comparison of the child with the manual merges was recorded.\n"
    lines = ["| recipe | held-out composite | child − recipe (95% CI) | p (McNemar) |", "|---|---:|---|---:|"]
    for row in rows:
        c = row.get("child_minus_row")
        versus = (f"{_pct(c['diff'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}] | {c['p_value']:.3g}" if c else "— | —")
        label = f"**{row['label']}**" if row["name"] == "child" else row["label"]
        lines.append(f"| {label} | {_pct(row['composite'])} | {versus} |")
    return "\n".join(lines) + "\n\nThe best uniform ratio is the best single share of the mother on the search split, then scored on held-out items.\n"


def tasks_text(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """The fitness tasks with their item counts (search split, held-out split)."""
    if not tasks:
        return "No fitness tasks were recorded for this child.\n"
    lines = ["| task | search items | held-out items |", "|---|---:|---:|"]
    lines += [f"| {task} | {row.get('search', '—')} | {row.get('heldout', '—')} |" for task, row in tasks.items()]
    return "\n".join(lines) + "\n"


def probes_text(probes: Mapping[str, Any] | None) -> str:
    """Which texts the MRI probed the parents with: where they came from and how many per category."""
    if not probes:
        return "The run made no MRI scan of the parents.\n"
    counts = ", ".join(f"{category} ({len(texts)} texts)" for category, texts in probes.get("categories", {}).items())
    return f"The MRI probed the parents with: {probes.get('source', 'given texts')} — {counts}.\n"


EVIDENCE_FIELDS = ("headline", "evidence", "tasks", "probes")


def evidence_markdown(evidence: Mapping[str, Any], *, with_headline: bool = True) -> str:
    """The evidence sections shared by the card and the Health tab (`evidence_inputs`' fields): the sentence
    (the card has it in its first paragraph instead), the manual-vs-evolution table, the tasks, the probes."""
    headline = evidence.get("headline")
    return "".join([
        f"{headline}\n\n" if headline and with_headline else "",
        "### Manual merging vs evolution (held-out)\n\n", evidence_table(evidence.get("evidence") or []),
        "\n### Tasks\n\n", tasks_text(evidence.get("tasks") or {}),
        "\n### MRI probes\n\n", probes_text(evidence.get("probes")),
    ])


def report_evidence(report: Mapping[str, Any]) -> str:
    """The Health tab's evidence: the same sections as the card, from a run's report.json alone."""
    return evidence_markdown(evidence_inputs(report))


def _layer_map_section(rows: list[dict[str, Any]]) -> str:
    """The card's layer map of a cross-architecture FFN child: which mother layer each father layer's FFN was
    bred with, the layers kept as the father's and why, and why no mergekit config is offered (mergekit merges
    tensors of one name, so it cannot express a layer map)."""
    from darwin_core.publishing.recipe_view import kept_layers_sentence, layer_map_table

    if not rows:
        return ""
    kept = kept_layers_sentence(rows)
    return ("\n### Layer map (feed-forward only)\n\n"
            "The parents are two architectures of one hidden size: only the feed-forward weights were bred, father "
            "layer i with the mother layer at the same relative depth; attention, norms, embeddings and tokenizer "
            "are the father's, so the child loads with the father's model class. mergekit merges tensors of one "
            "name and cannot express this pairing, so no mergekit config is given for it.\n\n"
            f"{layer_map_table(rows)}" + (f"\n{kept}\n" if kept else ""))


def card_markdown_body(inputs: CardInputs, license_warnings: list[str]) -> str:
    name = inputs.repo_id or "This child"
    verdict = f" {inputs.headline}" if inputs.headline else ""
    parts: list[str] = [
        f"# {name.split('/')[-1]}\n",
        f"Bred with Darwin by recombining the weights of two parents (no training): "
        f"father **{inputs.father}**, mother **{inputs.mother}**, merge method `{inputs.method}`.{verdict}\n",
    ]
    for warning in license_warnings:
        parts.append(f"> **License:** {warning}\n")
    parts.append("## Parents\n")
    parts.append("| role | model | license |\n|---|---|---|\n")
    for role, parent, license_id in (
        ("father", inputs.father, inputs.father_license),
        ("mother", inputs.mother, inputs.mother_license),
    ):
        shown = f"[{parent}](https://huggingface.co/{parent})" if hub_parents(parent) else f"`{parent}`"
        parts.append(f"| {role} | {shown} | {license_id or 'unknown'} |\n")
    if inputs.genealogy:
        parts.append("\n### Genealogy\n")
        parts.append(" → ".join(inputs.genealogy + [inputs.repo_id or "this child"]) + "\n")
    parts.append("\n## Held-out results\n")
    parts.append(_heldout_table(inputs.heldout))
    if inputs.search_best is not None:
        searched = f"{inputs.candidates} candidates over {inputs.generations} generations" if inputs.candidates else "the search"
        parts.append(f"\nBest search-split fitness: {inputs.search_best:.4f} ({searched}).\n")
    if inputs.reference_child:
        parts.append(f"\nNo candidate of the search beat the `{inputs.reference_child}` reference recipe on the search "
                     "split, so this child is that recipe.\n")
    parts.append("\n## Evidence\n\n")
    fields = {name: getattr(inputs, name) for name in EVIDENCE_FIELDS}
    parts.append(evidence_markdown(fields, with_headline=False))  # the sentence opens the card
    parts.append("\n## Health check\n")
    if inputs.health_verdict is None:
        parts.append("No health check was run for this child.\n")
    else:
        parts.append(f"Verdict: **{inputs.health_verdict}**\n")
        parts.extend(f"- {finding}\n" for finding in inputs.health_findings)
    if inputs.genome:
        parts.append(f"\n## Genome ({inputs.genome_space or 'genome'})\n")
        parts.append("| dimension | value |\n|---|---:|\n")
        parts.extend(f"| {dim} | {value:.4f} |\n" for dim, value in inputs.genome)
        if inputs.genome_hidden:
            parts.append(f"\n{inputs.genome_hidden} more dimensions of this genome have no effect on this child's "
                         "weights and are not shown (the recipe file keeps the whole genome).\n")
    if inputs.pictures:
        parts.append("\n## Pictures\n")
        parts.extend(f"![{caption}]({path})\n" for caption, path in inputs.pictures)
    parts.append("\n## Recipe\n")
    parts.append(f"Recipe hash `{inputs.recipe_hash}`: the same recipe on the same parents gives bit-identical weights.\n")
    parts.append(f"\nThe recipe's settings that decide this child's weights (entries no tensor of this model reads "
                 f"are left out; `{RECIPE_FILE}` beside this card is the whole recipe, the one that re-merges it):\n")
    parts.append(f"\n```yaml\n{inputs.recipe_yaml.rstrip()}\n```\n")
    parts.append(_layer_map_section(inputs.layer_map))
    parts.append("\n## Usage\n")
    repo = inputs.repo_id or "path/to/child"
    parts.append(
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n```\n'
    )
    if inputs.reproduce_command:
        parts.append(f"\n## Reproduce\n\n```bash\n{inputs.reproduce_command}\n```\n")
    return "".join(parts)


def build_card(inputs: CardInputs) -> tuple[ModelCard, list[str]]:
    """The card and the license warnings to show beside it (the UI shows them before a push)."""
    license_id, warnings = resolve_license(inputs.father_license, inputs.mother_license)
    base_models = hub_parents(inputs.father, inputs.mother)
    extra: dict[str, Any] = {"base_model_relation": "merge"} if base_models else {}
    data = ModelCardData(
        base_model=base_models or None,
        library_name="transformers",
        license=license_id,
        tags=list(CARD_TAGS),
        **extra,
    )
    content = f"---\n{data.to_yaml()}\n---\n\n{card_markdown_body(inputs, warnings)}"
    return ModelCard(content), warnings
