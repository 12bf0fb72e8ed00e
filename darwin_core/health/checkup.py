"""The child's check-up: is the merged model healthy compared with its two parents?

A merge can go wrong without any error: two parents' weights can fight in a layer (the child suddenly
depends on that layer far more than either parent did: *interference*), a layer the parents relied on can
be averaged into irrelevance (*function loss*), values can overflow (NaN/Inf), the child can become
uncertain on ordinary text (perplexity) or fall into loops when it writes (degeneration). The check
measures all of it with the same probe texts for child and parents and compares the child with *its own
parents*, so the verdict does not depend on how big or how well trained the family is.

Per layer, importance is the MRI's `1 − cos(h, h_skip)` (mri.run_probes), averaged over probe categories.

Thresholds (module constants, reported in every result):

* Interference at layer i: child > INTERFERENCE_RATIO × max(father, mother) and child > INTERFERENCE_FLOOR.
  The ratio 2 means "twice what the more dependent parent showed"; the floor 0.05 (final hidden states
  turned by about 18°) keeps tiny absolute numbers, where ratios are noise, from being flagged. A clean
  50/50 merge of the demo parents stays close to 1× on every layer, a layer whose output is scaled ×10 goes
  far above 2× (docs/mri.md gives the measured ratios).
* Function loss at layer i: min(father, mother) > FUNCTION_LOSS_PARENT_FLOOR (both parents rely on it; 0.02
  is a turn of about 11°, below which a layer does little in either parent and losing it is no finding) and
  child < FUNCTION_LOSS_RATIO × min(father, mother) (the child keeps less than a fifth of it). A layer whose
  projections were zeroed scores exactly 0 (it becomes the identity), while an intact merge stays near its
  parents.
* Perplexity on the probe texts: warning above PERPLEXITY_WARNING × the worse parent, broken above
  PERPLEXITY_BROKEN ×.
* Degeneration: share of repeated 3-grams in the greedy continuations of the probe texts; flagged when the
  child's share is ≥ DEGENERATION_FLOOR and ≥ the parents' highest + DEGENERATION_MARGIN (parents that
  repeat themselves anyway, like tiny demo models, do not make their child look sick).
* Any NaN/Inf in the child's weights or outputs: broken.

* Skill lost (`darwin_core.health.retention`): on a task's held-out items the child is worse than the better
  parent at McNemar p < 0.05; the finding names the task ("skill lost: <task>"). Needs tasks (or a run's held-out
  per-item results); without them the check is layer-level only and says so.

Verdict: "broken" if any finding is broken, else "warning" if any finding is a warning, else "healthy".
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from darwin_core.mri import scan as mri
from darwin_core.errors import DarwinError
from darwin_core.fitness.generate import generate_greedy
from darwin_core.fitness.evaluate import EvalResult
from darwin_core.fitness.probes import resolve_probes
from darwin_core.fitness.tasks import Task
from darwin_core.health.retention import retention, skill_findings
from darwin_core.mri.probes import Probes

FORMAT = "darwin-health/1"

INTERFERENCE_RATIO = 2.0
INTERFERENCE_FLOOR = 0.05
FUNCTION_LOSS_PARENT_FLOOR = 0.02
FUNCTION_LOSS_RATIO = 0.2
PERPLEXITY_WARNING = 1.5
PERPLEXITY_BROKEN = 5.0
DEGENERATION_NGRAM = 3
DEGENERATION_FLOOR = 0.5
DEGENERATION_MARGIN = 0.2
GENERATION_TOKENS = 32

THRESHOLDS = {
    "interference_ratio": INTERFERENCE_RATIO,
    "interference_floor": INTERFERENCE_FLOOR,
    "function_loss_parent_floor": FUNCTION_LOSS_PARENT_FLOOR,
    "function_loss_ratio": FUNCTION_LOSS_RATIO,
    "perplexity_warning": PERPLEXITY_WARNING,
    "perplexity_broken": PERPLEXITY_BROKEN,
    "degeneration_ngram": DEGENERATION_NGRAM,
    "degeneration_floor": DEGENERATION_FLOOR,
    "degeneration_margin": DEGENERATION_MARGIN,
}


def repetition_rate(token_lists: Sequence[Sequence[int]], n: int = DEGENERATION_NGRAM) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same text, over all texts (0 when none)."""
    total = distinct = 0
    for tokens in token_lists:
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        distinct += len(set(grams))
    return 1.0 - distinct / total if total else 0.0


def layer_importance(importance: Mapping[str, Sequence[float]]) -> list[float]:
    """Per layer, the mean importance over probe categories."""
    columns = list(importance.values())
    return [sum(values) / len(columns) for values in zip(*columns)]


def measure(model_dir: str | Path, probes: Probes, *, device: str = "cpu", batch_size: int = mri.PROBE_BATCH,
            generation_tokens: int = GENERATION_TOKENS, tasks: Sequence[Task] = ()) -> dict:
    """What the check compares for one model: importance per layer (and per category), perplexity,
    NaN/Inf in outputs, greedy continuations of the probe texts and their repetition rate, and (with `tasks`)
    the per-item results on their held-out split, while the model is loaded anyway."""
    from darwin_core.fitness.evaluate import evaluate

    model, tokenizer = mri.load_model(model_dir, device)
    heldout = None
    try:
        probe = mri.run_probes(model, tokenizer, probes, batch_size=batch_size)
        prompts = [text for texts in probe["used"].values() for text in texts]
        outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=generation_tokens, batch_size=batch_size)
        if tasks:
            heldout = evaluate(model, tokenizer, list(tasks), split="heldout", batch_size=batch_size).to_dict()
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    tokens = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in outputs]
    return {
        "path": str(model_dir),
        "importance": layer_importance(probe["importance"]),
        "importance_by_category": probe["importance"],
        "perplexity": probe["perplexity_all"],
        "nonfinite_outputs": probe["nonfinite_outputs"],
        "generations": outputs,
        "repetition": repetition_rate(tokens),
        **({"heldout": heldout} if heldout is not None else {}),
    }


def _layers_text(layers: Sequence[int]) -> str:
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(i) for i in layers)


def assess(child: Mapping, father: Mapping, mother: Mapping, *, nonfinite_weights: Mapping[str, int] | None = None,
           skills: Mapping[str, Any] | None = None) -> dict:
    """Findings and verdict from three measurements and, when given, the skill retention
    (`retention.retention`) on the held-out split (pure: numbers in, report out)."""
    c, f, m = child["importance"], father["importance"], mother["importance"]
    if not (len(c) == len(f) == len(m)):
        raise DarwinError(f"The child has {len(c)} layers and the parents {len(f)} and {len(m)}, so they cannot be compared.")
    findings: list[dict] = []

    def add(kind: str, severity: str, message: str, layers: Sequence[int] = ()) -> None:
        findings.append({"kind": kind, "severity": severity, "layers": list(layers), "message": message})

    bad = dict(nonfinite_weights or {})
    if bad:
        first = sorted(bad)[0]
        add("nonfinite_weights", "broken", f"{len(bad)} of the child's tensors contain NaN or Inf values (for example {first}).")
    if child.get("nonfinite_outputs"):
        add("nonfinite_outputs", "broken", "The child's outputs on the probe texts contain NaN or Inf values.")

    interference = [
        i for i in range(len(c)) if c[i] > INTERFERENCE_FLOOR and c[i] > INTERFERENCE_RATIO * max(f[i], m[i])
    ]
    if interference:
        worst = max(interference, key=lambda i: c[i] / max(f[i], m[i], 1e-12))
        add(
            "interference",
            "warning",
            f"The child depends on {_layers_text(interference)} far more than either parent (layer {worst}: "
            f"importance {c[worst]:.3f} vs at most {max(f[worst], m[worst]):.3f}), a sign that the parents' weights interfere there.",
            interference,
        )
    loss = [
        i for i in range(len(c))
        if min(f[i], m[i]) > FUNCTION_LOSS_PARENT_FLOOR and c[i] < FUNCTION_LOSS_RATIO * min(f[i], m[i])
    ]
    if loss:
        worst = min(loss, key=lambda i: c[i] / min(f[i], m[i]))
        add(
            "function_loss",
            "warning",
            f"Both parents rely on {_layers_text(loss)} but the child barely does (layer {worst}: importance "
            f"{c[worst]:.3f} vs at least {min(f[worst], m[worst]):.3f}), so what it did may be lost.",
            loss,
        )

    ppl_c, ppl_f, ppl_m = child.get("perplexity"), father.get("perplexity"), mother.get("perplexity")
    if ppl_c is None and not child.get("nonfinite_outputs"):
        add("perplexity", "broken", "The child's perplexity on the probe texts could not be computed.")
    elif ppl_c is not None and ppl_f is not None and ppl_m is not None:
        worse = max(ppl_f, ppl_m)
        ratio = ppl_c / worse if worse > 0 else float("inf")
        if ratio > PERPLEXITY_WARNING:
            severity = "broken" if ratio > PERPLEXITY_BROKEN else "warning"
            add("perplexity", severity, f"The child's perplexity on the probe texts is {ppl_c:.3g}, {ratio:.1f}× the worse parent's ({worse:.3g}).")

    rep_c = child.get("repetition", 0.0)
    rep_parents = max(father.get("repetition", 0.0), mother.get("repetition", 0.0))
    if rep_c >= DEGENERATION_FLOOR and rep_c >= rep_parents + DEGENERATION_MARGIN:
        add(
            "degeneration",
            "warning",
            f"The child's greedy continuations repeat themselves ({rep_c:.0%} repeated {DEGENERATION_NGRAM}-grams vs at most {rep_parents:.0%} for the parents).",
        )

    findings += skill_findings(skills or {})
    return _verdict(findings, skills)


def _verdict(findings: list[dict], skills: Mapping[str, Any] | None) -> dict:
    """The verdict and its summary: never "healthy" with a finding (a lost skill is a warning)."""
    severities = {finding["severity"] for finding in findings}
    verdict = "broken" if "broken" in severities else "warning" if severities else "healthy"
    flagged = sorted({i for finding in findings for i in finding["layers"]})
    kept = (f" every skill kept ({len(skills['tasks'])} tasks, held-out, vs the better parent)," if skills
            else " (skills not checked: no tasks),")
    summary = (
        f"Healthy: no interference, no function loss,{kept} no NaN/Inf, perplexity and generations in line with the parents."
        if verdict == "healthy"
        else f"{verdict.capitalize()}: " + " ".join(finding["message"] for finding in findings)
    )
    report = {"verdict": verdict, "layers_flagged": flagged, "findings": findings, "summary": summary}
    if skills is not None:
        report["skills"] = dict(skills)
    return report


def check_health(
    child_dir: str | Path,
    father_dir: str | Path,
    mother_dir: str | Path,
    *,
    probes: Probes | str | Path | None = None,
    device: str = "cpu",
    batch_size: int = mri.PROBE_BATCH,
    generation_tokens: int = GENERATION_TOKENS,
    tasks: Sequence[Task] = (),
    heldout_results: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict:
    """Compare the child with both parents layer by layer and, task by task, on the held-out split; a
    JSON-ready report with the verdict.

    Skills: from `heldout_results` (a run's heldout-results.json: the items its report measured, no model run
    again) when they hold the child and both parents, else by scoring the three models on `tasks`' held-out
    items; with neither, the check is layer-level only."""
    from darwin_core.health.retention import retention_from_results

    probe_set = resolve_probes(probes)
    skills = retention_from_results(heldout_results, seed=seed) if heldout_results else None
    scored_tasks = tasks if skills is None else ()
    for label, folder in (("child", child_dir), ("father", father_dir), ("mother", mother_dir)):
        if not Path(folder).is_dir():
            raise DarwinError(f"The {label} folder {folder} does not exist.")
    nonfinite = mri.nonfinite_tensors(child_dir, device=device)
    measured = {
        label: measure(folder, probe_set, device=device, batch_size=batch_size, generation_tokens=generation_tokens,
                       tasks=scored_tasks)
        for label, folder in (("child", child_dir), ("father", father_dir), ("mother", mother_dir))
    }
    if scored_tasks:
        child, father, mother = (EvalResult.from_dict(measured[k].pop("heldout")) for k in ("child", "father", "mother"))
        skills = retention(child, father, mother, seed=seed)
    report = assess(measured["child"], measured["father"], measured["mother"], nonfinite_weights=nonfinite, skills=skills)
    return {
        "format": FORMAT,
        **report,
        "thresholds": dict(THRESHOLDS),
        "probe_categories": list(probe_set),
        "nonfinite_weights": nonfinite,
        "models": measured,
    }


# --------------------------------------------------------------------------------------------------------------
# Lesions: known-sick children, to show (and test) what the check catches
# --------------------------------------------------------------------------------------------------------------

# What a decoder layer adds to the residual stream is computed by these roles; norms are left alone (a zero
# norm weight does not make a layer the identity, and Gemma's layer_scalar multiplies the whole stream).
COMPUTE_ROLES = frozenset({"attn", "linear_attn", "ffn", "router", "experts", "shared_expert"})
# The projections that write into the residual stream: scaling them scales exactly what the layer adds.
OUTPUT_PROJECTIONS = ("o_proj.weight", "down_proj.weight", "out_proj.weight", "w2.weight", "dense.weight")


def edited_copy(src: str | Path, dst: str | Path, edit) -> Path:
    """Copy a model folder, passing every tensor through `edit(name, tensor) -> tensor` (one at a time)."""
    from darwin_core.io.tensors import ShardedWriter

    source = Path(src)
    reader = mri.open_reader(source)
    with ShardedWriter(dst) as writer:
        for name in reader.names:
            writer.add(name, edit(name, reader.get(name)))
        for file in sorted(source.iterdir()):
            if file.is_file() and file.suffix != ".safetensors" and file.name != "model.safetensors.index.json":
                writer.copy_file(file)
    return Path(dst)


def zero_layer(src: str | Path, dst: str | Path, layer: int) -> Path:
    """A copy of the model whose `layer` computes nothing (all its attention/FFN/expert weights zero): the
    layer becomes the identity, a textbook function loss."""
    from darwin_core.parents.anatomy import classify

    def edit(name: str, tensor: torch.Tensor) -> torch.Tensor:
        role = classify(name)
        return torch.zeros_like(tensor) if role.layer == layer and role.role in COMPUTE_ROLES else tensor

    return edited_copy(src, dst, edit)


def amplify_layer(src: str | Path, dst: str | Path, layer: int, factor: float = 10.0) -> Path:
    """A copy of the model whose `layer` writes `factor`× more into the residual stream (its output
    projections scaled): the overdriven layer a bad merge can produce, a textbook interference."""
    from darwin_core.parents.anatomy import classify

    def edit(name: str, tensor: torch.Tensor) -> torch.Tensor:
        role = classify(name)
        if role.layer == layer and role.role in COMPUTE_ROLES and name.endswith(OUTPUT_PROJECTIONS):
            return tensor * factor
        return tensor

    return edited_copy(src, dst, edit)


