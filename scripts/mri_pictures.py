"""Scan the demo family and write the MRI pictures and docs/mri.md (every number in it measured here).

    python scripts/mri_pictures.py                     # the demo zoo in assets/zoo, demo probes, CPU
    python scripts/mri_pictures.py --father F --mother M --probes probes.yaml --out docs

Writes into OUT/mri/: one interactive HTML file per picture (probe importance per parent, layer advantage,
divergence map, static profile, MoE utilisation for MoE parents, health chart), PNG copies when plotly's
static export (kaleido) is installed, and the pair scan and health report as JSON; then OUT/mri.md, which
summarises what the pictures show with the measured numbers. The health section also checks two lesioned
children of the same 50/50 merge (one layer zeroed, one layer's output ×10) so the thresholds can be seen
against real cases.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darwin_core.health import checkup as health  # noqa: E402
from darwin_core.mri import scan as mri
from darwin_core.errors import DarwinError  # noqa: E402
from darwin_core.merge.disk import merge_to_disk  # noqa: E402
from darwin_core.fitness.probes import demo_probes, resolve_probes  # noqa: E402
from darwin_core.recipe import Recipe  # noqa: E402
from ui import plots  # noqa: E402

ZOO = ROOT / "assets" / "zoo"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _shown(folder: Path) -> str:
    """A folder as shown in the docs: relative to the repository when inside it."""
    folder = folder.resolve()
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


def _write_figure(fig, folder: Path, stem: str, png: bool) -> list[str]:
    """HTML always (plotly.js from the CDN keeps each file small); PNG when kaleido is available."""
    written = [f"{stem}.html"]
    fig.write_html(folder / f"{stem}.html", include_plotlyjs="cdn", full_html=True)
    if png:
        fig.write_image(folder / f"{stem}.png", width=900, height=600, scale=1)
        written.append(f"{stem}.png")
    return written


def _kaleido_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def _zoo_skills() -> tuple[list[str], list[str]]:
    """(father's skills, mother's skills) of the shipped demo zoo, from the build spec in its zoo.json."""
    try:
        spec = json.loads((ZOO / "zoo.json").read_text(encoding="utf-8"))["spec"]
        return list(spec["father_skills"]), list(spec["mother_skills"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], []


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _importance_table(scan: dict) -> str:
    imp = scan["probes"]["importance"]
    cats = list(imp)
    n = len(imp[cats[0]])
    return _table(["layer", *cats], [[f"L{i}", *(_fmt(imp[c][i]) for c in cats)] for i in range(n)])


def _category_spread(scan: dict) -> dict:
    """How much probe importance depends on the category: per layer, max/min over categories."""
    imp = scan["probes"]["importance"]
    cats = list(imp)
    n = len(imp[cats[0]])
    rows = []
    for i in range(n):
        values = {c: imp[c][i] for c in cats}
        hi = max(values, key=values.get)
        lo = min(values, key=values.get)
        rows.append({"layer": i, "max_cat": hi, "max": values[hi], "min_cat": lo, "min": values[lo],
                     "ratio": values[hi] / values[lo] if values[lo] > 0 else None})
    top_layer = {c: max(range(n), key=lambda i: imp[c][i]) for c in cats}
    return {"rows": rows, "top_layer": top_layer}


def _divergence_summary(pair: dict) -> dict:
    cells = []
    for i, row in enumerate(pair["divergence"]["layers"]):
        for role, d in row.items():
            if d["rel_delta"] is not None:
                cells.append((d["rel_delta"], i, role))
    cells.sort(reverse=True)
    totals = [d["rel_delta"] for d in pair["divergence"]["layer_total"]]
    return {"cells": cells, "totals": totals}


def _health_lines(label: str, report: dict) -> list[str]:
    c, f, m = (report["models"][k]["importance"] for k in ("child", "father", "mother"))
    up = [c[i] / max(f[i], m[i]) for i in range(len(c)) if max(f[i], m[i]) > 0]
    down = [c[i] / min(f[i], m[i]) for i in range(len(c)) if min(f[i], m[i]) > 0]
    ppl = {k: report["models"][k]["perplexity"] for k in ("child", "father", "mother")}
    rep = {k: report["models"][k]["repetition"] for k in ("child", "father", "mother")}
    kinds = ", ".join(f"{x['kind']} at {x['layers']}" if x["layers"] else x["kind"] for x in report["findings"]) or "none"
    return [
        label,
        f"**{report['verdict']}**",
        kinds,
        _fmt(max(up)) if up else "—",
        _fmt(min(down)) if down else "—",
        f"{_fmt(ppl['child'])} ({_fmt(ppl['father'])} / {_fmt(ppl['mother'])})",
        f"{rep['child']:.0%} ({rep['father']:.0%} / {rep['mother']:.0%})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--father", type=Path, default=ZOO / "father")
    parser.add_argument("--mother", type=Path, default=ZOO / "mother")
    parser.add_argument("--probes", help="probe YAML or 'demo' (default: demo probes for the zoo, else the built-in five)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if args.threads:
        torch.set_num_threads(args.threads)
    for who, folder in (("father", args.father), ("mother", args.mother)):
        if not (folder / "config.json").is_file():
            raise DarwinError(f"The {who} model {folder} is missing; build the demo zoo first (python -m darwin_core zoo build).")
    is_zoo = args.father.resolve() == (ZOO / "father").resolve()
    probes = demo_probes() if args.probes is None and is_zoo else resolve_probes(args.probes)
    pictures = args.out / "mri"
    pictures.mkdir(parents=True, exist_ok=True)
    png = _kaleido_available()

    start = time.perf_counter()
    pair = mri.scan_pair(args.father, args.mother, probes=probes, device=args.device)
    scan_s = time.perf_counter() - start
    for who, folder in (("father", args.father), ("mother", args.mother)):
        pair[who]["model"]["path"] = _shown(folder)  # no machine-specific paths in the committed JSON
    mri.save_scan(pair, pictures / "pair_scan.json")

    with tempfile.TemporaryDirectory(prefix="mri-pictures-") as tmp:
        child = merge_to_disk(Recipe(father=args.father, mother=args.mother, method="linear"), Path(tmp) / "child")
        start = time.perf_counter()
        report = health.check_health(child, args.father, args.mother, probes=probes, device=args.device)
        health_s = time.perf_counter() - start
        f_imp, m_imp = report["models"]["father"]["importance"], report["models"]["mother"]["importance"]
        strongest = max(range(len(f_imp)), key=lambda i: min(f_imp[i], m_imp[i]))
        weakest = min(range(len(f_imp)), key=lambda i: max(f_imp[i], m_imp[i]))
        lesions = {}
        for label, make in (
            (f"layer {strongest} zeroed", lambda d: health.zero_layer(child, d, strongest)),
            (f"layer {weakest} output ×10", lambda d: health.amplify_layer(child, d, weakest, 10.0)),
        ):
            sick = make(Path(tmp) / label.replace(" ", "_").replace("×", "x"))
            lesions[label] = health.check_health(sick, args.father, args.mother, probes=probes, device=args.device)
    for who, shown in (("child", "50/50 linear merge (temporary)"), ("father", _shown(args.father)), ("mother", _shown(args.mother))):
        report["models"][who]["path"] = shown
    mri.save_json(report, pictures / "health_50_50.json")

    files: list[str] = []
    files += _write_figure(plots.importance_heatmap(pair["father"], "Father: probe importance per layer"), pictures, "importance_father", png)
    files += _write_figure(plots.importance_heatmap(pair["mother"], "Mother: probe importance per layer"), pictures, "importance_mother", png)
    files += _write_figure(plots.advantage_heatmap(pair), pictures, "advantage", png)
    files += _write_figure(plots.divergence_map(pair), pictures, "divergence", png)
    files += _write_figure(plots.static_profile_lines(pair["father"], "entropy", "Father: weight entropy per layer (bits)"), pictures, "static_entropy_father", png)
    for who in ("father", "mother"):
        fig = plots.moe_utilisation_heatmap(pair[who], f"{who.capitalize()}: expert utilisation")
        if fig is not None:
            files += _write_figure(fig, pictures, f"moe_{who}", png)
    files += _write_figure(plots.health_chart(report, f"50/50 child — verdict: {report['verdict']}"), pictures, "health_50_50", png)
    for label, sick in lesions.items():
        stem = "health_" + label.replace(" ", "_").replace("×", "x")
        files += _write_figure(plots.health_chart(sick, f"{label} — verdict: {sick['verdict']}"), pictures, stem, png)

    # ---- the summary page ------------------------------------------------------------------------------
    father, mother = pair["father"], pair["mother"]
    div = _divergence_summary(pair)
    spread_f, spread_m = _category_spread(father), _category_spread(mother)
    adv = pair["advantage"]
    f_skills, m_skills = _zoo_skills() if is_zoo else ([], [])
    ratios = list(pair["prescription"].values())
    by_role: dict[str, list[float]] = {}
    for name, ratio in pair["prescription"].items():
        by_role.setdefault(father["static"]["tensors"][name]["role"], []).append(ratio)

    lines = [
        "# The Model MRI on the demo family",
        "",
        "Generated by `python scripts/mri_pictures.py`; every number below was measured by that run "
        f"(device `{args.device}`, probes: {', '.join(f'{c} ({len(t)} texts)' for c, t in probes.items())}). "
        "Pictures (interactive HTML" + (", PNG" if png else "; no PNG because `kaleido` is not installed") + ") are in `docs/mri/`.",
        "",
        "## The family",
        "",
        _table(
            ["", "father", "mother"],
            [
                ["folder", f"`{_shown(args.father)}`", f"`{_shown(args.mother)}`"],
                ["architecture", str(father["model"]["architecture"]), str(mother["model"]["architecture"])],
                ["parameters", f"{father['model']['parameters']:,}", f"{mother['model']['parameters']:,}"],
                ["layers", str(father["model"]["num_layers"]), str(mother["model"]["num_layers"])],
                ["perplexity on the probes", _fmt(father["probes"]["perplexity_all"]), _fmt(mother["probes"]["perplexity_all"])],
            ]
            + ([["trained skills", ", ".join(f_skills), ", ".join(m_skills)]] if f_skills else []),
        ),
        "",
        "## Where the specialists differ: the divergence map",
        "",
        "Relative delta norm ‖mother − father‖ / ‖father‖ per layer and role (`mri/divergence.html`):",
        "",
    ]
    roles = sorted({r for row in pair["divergence"]["layers"] for r in row}, key=lambda r: plots.ROLE_ORDER.index(r) if r in plots.ROLE_ORDER else 99)
    lines.append(
        _table(
            ["layer", *roles, "whole layer"],
            [
                [f"L{i}", *(_fmt((row.get(r) or {}).get("rel_delta")) for r in roles), _fmt(div["totals"][i])]
                for i, row in enumerate(pair["divergence"]["layers"])
            ],
        )
    )
    other = pair["divergence"]["other"]
    if other:
        lines += ["", "Outside the layers: " + ", ".join(f"{r} {_fmt(d['rel_delta'])}" for r, d in other.items()) + "."]
    top, bottom = div["cells"][0], div["cells"][-1]
    finite_totals = [t for t in div["totals"] if t]
    lines += [
        "",
        f"The parents differ most in layer {top[1]}'s {top[2]} tensors (relative delta {_fmt(top[0])}) and least in "
        f"layer {bottom[1]}'s {bottom[2]} ({_fmt(bottom[0])}), a factor of {top[0] / bottom[0]:.1f}; whole layers range "
        f"from {_fmt(min(finite_totals))} to {_fmt(max(finite_totals))}. The map says where fine-tuning moved the two "
        "specialists apart, which is where the merge ratio matters.",
        "",
        "## Probe importance differs by probe category",
        "",
        "Importance = 1 − cos(h, h without layer i) of the final hidden states, mean over each category's probe "
        "texts (`mri/importance_father.html`, `mri/importance_mother.html`).",
        "",
        "Father:",
        "",
        _importance_table(father),
        "",
        "Mother:",
        "",
        _importance_table(mother),
        "",
    ]
    for who, spread in (("father", spread_f), ("mother", spread_m)):
        best = max((r for r in spread["rows"] if r["ratio"]), key=lambda r: r["ratio"], default=None)
        tops = ", ".join(f"{c} → L{i}" for c, i in spread["top_layer"].items())
        if best:
            lines.append(
                f"- The {who}'s most important layer per category: {tops}. The spread between categories is largest at "
                f"layer {best['layer']}: {best['max_cat']} {_fmt(best['max'])} vs {best['min_cat']} {_fmt(best['min'])} "
                f"({best['ratio']:.1f}×)."
            )
    cells = [(adv[c][i], i, c) for c in adv for i in range(len(adv[c]))]
    most_m, most_f = max(cells), min(cells)
    lines += [
        "",
        "## Layer advantage (mother − father importance)",
        "",
        _table(["layer", *adv], [[f"L{i}", *(f"{adv[c][i]:+.3f}" for c in adv)] for i in range(len(next(iter(adv.values()))))]),
        "",
        f"The mother relies on a layer most beyond the father at layer {most_m[1]} on {most_m[2]} ({most_m[0]:+.3f}); "
        f"the father most beyond the mother at layer {most_f[1]} on {most_f[2]} ({most_f[0]:+.3f}) (`mri/advantage.html`).",
        "",
    ]
    if f_skills and m_skills and all(s in adv for s in f_skills + m_skills):
        mean_f = statistics.fmean(v for s in f_skills for v in adv[s])
        mean_m = statistics.fmean(v for s in m_skills for v in adv[s])
        lines.append(
            f"Mean advantage over layers on the mother's skills ({', '.join(m_skills)}): {mean_m:+.4f}; on the father's "
            f"skills ({', '.join(f_skills)}): {mean_f:+.4f}."
        )
        lines.append("")
    lines += [
        "## The prescription (seed 002)",
        "",
        f"`mri_ratio` (share of the mother) for {len(ratios)} tensors: min {_fmt(min(ratios), 4)}, mean "
        f"{_fmt(statistics.fmean(ratios), 4)}, max {_fmt(max(ratios), 4)}. Mean per role: "
        + ", ".join(f"{r} {_fmt(statistics.fmean(v), 4)}" for r, v in sorted(by_role.items()))
        + ". With related parents the static scores (entropy, std, norm) are nearly equal, so the ratios stay close "
        "to 0.5 and lean towards the parent whose layer the probes depend on more; `mri_trust` in the darwin-v6 "
        "genome decides how much of this the child follows.",
        "",
        "## Health check",
        "",
        "The 50/50 linear merge of the two parents (built with the merge engine), and two lesioned copies of it "
        "(`health.zero_layer` on the layer both parents rely on most, `health.amplify_layer` ×10 on the layer they "
        "rely on least). *child/parents ↑* is the largest child ÷ max(parents) importance over layers (interference "
        f"needs > {health.INTERFERENCE_RATIO:g} and child > {health.INTERFERENCE_FLOOR:g}); *child/parents ↓* is the "
        f"smallest child ÷ min(parents) (function loss needs < {health.FUNCTION_LOSS_RATIO:g} with both parents > "
        f"{health.FUNCTION_LOSS_PARENT_FLOOR:g}).",
        "",
        _table(
            ["child", "verdict", "findings", "child/parents ↑", "child/parents ↓", "perplexity (father / mother)", "repeated 3-grams (father / mother)"],
            [_health_lines("50/50 merge", report)] + [_health_lines(label, r) for label, r in lesions.items()],
        ),
        "",
        *(
            [
                "Perplexity counts every token of the probe texts. The demo models are trained with the loss on the "
                "answers only (`darwin_core/zoo/build.py`), so the prompt's random word is unpredictable to them and the "
                "perplexities are large; the check only compares the child with its own parents.",
                "",
            ]
            if is_zoo
            else []
        ),
        "Per-layer importance (mean over categories):",
        "",
        _table(
            ["layer", "father", "mother", "50/50 child", *lesions],
            [
                [f"L{i}", _fmt(f_imp[i]), _fmt(m_imp[i]), _fmt(report["models"]["child"]["importance"][i]),
                 *(_fmt(r["models"]["child"]["importance"][i]) for r in lesions.values())]
                for i in range(len(f_imp))
            ],
        ),
        "",
        "## Files",
        "",
        *(f"- `mri/{name}`" for name in files + ["pair_scan.json", "health_50_50.json"]),
        "",
    ]
    (args.out / "mri.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"scan {scan_s:.1f} s, health check {health_s:.1f} s; wrote {args.out / 'mri.md'} and {len(files)} picture files")
    if not png:
        print("kaleido is not installed: wrote HTML pictures only (no PNG)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except DarwinError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
