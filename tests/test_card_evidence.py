"""The evidence in the card and the Health tab: the manual-vs-evolution table, the first-paragraph sentence,
the tasks with their item counts, the probes — every number read from report.json."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from darwin_core.evolution.report import EVIDENCE_ORDER, evidence_rows, headline
from darwin_core.io.runfolder import MRI_SCAN, REPORT
from darwin_core.publishing.card import CardInputs, card_markdown_body, evidence_inputs, report_evidence
from tests.test_card_privacy import _write_choice_task

NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
WORDING_NUMBERS = {"95", "50", "50/50"}  # "95% CI", "50/50 blend": words of the table, not measurements


@pytest.fixture(scope="module")
def run(tmp_path_factory, fixture_pair, one_thread) -> Path:
    """A real tiny finished run with the MRI (its probes from the task's search split) and the held-out report."""
    from darwin_core.evolution.pipeline import EvolutionConfig
    from darwin_core.runs import queue as jobs

    scratch = tmp_path_factory.mktemp("card-evidence")
    father, mother = fixture_pair("llama", related=True)
    task = _write_choice_task(scratch / "choice.jsonl", n=24)
    config = EvolutionConfig(father=str(father), mother=str(mother), tasks=({"file": str(task), "name": "mc"},),
                             genome="darwin-v6", method="linear", population=2, generations=1, proxy_items=4,
                             topk_full=1, seed=3, device="cpu", mri="auto", batch_size=8)
    folder = jobs.prepare_foreground(config, scratch / "runs", run_id="evidence")
    assert jobs.execute(folder.path) == "finished", folder.read_status().get("error")
    return folder.path


def report_of(run: Path) -> dict:
    return json.loads((run / REPORT).read_text())


def numbers_of(value) -> set[str]:
    """Every way the pages print a number of report.json: percent with one decimal (signed or not), p-values,
    ratios, counts."""
    out: set[str] = set()
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, (int, float)):
        v = float(value)
        out |= {f"{100 * v:.1f}", f"{100 * v:+.1f}", f"{v:.3g}", f"{v:.2g}", f"{v:.1f}", str(int(v)) if v == int(v) else ""}
        out |= {s.lstrip("+") for s in out}
    elif isinstance(value, dict):
        for key, item in value.items():
            out |= numbers_of(item) | set(NUMBER.findall(str(key)))
    elif isinstance(value, (list, tuple)):
        out.add(str(len(value)))  # a count of report.json's own list (the probe texts of a category)
        for item in value:
            out |= numbers_of(item)
    elif isinstance(value, str):
        out |= set(NUMBER.findall(value))
    return out


def unexplained_numbers(text: str, report: dict) -> list[str]:
    allowed = numbers_of(report) | WORDING_NUMBERS
    return [n for n in NUMBER.findall(text.replace("−", "-")) if n not in allowed and n.lstrip("+-") not in allowed]


def test_report_json_holds_the_manual_vs_evolution_table_the_tasks_and_the_probes(run):
    report = report_of(run)
    heldout = report["heldout"]
    names = [row["name"] for row in heldout["evidence"]]
    assert names == [n for n in EVIDENCE_ORDER if n in names] and {"father", "mother", "uniform-50", "best-uniform", "mri", "child"} == set(names)
    assert all("child_minus_row" in row for row in heldout["evidence"] if row["name"] != "child")
    assert set(heldout["uniform_grid"]["search"]) == {f"{0.1 * i:.1f}" for i in range(11)}
    assert heldout["headline"] == headline(heldout) and heldout["evidence"] == evidence_rows(heldout)
    assert report["tasks"]["mc"]["search"] + report["tasks"]["mc"]["heldout"] == 24
    assert report["tasks"]["mc"]["heldout"] == heldout["items"]["mc"]
    scan = json.loads((run / MRI_SCAN).read_text())
    assert report["probes"]["categories"] == scan["father"]["probes"]["texts"]  # what the scan really ran
    assert report["probes"]["source"] == scan["probe_source"]


def test_the_card_opens_with_the_sentence_and_shows_table_tasks_and_probes_from_report_json(run):
    from darwin_core.publishing.cardgen import card_text

    report, card = report_of(run), card_text(run)[0]
    first_paragraph = next(line for line in card.splitlines() if line.startswith("Bred with Darwin"))
    assert report["heldout"]["headline"] in first_paragraph
    evidence = card.split("## Evidence", 1)[1].split("\n## ", 1)[0]
    for row in report["heldout"]["evidence"]:
        assert f"{100 * row['composite']:.1f}" in evidence
    assert f"| mc | {report['tasks']['mc']['search']} | {report['tasks']['mc']['heldout']} |" in evidence
    assert f"MRI probed the parents with: {report['probes']['source']}" in evidence
    assert unexplained_numbers(evidence, report) == []
    assert unexplained_numbers(first_paragraph.split("`linear`.", 1)[1], report) == []


def test_the_health_tab_shows_the_same_evidence_from_report_json(run):
    from darwin_core.runs.owners import Visitor
    from ui.tabs.health import view

    report = report_of(run)
    shown = view(run.name, runs_dir=run.parent, who=Visitor(session="someone"), local_mode=True, start=False)
    assert shown["evidence"] == report_evidence(report)
    assert report["heldout"]["headline"] in shown["evidence"]
    assert unexplained_numbers(shown["evidence"], report) == []


def test_changing_a_number_in_report_json_changes_the_card_and_the_tab_text(run):
    report = copy.deepcopy(report_of(run))
    row = next(r for r in report["heldout"]["evidence"] if r["name"] == "uniform-50")
    row["composite"] = 0.4321
    assert "| 50/50 blend | 43.2 |" in report_evidence(report)


def beats(diff: float, p: float) -> dict:
    return {"diff": diff, "ci_low": diff - 0.05, "ci_high": diff + 0.05, "p_value": p, "child": 0.5, "parent": 0.5 - diff}


def synthetic_heldout(beats_mother: bool) -> dict:
    mother = beats(0.10, 0.001) if beats_mother else beats(-0.125, 0.014)
    return {
        "models": {name: {"composite": 0.5, "scores": {"reverse": 0.5, "sort": 0.5}} for name in ("father", "mother", "uniform-50", "child")},
        "comparisons": {
            "father": {"composite": beats(0.2, 1e-6), "reverse": beats(0.3, 1e-5), "sort": beats(0.1, 0.04)},
            "mother": {"composite": mother, "reverse": mother, "sort": beats(0.01, 0.9)},
            "uniform-50": {"composite": beats(0.001, 1.0)},
        },
        "significance": 0.05, "beats_father": True, "beats_mother": beats_mother,
        "beats_both_parents": beats_mother, "items": {"reverse": 40, "sort": 40},
    }


def card_of(heldout: dict) -> str:
    fields = evidence_inputs({"heldout": heldout})
    inputs = CardInputs(father="dad", mother="mum", recipe_yaml="method: linear\n", recipe_hash="h", method="linear", **fields)
    return card_markdown_body(inputs, [])


def test_the_card_of_a_child_that_does_not_beat_both_parents_says_so_in_its_first_paragraph():
    card = card_of(synthetic_heldout(beats_mother=False))
    first = card.split("\n\n")[0]
    assert "does not beat the mother on the held-out composite (and is worse on reverse)" in first
    assert "Δ -12.5 points" in first and "p = 0.014" in first and "beats both" not in first
    assert "50/50 blend" in first  # and against the reference merge


def test_the_card_of_a_child_that_beats_both_parents_says_so_with_p():
    first = card_of(synthetic_heldout(beats_mother=True)).split("\n\n")[0]
    assert "beats both parents on held-out data" in first and "p = 1e-06" in first and "p = 0.001" in first
