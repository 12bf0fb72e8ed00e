"""Manual merging vs evolution on both demo families, measured on held-out data; writes docs/evolution.md.

    python scripts/evolution_table.py [--out docs/evolution.md] [--runs-dir DIR] [--seed 0] [--family zoo|rivals]

The seeds' "manual vs evolution" table, every number measured by this script on this machine, per family
(the zoo, where the parents barely interfere, and the rivals, where they do):

1. breeding runs with the default budget (the same `EvolutionConfig` the UI and the CLI start, plus
   `mri: auto` so the MRI prescription is a reference line), CPU, run through `jobs.execute` into run folders:
   the default search (darwin-v6 genome, DARE-TIES) and variants (other genome spaces or merge methods). On the
   rivals the first search is the family's shipped config (assets/rivals/breed.yaml: the per-layer genome;
   darwin-v6 can express the recipe that keeps both skills but its default search does not find it; both are
   measured), and an A/B of `start: mri` against the neutral start and of `selection: halving` against the
   fixed top-k, at the same population and generations (with the item scorings each plans);
2. their held-out reports: father, mother, a 50/50 linear blend, the MRI prescription alone and each child;
3. the family's base, scored on the same held-out items (a reference: what the parents started from);
4. the grid of uniform linear ratios (share of the mother 0.0, 0.1 … 1.0) that each run measures itself
   (darwin_core.evolution.report.uniform_grid, on the whole *search* split); the first run's best of them
   (chosen without looking at held-out data) is its held-out "best uniform ratio" row.

The section between `<!-- genesis:begin -->` and `<!-- genesis:end -->` (scripts/genesis_table.py) is kept.

Every row is compared with each parent, the 50/50 blend and the best uniform ratio on the same held-out items:
paired bootstrap 95% interval of the composite difference and an exact McNemar p-value. Exit status 1 when an
acceptance fails: the zoo's first child must beat both parents, the rivals' first child the 50/50 blend and the
best uniform ratio, each at p < 0.05; so the document can be regenerated as a check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from darwin_core.errors import DarwinError  # noqa: E402
from darwin_core.runs import queue as jobs  # noqa: E402
from darwin_core.evolution.cost import estimate_cost  # noqa: E402
from darwin_core.evolution.pipeline import HELDOUT_RESULTS, SIGNIFICANCE, EvolutionConfig, ModelProblem  # noqa: E402
from darwin_core.evolution.report import BEST_UNIFORM, UNIFORM_GRID, uniform_recipe  # noqa: E402
from darwin_core.fitness.evaluate import EvalResult  # noqa: E402
from darwin_core.fitness.stats import compare_results  # noqa: E402
from darwin_core.io.runfolder import REPORT  # noqa: E402
from darwin_core.zoo.rivals import BREED_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ZOO = REPO / "assets" / "zoo"
RIVALS = REPO / "assets" / "rivals"
GENESIS = ("<!-- genesis:begin -->", "<!-- genesis:end -->")  # a section another script writes: kept as it is
REFERENCES = ("father", "mother", "uniform-50", "grid")  # what every row is compared with


@dataclass(frozen=True)
class Search:
    """One breeding run of a family: the config keys it changes, and how its row is named."""

    label: str
    changes: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # EvolutionConfig fields it needs (an A/B of a feature not built yet is skipped)


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    father: Path
    mother: Path
    base: Path
    tasks: tuple[str, ...] | None  # None: the config's default tasks
    shipped: Path | None  # the family's shipped evolution config (what a user breeds it with), None: the defaults
    searches: tuple[Search, ...]
    acceptance: tuple[str, ...]  # the reference rows the first search's child must beat at p < SIGNIFICANCE
    about: str


FAMILIES = (
    Family("zoo", "The zoo (parents that barely interfere)", ZOO / "father", ZOO / "mother", ZOO / "base", None, None, (
        Search("darwin-v6, dare_ties (default)"),
        Search("darwin-v6, linear", {"method": "linear"}),
        Search("per-layer, linear", {"genome": "per-layer", "method": "linear"}),
    ), ("father", "mother"),
        "The demo zoo's father and mother (`assets/zoo`): the base fine-tuned briefly on two skills each, "
        "forgetting some of the others. Fitness: the four demo skills, equal weights."),
    Family("rivals", "The rivals (parents that interfere)", RIVALS / "father", RIVALS / "mother", ZOO / "base",
           ("double", "shift"), RIVALS / BREED_CONFIG, (
        Search("per-layer, linear: the family's shipped config (default)"),
        Search("darwin-v6, dare_ties (the app's generic default)", {"genome": "darwin-v6", "method": None}),
        Search("per-layer, linear, start: mri (A/B vs the neutral start)", {"start": "mri"}, ("start",)),
        Search("per-layer, linear, selection: halving (A/B vs the fixed top-k)", {"selection": "halving"},
               ("selection",)),
    ), ("uniform-50", "grid"),
        "The rivals (`assets/rivals`): the zoo's base fine-tuned on a skill it does not have, each on its own "
        "half of the layers — the father on `double` with only layers 0-1 trainable, the mother on `shift` with "
        "only layers 2-3 (both replaying the base's four skills). Fitness: the two new skills, equal weights. "
        "The recipe that keeps both takes the father's layers 0-1 and the mother's layers 2-3. **What a user gets "
        "by default** is the family's shipped config, `assets/rivals/breed.yaml` (`python -m darwin_core evolve "
        "assets/rivals/breed.yaml`; the app takes its settings when both parents are the rivals, "
        "`family_breed_settings`): the per-layer genome (one ratio per decoder layer, 4 dimensions) with linear "
        "merges, the budget otherwise the default. Its first row is the one this family's acceptance is judged "
        "on. darwin-v6 can express the same recipe (with 4 layers its blocks 0, 1, 3, 4 hold one layer each) but "
        "does not find it at the default budget, with or without the MRI: `global_ratio` (and `mri_trust`, the "
        "role ratios) move all four layers together, so from the neutral point the search climbs to a parent — "
        "a plateau at one skill — and leaving it needs two blocks to move to opposite ends at once (its row "
        "below). Both A/B rows change one setting of the shipped config at the same population and generations."),
)


def family_config(family: Family, seed: int) -> EvolutionConfig:
    """The family's shipped config when it has one (else the defaults), on the CPU, with the MRI scan made for
    the run (the prescription is a reference row)."""
    if family.shipped is not None:
        shipped = EvolutionConfig.load(family.shipped)
        return replace(shipped, father=str(family.father), mother=str(family.mother), device="cpu", mri="auto",
                       seed=seed)
    tasks = {} if family.tasks is None else {"tasks": list(family.tasks)}
    return EvolutionConfig(father=str(family.father), mother=str(family.mother), device="cpu", mri="auto", seed=seed,
                           **tasks)


def base_heldout(config: EvolutionConfig, base_dir: Path, log) -> EvalResult:
    """The family's base on the run's held-out items (a reference row: what both parents started from)."""
    from darwin_core.evolution.child import ResidentTensors

    problem = ModelProblem(replace(config, mri=None), log=log)
    base = ResidentTensors(base_dir)
    problem.child.write(((name, base.get(name)) for name in problem.child.names), label="base")
    return problem.measure_loaded(problem.tasks, split="heldout")


def best_uniform_heldout(config: EvolutionConfig, report: dict, per_item: dict[str, EvalResult], log) -> EvalResult:
    """The best uniform ratio's held-out result from the run (the pipeline's grid, report.uniform_grid); measured
    here with the library's recipe only when the run's per-item file predates it."""
    if BEST_UNIFORM in per_item:
        return per_item[BEST_UNIFORM]
    problem = ModelProblem(replace(config, mri=None), log=log)
    problem.child.load_recipe(uniform_recipe(problem, float(report["heldout"]["uniform_grid"]["best"])))
    return problem.measure_loaded(problem.tasks, split="heldout")


def run_once(config: EvolutionConfig, runs_dir: Path) -> tuple[dict, dict[str, EvalResult], float]:
    """One breeding run through the job runner: (report, per-item held-out results, wall seconds)."""
    folder = jobs.prepare_foreground(config, runs_dir)
    start = time.perf_counter()
    state = jobs.execute(folder.path, log=print)
    seconds = time.perf_counter() - start
    if state != "finished":
        raise SystemExit(f"the run ended {state}: {folder.read_status().get('error')}")
    report = json.loads(folder.file(REPORT).read_text())
    per_item = json.loads(folder.file(HELDOUT_RESULTS).read_text())
    return report, {name: EvalResult.from_dict(data) for name, data in per_item.items()}, seconds


def child_label(search: Search, report: dict) -> str:
    best = report["best"]
    if best["kind"] == "baseline":
        return f"CMA-ES child ({search.label}): no candidate beat `{best['name']}` on the search split, so the child is that recipe"
    return f"CMA-ES child ({search.label}): {best['name']}"


def measure_family(family: Family, seed: int, runs_dir: Path | None, scratch: Path) -> dict:
    """Every run, the grid and the base of one family; skipped A/B rows come back as notes."""
    fields = {f.name for f in dataclasses.fields(EvolutionConfig)}
    config = family_config(family, seed)
    runs, results, labels, notes = [], {}, {}, []
    for search in family.searches:
        missing = [name for name in search.needs if name not in fields]
        if missing:
            note = (f"{search.label}: not run — EvolutionConfig has no `{'`, `'.join(missing)}` field yet "
                    "(the feature is being built), so this A/B row is absent.")
            print(f"note: {note}")
            notes.append(note)
            continue
        run_config = replace(config, **search.changes)
        try:
            report, per_item, seconds = run_once(run_config, runs_dir or scratch)
        except (DarwinError, SystemExit) as error:
            if not search.needs:
                raise
            notes.append(f"{search.label}: the run failed ({error}), so this A/B row is absent.")
            continue
        key = f"child-{len(runs)}"
        runs.append({"search": search, "config": run_config, "report": report, "seconds": seconds, "key": key,
                     "planned": estimate_cost(run_config)})
        if len(runs) == 1:
            runs[0]["grid_result"] = best_uniform_heldout(run_config, report, per_item, print)
        if len(runs) == 1:
            results.update({k: v for k, v in per_item.items() if k != "child"})
            labels.update({"father": "father", "mother": "mother"})
        results[key] = per_item["child"]
        labels[key] = child_label(search, report)
    first = runs[0]
    grid = dict(first["report"]["heldout"]["uniform_grid"])
    results["grid"] = first["grid_result"]
    results["base"] = base_heldout(config, family.base, print)
    labels.update({"base": "base (reference: what both parents were fine-tuned from)",
                   "uniform-50": "50/50 blend (linear)", "grid": f"best uniform ratio ({float(grid['best']):.1f}, linear)"})
    if "mri" in results:
        labels["mri"] = "MRI prescription alone"
    order = ["father", "mother", "base", "uniform-50", "grid", "mri", *(run["key"] for run in runs)]
    labels = {key: labels[key] for key in order if key in labels and key in results}
    return {"family": family, "config": config, "runs": runs, "results": results, "labels": labels, "grid": grid,
            "notes": notes}


def comparison_cell(result: EvalResult, other: EvalResult, weights: dict, seed: int) -> tuple[object, list[str]]:
    c = compare_results(result, other, weights=weights, seed=seed)["composite"]
    return c, [f"{100 * c.diff:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", f"{c.p_value:.2g}"]


def acceptance(measured: dict) -> tuple[bool, str]:
    """Whether the default child beats the family's acceptance rows at p < SIGNIFICANCE, and the sentence."""
    family, results, runs = measured["family"], measured["results"], measured["runs"]
    weights = runs[0]["report"]["heldout"]["weights"]
    seed = measured["config"].seed
    parts, ok = [], True
    for key in family.acceptance:
        c, _ = comparison_cell(results[runs[0]["key"]], results[key], weights, seed)
        beats = c.diff > 0 and c.p_value < SIGNIFICANCE
        ok = ok and beats
        parts.append(f"{'beats' if beats else 'does **not** beat'} the {measured['labels'][key]} "
                     f"(Δ {100 * c.diff:+.1f} points, p = {c.p_value:.2g})")
    first = runs[0]["search"].label.split(" (")[0]
    return ok, f"The first search's child ({first}) " + "; it ".join(parts) + " on the held-out composite."


def render_family(measured: dict) -> list[str]:
    family, config, runs, results, labels, grid = (measured[k] for k in ("family", "config", "runs", "results", "labels", "grid"))
    heldout = runs[0]["report"]["heldout"]
    weights, tasks = heldout["weights"], list(heldout["items"])
    lines = [
        f"## {family.title}", "", family.about + " Items: search split for the search, a disjoint **held-out** split "
        f"({', '.join(f'{t} {n}' for t, n in heldout['items'].items())} items) for this table.", "",
        "| recipe | " + " | ".join(tasks) + " | composite | " + " | ".join(
            f"Δ vs {short} [95% CI] | p vs {short}" for short in ("father", "mother", "50/50", "best uniform")) + " |",
        "| --- | " + " | ".join("---:" for _ in tasks) + " | ---:" + " | ---: | ---:" * len(REFERENCES) + " |",
    ]
    for name, label in labels.items():
        result = results[name]
        bold = name == runs[0]["key"]
        row = [f"**{label}**" if bold else label] + [f"{100 * result.tasks[t].score:.1f}" for t in tasks]
        row.append(f"**{100 * result.composite(weights):.1f}**")
        for reference in REFERENCES:
            row += ["—", "—"] if name == reference else comparison_cell(result, results[reference], weights, config.seed)[1]
        lines.append("| " + " | ".join(row) + " |")
    ok, sentence = acceptance(measured)
    lines += ["", sentence + f" (acceptance for this family: {'met' if ok else '**not met**'}.)", ""]
    lines += [f"- {note}" for note in measured["notes"]] + ([""] if measured["notes"] else [])
    lines += [
        f"Best uniform ratio: one ratio for every tensor, the best of {len(UNIFORM_GRID)} on the search split, "
        "measured by the first run itself (`darwin_core.evolution.report.uniform_grid`; share of the mother → "
        f"search composite: {', '.join(f'{float(r):.1f} → {100 * v:.1f}' for r, v in grid['search'].items())}); "
        f"chosen: {float(grid['best']):.1f}.", "",
        "| search | evaluations planned | item scorings planned | best candidate | its search fitness | published | "
        "search fitness | run wall time |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for run in runs:
        candidate, best, planned = run["report"]["best_candidate"], run["report"]["best"], run["planned"]
        lines.append(f"| {run['search'].label} | {planned.evaluations:,} | {planned.items:,} | {candidate['name']} | "
                     f"{candidate['fitness']:.4f} | {best['name']} | {best['fitness']:.4f} | {run['seconds']:.0f} s |")
    return lines + [""]


def genesis_section(path: Path) -> str | None:
    """The section between the genesis markers of the document as it stands (scripts/genesis_table.py writes
    it), kept as it is; None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    begin, end = text.find(GENESIS[0]), text.find(GENESIS[1])
    if begin < 0 or end < begin:
        return None
    return text[begin:end + len(GENESIS[1])]


def render(families: list[dict], load: tuple[float | None, float | None] = (None, None),
           genesis: str | None = None) -> str:
    config = families[0]["config"]
    lines = [
        "# Manual merging vs evolution (demo families, held-out)", "",
        "Generated by `python scripts/evolution_table.py` — every number below was measured by that script on the "
        "machine named at the end. Do not edit by hand.", "",
        f"Search budget: the default (population {config.population}, {config.generations} generations, "
        f"{config.proxy_items} proxy items per task, top {config.topk_full} re-scored on the full search split, "
        f"seed {config.seed}), with the MRI prescription computed from the parents as a reference line. Exact match "
        "of the greedy answer; p-values: exact McNemar on the composite's paired items; intervals: paired "
        "bootstrap, 10,000 resamples.", "",
        "How the reference rows were chosen: **50/50 blend**: every tensor `0.5·father + 0.5·mother` (linear). "
        "**Best uniform ratio**: one ratio for every tensor, picked on the search split. **MRI prescription "
        "alone**: seed 002's per-tensor ratio `b/(a+b)` from the parents' scans, darwin-v6 at its neutral point "
        "with `mri_trust = 1`, no search. **Base**: the model both parents were fine-tuned from. **CMA-ES child**: "
        "the run's published recipe, merged to disk and loaded back from there. When no candidate beats a "
        "reference line on the full search split, a run publishes that reference recipe (`choose_child`).", "",
    ]
    for measured in families:
        lines += render_family(measured)
    lines += [
        "Run wall time: loading, MRI scan, baselines, search, merge to disk and held-out report, one process.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device cpu; load average {_load(load[0])} when the measurements "
        f"started and {_load(load[1])} when they ended (other work shared the cores: above {os.cpu_count()} the "
        "wall times are inflated by it).", "",
    ]
    if genesis:
        lines += [genesis, ""]
    return "\n".join(lines)


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "evolution.md")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=[f.name for f in FAMILIES], action="append",
                        help="measure only this family (repeatable; default: all)")
    args = parser.parse_args(argv)

    chosen = [f for f in FAMILIES if not args.family or f.name in args.family]
    load_at_start = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        measured = [measure_family(family, args.seed, args.runs_dir, Path(scratch)) for family in chosen]
    text = render(measured, (load_at_start, load_average()), genesis_section(args.out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(acceptance(m)[0] for m in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
