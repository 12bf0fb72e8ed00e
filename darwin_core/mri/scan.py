"""The Model MRI: where in a network its parameters and its skills live, measured before breeding.

A scan has four parts, each answering a question the breeder asks (seed 002, seed 004):

* **Static profile** — per tensor: Shannon entropy of the value histogram, standard deviation, L2 norm;
  aggregated per layer and anatomical role. Cheap, from the files alone, one tensor in memory at a time, so
  it works on checkpoints larger than RAM.
* **Probe importance** — per decoder layer and probe category: `1 − cos(h, h_skip_i)` of the final hidden
  states when layer i is replaced by the identity (a forward hook, so any architecture works). Shows which
  layers each kind of input depends on.
* **Parent divergence** (pairs only) — per tensor and per layer × role: relative delta norm `‖b−a‖/‖a‖` and
  cosine. Shows where two specialists differ. Parents whose vocabularies differ in size (bred row by token)
  leave their embedding and output head out of it (`divergence.uncompared` says why).
* **MoE health** (MoE models only) — router entropy, dead-expert share, expert similarity and the expert
  utilisation matrix, from router outputs captured during the probe run and from the expert weights.

From two parents' scans, `prescription` computes seed 002's per-tensor `mri_ratio` (share of the mother),
which the darwin-v6 genome blends with its own ratios through `mri_trust`.

Scans are plain JSON-ready dicts; `save_scan` writes them with sorted keys and floats rounded to 6
significant digits, so the same scan twice gives byte-identical files.

The parts live in their own modules (`static`, `tensorpass`, `probing`, `moe`, `prescription`); this module
assembles them into scans (`scan_model`, `scan_pair`), saves and loads them, and re-exports the parts'
public names, so `darwin_core.mri.scan.<name>` keeps working for every caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from darwin_core.io.atomic import atomic_write_text
from darwin_core.errors import DarwinError
from darwin_core.io.tensors import TensorReader
from darwin_core.mri import static
from darwin_core.mri.moe import EXPERT_SAMPLE, moe_section
from darwin_core.mri.prescription import combined_scores, prescription
from darwin_core.mri.probes import GENERIC_PROBES, Probes, resolve_probes
from darwin_core.mri.probing import PROBE_BATCH, load_model, probe_model, run_probes
from darwin_core.mri.static import (
    HIST_BINS,
    HIST_SAMPLE,
    SAMPLE_THRESHOLD,
    aggregate_divergence,
    aggregate_static,
    compare_tensors,
    divergence_from_sums,
    histogram_entropy,
    sample_index,
    tensor_profile,
)
from darwin_core.mri.tensorpass import check_same_tensors, nonfinite_tensors, open_reader, read_config, tensor_pass
from darwin_core.parents import modelparts
from darwin_core.parents.anatomy import layer_count

__all__ = [
    "EXPERT_SAMPLE", "FORMAT", "HIST_BINS", "HIST_SAMPLE", "PAIR_FORMAT", "PROBE_BATCH", "SAMPLE_THRESHOLD",
    "aggregate_divergence", "aggregate_static", "combined_scores", "compare_tensors", "histogram_entropy",
    "load_model", "load_scan", "model_folder", "moe_section", "nonfinite_tensors", "open_reader", "prescription",
    "probe_model", "read_config", "run_probes", "sample_index", "save_json", "save_scan", "scan_json",
    "scan_model", "scan_pair", "scan_summary", "tensor_pass", "tensor_profile",
]

FORMAT = "darwin-mri/1"
PAIR_FORMAT = "darwin-mri-pair/1"
SIGNIFICANT_DIGITS = 6


# --------------------------------------------------------------------------------------------------------------
# Scans
# --------------------------------------------------------------------------------------------------------------


def _model_info(model_dir: Path, reader: TensorReader, config: dict) -> dict:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    architectures = config.get("architectures") or []
    return {
        "path": str(model_dir),
        "architecture": architectures[0] if architectures else None,
        "model_type": config.get("model_type"),
        "num_layers": layer_count(config),
        "hidden_size": config.get("hidden_size") or text.get("hidden_size"),
        "parameters": int(reader.parameter_count),
        "bytes": int(reader.total_bytes),
        "tensors": len(reader.names),
        "is_moe": modelparts.is_moe_config(config),
    }


def _settings(probes: Probes, device: str) -> dict:
    """The sampling settings the static profile ran with (read from `static` at call time, as it does)."""
    return {
        "hist_bins": static.HIST_BINS,
        "sample_threshold": static.SAMPLE_THRESHOLD,
        "hist_sample": static.HIST_SAMPLE,
        "expert_sample": EXPERT_SAMPLE,
        "device": str(device),
        "probe_categories": list(probes),
    }


def _assemble(model_dir: Path, reader: TensorReader, config: dict, profiles: dict, similarity: dict, probe: dict, probes: Probes, device: str) -> dict:
    probes = probe.get("used", probes)  # without the texts that gave no token
    info = _model_info(model_dir, reader, config)
    n_layers = info["num_layers"]
    scan = {
        "format": FORMAT,
        "model": info,
        "settings": _settings(probes, device),
        "static": {"tensors": profiles, **aggregate_static(profiles, n_layers)},
        "probes": {
            "categories": list(probes),
            "texts": {c: list(t) for c, t in probes.items()},
            "importance": probe["importance"],
            "perplexity": probe["perplexity"],
            "perplexity_all": probe["perplexity_all"],
            "tokens": probe["tokens"],
            "nonfinite_outputs": probe["nonfinite_outputs"],
        },
    }
    if info["is_moe"]:
        scan["moe"] = moe_section(
            probe.get("routing"), similarity, modelparts.expert_count(config) or 0, modelparts.experts_per_token(config)
        )
    return scan


def scan_model(
    model_dir: str | Path,
    *,
    probes: Probes | str | Path | None = None,
    device: str = "cpu",
    batch_size: int = PROBE_BATCH,
) -> dict:
    """The MRI of one model (a local folder in the Hub layout): static profile, probe importance, MoE health."""
    folder = Path(model_dir)
    probe_set = resolve_probes(probes)
    reader = open_reader(folder, device)
    config = read_config(folder)
    n_experts = modelparts.expert_count(config) if modelparts.is_moe_config(config) else None
    passed = tensor_pass([reader], n_experts)
    probe = probe_model(folder, probe_set, device, batch_size)
    return _assemble(folder, reader, config, passed["profiles"][0], passed["similarity"][0], probe, probe_set, device)


def scan_pair(
    father_dir: str | Path,
    mother_dir: str | Path,
    *,
    probes: Probes | str | Path | None = None,
    device: str = "cpu",
    batch_size: int = PROBE_BATCH,
    weights: Mapping[str, float] | None = None,
    probe_source: str | None = None,
) -> dict:
    """Both parents' scans, their divergence (per tensor, per layer × role), the layer advantage map
    (mother − father importance per layer and category) and the seed-002 prescription (per-tensor
    mri_ratio, share of the mother). Each tensor is read once per parent. `probe_source` (where the probe
    texts came from, e.g. mri.probes.TASK_PROBES) is recorded for the log, the MRI tab and the card."""
    folders = (Path(father_dir), Path(mother_dir))
    probe_set = resolve_probes(probes)
    readers = [open_reader(f, device) for f in folders]
    configs = [read_config(f) for f in folders]
    uncompared = check_same_tensors(*readers)
    moe = modelparts.is_moe_config(configs[0])
    passed = tensor_pass(readers, modelparts.expert_count(configs[0]) if moe else None, uncompared)
    scans = []
    for k, folder in enumerate(folders):
        probe = probe_model(folder, probe_set, device, batch_size)
        scans.append(
            _assemble(folder, readers[k], configs[k], passed["profiles"][k], passed["similarity"][k], probe, probe_set, device)
        )
    father, mother = scans
    n_layers = father["model"]["num_layers"]
    divergence = {
        "tensors": {name: divergence_from_sums(s) for name, s in passed["sums"].items()},
        **aggregate_divergence(passed["sums"], passed["roles"], n_layers),
        "uncompared": uncompared,
    }
    advantage = {
        c: [m - f for f, m in zip(father["probes"]["importance"][c], mother["probes"]["importance"][c])]
        for c in father["probes"]["categories"] if c in mother["probes"]["importance"]
    }
    return {
        "format": PAIR_FORMAT,
        "probe_source": probe_source or (GENERIC_PROBES if probes is None else "given"),
        "father": father,
        "mother": mother,
        "divergence": divergence,
        "advantage": advantage,
        "prescription": prescription(father, mother, weights=weights),
    }


# --------------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------------


def _rounded(value: object) -> object:
    """Floats to SIGNIFICANT_DIGITS significant digits (non-finite → None); containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def scan_json(scan: Mapping) -> str:
    """The canonical text of a scan (or any report): sorted keys, rounded floats, strict JSON (no NaN)."""
    return json.dumps(_rounded(scan), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def save_json(report: Mapping, path: str | Path) -> Path:
    """Write canonical JSON beside the target, then rename it into place, so it is never half there."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, scan_json(report))
    return target


def save_scan(scan: Mapping, path: str | Path) -> Path:
    """Write a scan as canonical JSON: the same scan twice gives byte-identical files."""
    return save_json(scan, path)


def load_scan(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DarwinError(f"The scan file {path} does not exist.") from None
    except json.JSONDecodeError:
        raise DarwinError(f"The scan file {path} is not valid JSON.") from None
    if data.get("format") not in (FORMAT, PAIR_FORMAT):
        raise DarwinError(f"The file {path} is not a Darwin MRI scan.")
    return data


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def scan_summary(scan: Mapping) -> str:
    lines = []
    scans = [("father", scan["father"]), ("mother", scan["mother"])] if scan["format"] == PAIR_FORMAT else [("model", scan)]
    for label, s in scans:
        imp = s["probes"]["importance"]
        top = {c: max(range(len(v)), key=v.__getitem__) for c, v in imp.items() if v}
        lines.append(
            f"{label}: {s['model']['model_type']}, {s['model']['num_layers']} layers, "
            f"perplexity {s['probes']['perplexity_all']:.3g}; most important layer per probe: "
            + ", ".join(f"{c} L{i}" for c, i in top.items())
        )
        if "moe" in s:
            dead = [d for d in s["moe"]["dead_share"] if d is not None]
            if dead:
                lines.append(f"{label}: MoE dead-expert share up to {max(dead):.0%}")
    if scan["format"] == PAIR_FORMAT:
        totals = [d["rel_delta"] for d in scan["divergence"]["layer_total"]]
        finite = [(i, v) for i, v in enumerate(totals) if v is not None]
        if finite:
            i, v = max(finite, key=lambda iv: iv[1])
            lines.append(f"parents differ most at layer {i} (relative delta {v:.3g})")
        uncompared = scan["divergence"].get("uncompared") or {}
        if uncompared:
            lines.append(f"not compared: {', '.join(sorted(uncompared))} ({next(iter(uncompared.values()))})")
        ratios = list(scan["prescription"].values())
        lines.append(f"prescription: {len(ratios)} tensors, mean mri_ratio {sum(ratios) / len(ratios):.3f}")
    return "\n".join(lines)


def model_folder(ref: str) -> Path:
    """A local model folder for a CLI argument: the folder itself, or a Hub id ("org/name[@revision]")
    resolved and downloaded (weights, config, tokenizer only) with HF_TOKEN if set."""
    if Path(ref).is_dir():
        return Path(ref)
    import os

    from darwin_core.parents import hub

    token = os.environ.get("HF_TOKEN") or None
    resolved = hub.download(hub.resolve_model(ref, local_mode=True, token=token), token)
    if resolved.folder is None:
        raise DarwinError(f"{ref} could not be made available locally.")
    return Path(resolved.folder)
