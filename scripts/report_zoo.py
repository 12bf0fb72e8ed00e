"""Re-measure the shipped demo zoo and write docs/demo-zoo.md; exit 1 when an acceptance check fails.

    python scripts/report_zoo.py [--zoo assets/zoo] [--out docs/demo-zoo.md] [--rebuild]

Everything in the document is measured by this script on this machine (held-out accuracies of the three
shipped parents and of a plain 50/50 linear merge, sha256 of the shipped weights; the same for the rivals
family beside the zoo, with the merge that takes each tensor from the rival that trained it), except the build
times, which are read from the zoo.json files (measured by the builds). `--rebuild` also rebuilds the zoo into a temporary
folder and checks that the bytes are identical (takes minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from darwin_core.parents import demo  # noqa: E402
from darwin_core.zoo import build as zoo  # noqa: E402
from darwin_core.zoo import rivals  # noqa: E402
from darwin_core.fitness.demo_tasks import SKILLS, demo_task  # noqa: E402

LEAD_POINTS = 20.0
MAX_PARENT_COMPOSITE = 0.80
MAX_BUILD_SECONDS = 15 * 60
MAX_BYTES = 8 * 2**20


def measure(zoo_dir: Path) -> tuple[dict, dict[str, dict[str, float]], dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = zoo.read_manifest(zoo_dir)  # the zoo's own file; the rivals are measured apart
    paths = {m: p for m, p in zoo.zoo_paths(zoo_dir).items() if m in zoo.MEMBERS}
    tokenizer = AutoTokenizer.from_pretrained(paths["father"])
    models = {m: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for m, p in paths.items()}
    models["linear_50_50"] = zoo.linear_50_50(models["father"], models["mother"])
    skills = tuple(manifest["skills"])
    with zoo.deterministic(manifest["spec"]["threads"]):  # the thread count the build measured with
        scores = {name: zoo.evaluate(model, tokenizer, skills, seed=manifest["seed"]) for name, model in models.items()}
    sizes = {m: {"parameters": sum(p.numel() for p in models[m].parameters()), "bytes": (paths[m] / "model.safetensors").stat().st_size} for m in zoo.MEMBERS}
    for m in ("father", "mother"):
        sizes[m]["relative_delta"] = relative_delta(models[m], models["base"])
    return manifest, scores, sizes


@torch.no_grad()
def relative_delta(model, base) -> float:
    """‖model − base‖ / ‖base‖ over all parameters: how far a fine-tune moved from the shared base."""
    base_params = dict(base.named_parameters())
    num = sum(float(((p - base_params[n]) ** 2).sum()) for n, p in model.named_parameters())
    den = sum(float((p**2).sum()) for p in base.parameters())
    return (num / den) ** 0.5


def checks(manifest: dict, scores: dict, sizes: dict, mismatched: list[str], rebuild: dict | None) -> list[tuple[str, bool, str]]:
    spec = manifest["spec"]
    out: list[tuple[str, bool, str]] = []
    for me, other, own in (("father", "mother", spec["father_skills"]), ("mother", "father", spec["mother_skills"])):
        leads = {s: 100 * (scores[me][s] - scores[other][s]) for s in own}
        detail = ", ".join(f"{s} {v:+.1f}" for s, v in leads.items())
        out.append((f"the {me} leads the {other} by ≥{LEAD_POINTS:.0f} points on each of its own skills", all(v >= LEAD_POINTS for v in leads.values()), detail))
    for parent in ("father", "mother"):
        c = zoo.composite(scores[parent])
        out.append((f"the {parent}'s composite is at most {MAX_PARENT_COMPOSITE:.0%}", c <= MAX_PARENT_COMPOSITE, f"{c:.1%}"))
    merged = zoo.composite(scores["linear_50_50"])
    best_parent = max(zoo.composite(scores["father"]), zoo.composite(scores["mother"]))
    out.append(("the 50/50 linear merge is measured (informational: does it beat both parents on the composite?)", True, f"{merged:.1%} vs best parent {best_parent:.1%}: {'beats both' if merged > best_parent else 'does not beat both'}"))
    out.append(("the shipped weights match the sha256 in zoo.json", not mismatched, "all match" if not mismatched else "differ: " + ", ".join(mismatched)))
    same = all(abs(scores[m][s] - manifest["models"][m]["heldout_accuracy"][s]) < 1e-9 for m in scores for s in manifest["skills"])
    out.append(("re-measured accuracies equal those in zoo.json", same, "equal" if same else "differ (see the tables)"))
    out.append((f"the build took under {MAX_BUILD_SECONDS // 60} minutes (zoo.json)", manifest["build_seconds"] < MAX_BUILD_SECONDS, f"{manifest['build_seconds']:.0f} s on {manifest.get('build_machine', {}).get('cpu_count', '?')} CPUs (threads {spec['threads']})"))
    biggest = max(v["bytes"] for v in sizes.values())
    out.append((f"each model.safetensors is under {MAX_BYTES // 2**20} MiB", biggest < MAX_BYTES, f"largest {biggest / 2**20:.2f} MiB"))
    if rebuild is not None:
        out.append(("a rebuild gives byte-identical model.safetensors", not rebuild["mismatched"], f"{'identical' if not rebuild['mismatched'] else 'differ: ' + ', '.join(rebuild['mismatched'])}; rebuild took {rebuild['seconds']:.0f} s here"))
    return out


def render(manifest: dict, scores: dict, sizes: dict, results: list[tuple[str, bool, str]], rebuild: dict | None) -> str:
    spec = manifest["spec"]
    skills = manifest["skills"]
    lines = [
        "# The demo zoo",
        "",
        "Generated by `python scripts/report_zoo.py` — every number below was measured by that script "
        "(the build time is the one the build recorded in `assets/zoo/zoo.json`). Do not edit by hand.",
        "",
        "Three tiny Qwen3-architecture models ship in `assets/zoo/` so that breeding is meaningful on a laptop CPU: "
        "a **base** trained from scratch on a mix of character puzzles, and two specialists fine-tuned from it briefly "
        "with a small learning rate on *different* puzzles — the **father** and the **mother**. "
        "Rebuild with `python -m darwin_core zoo build` (or `--check` to verify the shipped bytes).",
        "",
        "## Skills",
        "",
        "| skill | example prompt → answer | what it asks | trained into |",
        "| --- | --- | --- | --- |",
    ]
    for s in skills:
        item = demo_task(s, manifest["seed"]).search[0]
        who = [m for m, key in (("base", "base_skills"), ("father", "father_skills"), ("mother", "mother_skills")) if s in spec[key]]
        lines.append(f"| {s} | `{item.prompt}` → `{item.answer}` | {SKILLS[s].description} | {', '.join(who)} |")
    lines += [
        "",
        f"Evaluation: exact match of the greedy answer on the held-out split (200 items per skill, seed {manifest['seed']}); "
        "the composite is the mean over skills. Training data never contains an evaluated word.",
        "",
        "## Held-out accuracy",
        "",
        "| model | " + " | ".join(skills) + " | composite |",
        "| --- | " + " | ".join("---:" for _ in skills) + " | ---: |",
    ]
    for name in ("base", "father", "mother", "linear_50_50"):
        label = "linear 50/50 merge of father and mother" if name == "linear_50_50" else name
        lines.append(f"| {label} | " + " | ".join(f"{100 * scores[name][s]:.1f}" for s in skills) + f" | **{100 * zoo.composite(scores[name]):.1f}** |")
    lines += [
        "",
        "The 50/50 merge is plain float32 `(father + mother) / 2` of every tensor (not shipped, measured here).",
        "",
        "## Models",
        "",
        "| model | parameters | model.safetensors | sha256 |",
        "| --- | ---: | ---: | --- |",
    ]
    for m in zoo.MEMBERS:
        lines.append(f"| {m} | {sizes[m]['parameters']:,} | {sizes[m]['bytes'] / 2**20:.2f} MiB | `{manifest['sha256'][f'{m}/model.safetensors'][:16]}…` |")
    lines += [
        "",
        f"Architecture {manifest['models']['base']['architecture']}: hidden {spec['hidden_size']}, {spec['num_layers']} layers, "
        f"{spec['num_heads']} heads ({spec['num_kv_heads']} KV), MLP {spec['intermediate_size']}, tied embeddings, character tokenizer. "
        f"Base: {spec['base_steps']} steps at lr {spec['base_lr']:g}; specialists: {spec['specialist_steps']} steps at lr {spec['specialist_lr']:g}; "
        f"batch {spec['batch_size']}; torch threads: {spec['threads']}. "
        f"The specialists' weights differ from the base's by {100 * sizes['father']['relative_delta']:.1f}% (father) and "
        f"{100 * sizes['mother']['relative_delta']:.1f}% (mother), relative L2 norm over all parameters.",
        "",
        "## Acceptance checks",
        "",
        "| check | result | measured |",
        "| --- | --- | --- |",
    ]
    for text, ok, detail in results:
        lines.append(f"| {text} | {'pass' if ok else '**FAIL**'} | {detail} |")
    if rebuild is None:
        lines += ["", "The rebuild check was not run for this report (`--rebuild` runs it; `python -m darwin_core zoo build --check` does too)."]
    build_machine = manifest.get("build_machine", {})
    lines += [
        "",
        "## Machines",
        "",
        f"- Built on: {build_machine.get('platform', 'unknown')}, {build_machine.get('cpu_count', '?')} CPUs, torch {manifest.get('torch', '?')}, "
        f"in {manifest['build_seconds']:.0f} s; 1-minute load average {_load(build_machine)} "
        "(other work shared the CPUs when it was above 1, which makes the build slower than on a quiet machine).",
        f"- This report: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "",
    ]
    return "\n".join(lines)


def measure_rivals(zoo_dir: Path) -> tuple[dict, dict[str, dict[str, float]]] | None:
    """The rivals' manifest and re-measured held-out accuracies (None when the family is not built)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = demo.rivals_dir(zoo_dir)
    if not (folder / zoo.MANIFEST).is_file():
        return None
    manifest = {**demo.read_manifest(folder), "_folder": folder}
    paths = {"base": zoo_dir / "base", **{m: folder / m for m in demo.RIVALS_SHIPPED}}
    tokenizer = AutoTokenizer.from_pretrained(paths["father"])
    models = {m: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for m, p in paths.items()}
    models["linear_50_50"] = zoo.linear_50_50(models["father"], models["mother"])
    models["by_parts"] = rivals.parts_merge(models["father"], models["mother"], tuple(manifest["spec"]["mother_parts"]))
    skills = tuple(manifest["skills"])
    with zoo.deterministic(manifest["spec"]["threads"]):
        scores = {name: zoo.evaluate(model, tokenizer, skills, seed=manifest["seed"]) for name, model in models.items()}
    return manifest, scores


def rivals_checks(manifest: dict, scores: dict) -> list[tuple[str, bool, str]]:
    mismatched = zoo.verify_hashes(manifest["_folder"], manifest["sha256"])
    same = all(abs(scores[m][s] - manifest["models"][m]["heldout_accuracy"][s]) < 1e-9 for m in scores for s in manifest["skills"])
    best_parent = max(zoo.composite(scores["father"]), zoo.composite(scores["mother"]))
    return [
        ("rivals: the shipped weights match the sha256 in their zoo.json", not mismatched, "all match" if not mismatched else "differ: " + ", ".join(mismatched)),
        ("rivals: re-measured accuracies equal those in their zoo.json", same, "equal" if same else "differ (see the table)"),
        ("rivals: the base scores at most 5% on each new skill", max(scores["base"].values()) <= 0.05, ", ".join(f"{s} {100 * v:.1f}%" for s, v in scores["base"].items())),
        ("rivals: the 50/50 blend keeps less than half the best parent's composite", zoo.composite(scores["linear_50_50"]) < best_parent / 2, f"{100 * zoo.composite(scores['linear_50_50']):.1f}% vs {100 * best_parent:.1f}%"),
        ("rivals: taking each tensor from the rival that trained it beats both rivals", zoo.composite(scores["by_parts"]) > best_parent, f"{100 * zoo.composite(scores['by_parts']):.1f}% vs {100 * best_parent:.1f}%"),
        (f"rivals: the build took under {MAX_BUILD_SECONDS // 60} minutes (zoo.json)", manifest["build_seconds"] < MAX_BUILD_SECONDS, f"{manifest['build_seconds']:.0f} s"),
    ]


def render_rivals(manifest: dict, scores: dict) -> list[str]:
    spec, skills = manifest["spec"], manifest["skills"]
    labels = {"base": "base (the zoo's)", "father": "rivals father", "mother": "rivals mother",
              "linear_50_50": "linear 50/50 merge of the rivals", "by_parts": "each tensor from the rival that trained it"}
    lines = [
        "## The rivals family",
        "",
        "Two more specialists ship in `assets/rivals/` (`demo:rivals_father`, `demo:rivals_mother`), fine-tuned from "
        f"the zoo's base on skills it lacks, each on its own part of the model: the father on `{spec['father_skill']}` "
        f"training only {', '.join(f'`{p}`' for p in spec['father_parts'])}, the mother on `{spec['mother_skill']}` "
        f"training only {', '.join(f'`{p}`' for p in spec['mother_parts'])}; both replay the base's skills "
        f"({', '.join(spec['replay_skills'])}). {spec['steps']} steps at lr {spec['lr']:g}, batch {spec['batch_size']}. "
        "A uniform blend halves both deltas and loses both skills. "
        "Rebuild with `python -m darwin_core zoo build --family rivals` (`--check` verifies the bytes).",
        "",
        "| model | " + " | ".join(skills) + " | composite |",
        "| --- | " + " | ".join("---:" for _ in skills) + " | ---: |",
    ]
    for name, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * scores[name][s]:.1f}" for s in skills) + f" | **{100 * zoo.composite(scores[name]):.1f}** |")
    lines += ["", "| model | model.safetensors | sha256 |", "| --- | ---: | --- |"]
    for m in demo.RIVALS_SHIPPED:
        lines.append(f"| rivals {m} | {manifest['models'][m]['bytes'] / 2**20:.2f} MiB | `{manifest['sha256'][f'{m}/model.safetensors'][:16]}…` |")
    return lines + ["", f"Built in {manifest['build_seconds']:.0f} s (load average {_load(manifest.get('build_machine', {}))}).", ""]


def _load(build_machine: dict) -> str:
    start, end = build_machine.get("load_average_at_start"), build_machine.get("load_average_at_end")
    return "not recorded" if start is None else f"{start:.1f} at the start and {end:.1f} at the end"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=zoo.DEFAULT_ZOO_DIR)
    parser.add_argument("--out", type=Path, default=zoo.REPO_ROOT / "docs" / "demo-zoo.md")
    parser.add_argument("--rebuild", action="store_true", help="also rebuild into a temporary folder and compare bytes")
    args = parser.parse_args(argv)

    manifest, scores, sizes = measure(args.zoo)
    mismatched = zoo.verify_hashes(args.zoo, manifest["sha256"])
    rebuild = None
    if args.rebuild:
        start = time.perf_counter()
        mismatched_rebuild, _ = zoo.check_rebuild(args.zoo, log=None)
        rebuild = {"seconds": time.perf_counter() - start, "mismatched": mismatched_rebuild}
    results = checks(manifest, scores, sizes, mismatched, rebuild)
    measured_rivals = measure_rivals(args.zoo)
    if measured_rivals is not None:
        results += rivals_checks(*measured_rivals)
    text = render(manifest, scores, sizes, results, rebuild)
    if measured_rivals is not None:
        cut = text.index("## Acceptance checks")
        text = text[:cut] + "\n".join(render_rivals(*measured_rivals)) + "\n" + text[cut:]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    failed = [text for text, ok, _ in results if not ok]
    for text, ok, detail in results:
        print(f"{'pass' if ok else 'FAIL'}  {text}: {detail}")
    print(f"wrote {args.out}")
    if failed:
        print(f"ACCEPTANCE FAILED: {len(failed)} check(s): " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
