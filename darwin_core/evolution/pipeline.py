"""The whole run: load the parents and tasks, search, pick the child, merge it to disk, judge it on held-out items.

    ModelProblem (problem.py)      the parents, the resident child, the tasks (tasks.py) from the config (config.py)
    run_search (search.py)         CMA-ES ask/tell with exact resume, writing evaluations.jsonl and the checkpoint
    choose_child (report.py)       the best candidate, or a reference merge that beat it on the same items
    merge_to_disk                  child/ and best-recipe.yaml
    heldout_report (report.py)     bootstrap intervals and exact McNemar against each parent → report.json

Every public name of the evolution package stays importable from here (the UI, the job queue, the CLI, the
scripts and the benchmarks import from this module).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig, TaskSpec
from darwin_core.evolution.problem import ModelProblem, resolve_parent
from darwin_core.evolution.records import (
    BASELINE_GENERATION,
    CHECKPOINT_FORMAT,
    CandidateId,
    EvaluationRecord,
    SearchState,
    candidate_name,
    parse_candidate_name,
)
from darwin_core.evolution.report import HELDOUT_RESULTS, SIGNIFICANCE, choose_child, heldout_report, uniform_grid
from darwin_core.evolution.search import (
    Cancelled,
    Candidate,
    Problem,
    SearchOutcome,
    SearchSettings,
    combine,
    proxy_split,
    run_search,
    task_scores,
)
from darwin_core.evolution.tasks import load_spec, load_tasks
from darwin_core.io.runfolder import BEST_RECIPE, CHILD, MRI_SCAN, REPORT, RunFolder, atomic_write_text
from darwin_core.mri.probes import describe_probes
from darwin_core.parents.compatibility import PairingMode

__all__ = [
    "BASELINE_GENERATION", "CHECKPOINT_FORMAT", "HELDOUT_RESULTS", "SIGNIFICANCE",
    "Cancelled", "Candidate", "CandidateId", "EvaluationRecord", "EvolutionConfig", "ModelProblem", "Problem",
    "SearchOutcome", "SearchSettings", "SearchState", "TaskSpec",
    "candidate_name", "choose_child", "combine", "heldout_report", "load_spec", "load_tasks", "parse_candidate_name",
    "fit_to_pairing", "pairing_report", "proxy_split", "resolve_parent", "run_evolution", "run_search", "task_scores",
]


def run_evolution(
    config: EvolutionConfig,
    run_dir: Path | str,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    wrap_problem: Callable[[ModelProblem], Problem] | None = None,
    token: str | None = None,
) -> str:
    """Run (or resume) the evolution in `run_dir`; returns "finished" or "cancelled".

    `wrap_problem` turns the model problem into the one the search runs (e.g. candidates spread over several
    devices); the child, its merge and the held-out report still use the ModelProblem itself. `token`: the Hub
    token for parents this machine has not cached (`problem.resolve_parent`), never written anywhere.

    Writes evaluations.jsonl, events.jsonl and a checkpoint after every generation, then best-recipe.yaml,
    child/ and report.json. The caller (jobs.execute) owns status.json's state; a DarwinError is the user's
    sentence, anything else a bug.
    """
    folder = RunFolder(run_dir)
    log = log or (lambda message: None)
    from darwin_core.parents.names import parent_label  # events are shown on pages: parents by public name, no path

    folder.append_event("loading", father=parent_label(config.father), mother=parent_label(config.mother))
    folder.update_status(phase="loading")
    config, pairing = fit_to_pairing(config, runs_dir=folder.path.parent, log=log, token=token)
    folder.update_status(genome_space=config.genome)  # config.yaml keeps the submitted one (an FFN-only pair's differs)
    problem = ModelProblem(config, log=log, runs_dir=folder.path.parent, token=token)
    searched: Problem = wrap_problem(problem) if wrap_problem is not None else problem
    if problem.scan is not None:
        from darwin_core.mri.scan import save_json

        save_json(problem.scan, folder.file(MRI_SCAN))  # the card's MRI picture and the prescription's evidence
        used = probes_used(problem.scan)
        log(describe_probes(used["categories"], used["source"]))
    folder.update_status(phase="search", generations=config.generations)
    try:
        outcome = run_search(folder, searched, SearchSettings.from_config(config), should_stop=should_stop, log=log)
    except Cancelled:
        return "cancelled"  # jobs.execute records the state and the event
    if outcome.best is None:
        raise DarwinError("The search ended without a candidate scored on the full search set; raise topk_full above 0.")

    folder.update_status(phase="final")
    baselines_search = {r.name: r.fitness for r in map(EvaluationRecord.from_json, folder.evaluations()) if r.kind == "baseline"}
    best, recipe = _write_best_recipe(folder, problem, outcome, baselines_search, log)

    from darwin_core.merge.disk import merge_to_disk

    if should_stop and should_stop():
        return "cancelled"
    child_dir = merge_to_disk(recipe, folder.file(CHILD), device=str(problem.child.device), overwrite=True)
    folder.append_event("child_written", path=CHILD)
    _write_report(folder, problem, outcome, best, baselines_search, Path(child_dir), log, pairing)
    return "finished"


def _write_best_recipe(folder: RunFolder, problem: ModelProblem, outcome: SearchOutcome,
                       baselines_search: dict[str, float], log: Callable[[str], None]) -> tuple[dict[str, Any], Any]:
    """(best, its Recipe): the child the run publishes, its recipe saved as best-recipe.yaml before any merge."""
    best = choose_child(outcome.best, baselines_search, problem)
    recipe = problem.recipe(best["genome"]) if best["kind"] == "candidate" else problem.baseline_recipe(best["name"])
    best["recipe_hash"] = recipe.recipe_hash
    atomic_write_text(folder.file(BEST_RECIPE), recipe.to_yaml())
    folder.append_event("best_recipe", name=best["name"], fitness=best["fitness"], recipe_hash=recipe.recipe_hash)
    if best["kind"] == "baseline":
        log(f"no candidate beat the {best['name']} reference on the full search set "
            f"({outcome.best['fitness']:.4f} vs {best['fitness']:.4f}); the child is that recipe")
    log(f"best: {best['name']} (search fitness {best['fitness']:.4f}); merging the child to disk")
    return best, recipe


def fit_to_pairing(config: EvolutionConfig, *, runs_dir: Path,
                   log: Callable[[str], None] | None = None, token: str | None = None) -> tuple[EvolutionConfig, Any]:
    """(the config this pair runs under, the pair's `Pairing`), decided from the parents' headers before any
    weight is loaded, so a setting that cannot work on this pair is one sentence and not a traceback later.

    - An FFN-only pair (two families of one hidden size) searches the `per-layer-ffn` genome: the config's
      default genome becomes it (logged), a genome that blends attention is refused (`genome_for_pairing`).
    - The MRI compares the parents tensor by tensor under one name, which a cross-architecture or a wrapper
      pair does not have: `mri` (auto or a scan file) and `start: mri` are refused for them in one sentence
      rather than skipped, since the user asked for a prescription the run could not honour.
    """
    import dataclasses

    from darwin_core.genome.spaces import genome_for_pairing
    from darwin_core.merge.pairing import pairing_for_folders

    log = log or (lambda message: None)
    father_dir, mother_dir = (resolve_parent(ref, local_mode=config.local_mode, runs_dir=runs_dir, token=token)[1]
                              for ref in (config.father, config.mother))
    source = None if config.tokenizer_source == "father" else config.tokenizer_source  # checked for this pair
    pairing = pairing_for_folders(father_dir, mother_dir, tokenizer_source=source)
    if pairing.mode != PairingMode.NAMES and (config.mri or config.start == "mri"):
        what = "share only their feed-forward weights" if pairing.mode == PairingMode.FFN_ONLY else "name their tensors differently"
        raise DarwinError(f"The MRI compares the parents tensor by tensor, and these parents {what}, so mri and "
                          f"start: mri cannot be used for them; remove mri from the config.")
    genome = genome_for_pairing(config.genome, pairing.mode)
    if genome != config.genome:
        log(f"these parents share only their feed-forward weights, so the search uses the {genome} genome "
            f"instead of {config.genome}")
        config = dataclasses.replace(config, genome=genome)
    return config, pairing


def pairing_report(pairing: Any, frozen_layers: tuple[int, ...]) -> dict[str, Any]:
    """report.json's `pairing`: the mode, and for an FFN-only pair one row per father layer (the mother layer
    it was bred with, or why it stayed the father's: FFN shapes differ, or frozen)."""
    from darwin_core.merge.pairing import layer_rows

    out: dict[str, Any] = {"mode": pairing.mode}
    rows = layer_rows(pairing, frozen_layers)
    if rows:
        out["layers"] = rows
        out["kept_layers"] = [{"father_layer": row["father_layer"], "why": row["why"]} for row in rows if not row["bred"]]
    return out


def _write_report(folder: RunFolder, problem: ModelProblem, outcome: SearchOutcome, best: dict[str, Any],
                  baselines_search: dict[str, float], child_dir: Path, log: Callable[[str], None],
                  pairing: Any = None) -> None:
    """report.json (and the held-out per-item results when the config asks for the held-out report)."""
    from darwin_core.parents.names import parent_label

    config = problem.config
    report: dict[str, Any] = {
        "run_id": folder.run_id,
        "father": parent_label(config.father),
        "mother": parent_label(config.mother),
        "best": best,
        "best_candidate": {**outcome.best, "kind": "candidate"},
        "generations_run": outcome.generation,
        "stopped_early": outcome.stopped_early,
        "baselines_search": baselines_search,
    }
    report["tasks"] = {t.name: {"search": len(t.search), "heldout": len(t.heldout), "weight": problem.weights.get(t.name)}
                       for t in problem.tasks}
    if problem.scan is not None:
        report["probes"] = probes_used(problem.scan)
    if pairing is not None:
        report["pairing"] = pairing_report(pairing, config.frozen_layers)
    if config.heldout:
        grid = uniform_grid(problem, baselines_search, log=log)
        heldout, per_item = heldout_report(problem, best, child_dir, log=log, grid=grid)
        report["heldout"] = heldout
        atomic_write_text(folder.file(HELDOUT_RESULTS), json.dumps(per_item, sort_keys=True) + "\n")
    atomic_write_text(folder.file(REPORT), json.dumps(report, indent=1, sort_keys=True) + "\n")
    folder.append_event("report_written")


def probes_used(scan: dict[str, Any]) -> dict[str, Any]:
    """Which probe texts the run's MRI ran (report.json's `probes`: where they came from, and per category the
    texts), read from the pair scan itself so the log, the MRI tab and the card name what was really used."""
    texts = scan["father"]["probes"]["texts"]
    return {"source": scan.get("probe_source", "given"), "categories": {c: list(t) for c, t in texts.items()}}
