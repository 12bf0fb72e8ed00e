"""The rivals family: two specialists whose deltas interfere, so that a uniform blend loses both skills.

The zoo's family is the easy case for a merge: its specialists are the base with some skills forgotten, and a
50/50 blend gives the base back. Here the specialists learn skills the base does not have (it scores 0 on
both), each on its *own half of the layer stack*, fine-tuned long enough that half a delta is not half a
skill: the father learns `double` with only decoder layers 0-1 trainable, the mother `shift` with only layers
2-3 trainable (both also replay the base's four skills, so their layers keep working on other prompts). A
uniform blend halves both deltas and loses both skills; a layer-wise recipe taking the father's layers 0-1 and
the mother's layers 2-3 keeps most of both. darwin-v6 can express that recipe: with 4 layers its blocks 0, 1,
3 and 4 each hold one layer.

What a user breeds from this family by default is its shipped config, `assets/rivals/breed.yaml`
(`python -m darwin_core evolve assets/rivals/breed.yaml`, written by the build from `breed_config_text`): the
per-layer genome (one ratio per decoder layer, 4 dimensions) with linear merges, the MRI scan made for the run.
darwin-v6 can express the recipe too, but not find it at the default budget: from its neutral point every step of
`global_ratio` (or of `mri_trust` and the role ratios, which move all four layers together) walks to a parent, a
plateau at one skill, and leaving it needs blocks 0-1 and 3-4 to move to opposite ends at once (measured in
docs/evolution.md). One gene per layer is the genome whose axes are this family's solution.

The base is the zoo's base (assets/zoo/base, checked against its sha256 in zoo.json), so this family adds two
3 MB models. The build is deterministic like the zoo's (fixed seeds, deterministic kernels, one thread);
`zoo build --family rivals --check` proves it against the sha256 in `assets/rivals/zoo.json`.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import replace_folder
from darwin_core.io.hashes import sha256_file
from darwin_core.parents.demo import (DEFAULT_RIVALS_DIR, DEFAULT_ZOO_DIR, MANIFEST, RIVALS_SHIPPED, read_manifest)
from darwin_core.zoo.build import _display_path, save_member, composite, deterministic, evaluate, linear_50_50, train

__all__ = ["BREED_CONFIG", "DEFAULT_RIVALS_SPEC", "RivalsSpec", "breed_config_text", "build_rivals",
           "check_rivals_rebuild", "family_breed_settings", "parts_merge"]

BREED_CONFIG = "breed.yaml"  # the family's shipped evolution config, beside its zoo.json


@dataclass(frozen=True)
class RivalsSpec:
    """Everything that decides the rivals' bytes (besides the zoo's base, pinned by its sha256)."""

    seed: int = 0
    threads: int = 1
    father_skill: str = "double"  # write every letter twice: copying with a repeat
    mother_skill: str = "shift"  # the next letter: a per-letter map
    father_parts: tuple[str, ...] = ("model.layers.0.", "model.layers.1.")  # parameter-name parts it trains
    mother_parts: tuple[str, ...] = ("model.layers.2.", "model.layers.3.")
    replay_skills: tuple[str, ...] = ("reverse", "uppercase", "translate", "sort")  # the base's own skills
    new_skill_copies: int = 2  # the new skill's share of a batch: 2 of 2 + 4 round-robin slots
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 30
    batch_size: int = 64

    @property
    def skills(self) -> tuple[str, ...]:
        """The family's composite: the two new skills (the base's own are measured but not part of it)."""
        return (self.father_skill, self.mother_skill)

    def training_mix(self, skill: str) -> tuple[str, ...]:
        return (skill,) * self.new_skill_copies + self.replay_skills


DEFAULT_RIVALS_SPEC = RivalsSpec()


def breed_config_text(spec: RivalsSpec = DEFAULT_RIVALS_SPEC) -> str:
    """The family's evolution config (YAML): what `evolve` breeds from the rivals by default (module docstring)."""
    import yaml

    settings = {
        "father": "demo:rivals_father", "mother": "demo:rivals_mother", "tasks": list(spec.skills),
        "genome": "per-layer", "method": "linear", "mri": "auto",
    }
    head = ("# The rivals' evolution config: python -m darwin_core evolve assets/rivals/breed.yaml\n"
            "# One ratio per decoder layer (per-layer, linear): the father trained layers 0-1, the mother layers\n"
            "# 2-3, so the recipe that keeps both skills lies on this genome's axes (darwin_core/zoo/rivals.py).\n"
            "# Written by `python -m darwin_core zoo build --family rivals`; measured in docs/evolution.md.\n")
    return head + yaml.safe_dump(settings, sort_keys=False)


def family_breed_settings(father: str, mother: str, rivals: Path | str = DEFAULT_RIVALS_DIR) -> dict | None:
    """The shipped config's search settings (genome, method, tasks, mri) when both parents are the rivals'
    members (by demo name, either order), else None: what a page or command starting a run from these parents
    uses as its defaults, so the app breeds them the way `evolve assets/rivals/breed.yaml` does."""
    import yaml

    members = {"demo:rivals_father", "demo:rivals_mother"}
    path = Path(rivals) / BREED_CONFIG
    if {father.strip(), mother.strip()} != members or not path.is_file():
        return None
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {key: settings[key] for key in ("genome", "method", "tasks", "mri") if key in settings}


def _load_zoo_base(zoo_dir: Path):
    """The zoo's base model and tokenizer, after checking its weights against zoo.json's sha256."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected = read_manifest(zoo_dir)["sha256"]["base/model.safetensors"]
    weights = zoo_dir / "base" / "model.safetensors"
    if not weights.is_file() or sha256_file(weights) != expected:
        raise DarwinError(f"The zoo's base at {zoo_dir / 'base'} is missing or differs from its zoo.json; "
                          "rebuild the zoo first (`python -m darwin_core zoo build`).")
    model = AutoModelForCausalLM.from_pretrained(zoo_dir / "base", dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(zoo_dir / "base"), expected


def parts_merge(father, mother, mother_parts: tuple[str, ...]):
    """Each tensor from the parent that trained it: the mother's where a name has one of `mother_parts`, the
    father's elsewhere (the recipe a per-part merge can express and a uniform one cannot)."""
    merged = copy.deepcopy(father)
    mother_params = dict(mother.named_parameters())
    with torch.no_grad():
        for name, target in merged.named_parameters():
            if any(part in name for part in mother_parts):
                target.copy_(mother_params[name])
    return merged


def _train_specialists(spec: RivalsSpec, base, tokenizer, log: Callable[[str], None] | None) -> dict:
    common = dict(warmup=spec.warmup_steps, batch_size=spec.batch_size, steps=spec.steps, lr=spec.lr)
    out = {}
    plan = (("father", spec.father_skill, spec.father_parts), ("mother", spec.mother_skill, spec.mother_parts))
    for offset, (member, skill, parts) in enumerate(plan, start=1):
        if log:
            log(f"{member}: fine-tuning {', '.join(parts)} on {skill} (+ replay of {', '.join(spec.replay_skills)})")
        out[member] = train(copy.deepcopy(base), tokenizer, spec.training_mix(skill), seed=spec.seed + offset,
                            log=log, only=parts, **common)
    return out


def build_rivals(out_dir: Path | str = DEFAULT_RIVALS_DIR, spec: RivalsSpec = DEFAULT_RIVALS_SPEC, *,
                 zoo_dir: Path | str = DEFAULT_ZOO_DIR, log: Callable[[str], None] | None = print) -> dict:
    """Fine-tune, measure and write the rivals into `out_dir` (staged, then moved into place); returns zoo.json."""
    from darwin_core.fitness.demo_tasks import demo_tasks

    demo_tasks(spec.seed, names=spec.skills + spec.replay_skills)  # an unknown skill fails before training
    out, zoo_dir = Path(out_dir), Path(zoo_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-building-", dir=out.parent))
    staging.chmod(0o755)
    try:
        with deterministic(spec.threads):
            base, tokenizer, base_sha = _load_zoo_base(zoo_dir)
            models = {"base": base, **_train_specialists(spec, base, tokenizer, log)}
            models["linear_50_50"] = linear_50_50(models["father"], models["mother"])
            models["by_parts"] = parts_merge(models["father"], models["mother"], spec.mother_parts)
            manifest = _measure_and_save(models, tokenizer, spec, staging, out, zoo_dir, log)
        manifest["base_sha256"] = base_sha
        manifest["build_seconds"] = round(time.perf_counter() - start, 1)
        manifest["spec"] = asdict(spec)
        manifest["torch"] = torch.__version__
        manifest["build_machine"] = {
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (staging / BREED_CONFIG).write_text(breed_config_text(spec))
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _measure_and_save(models: dict, tokenizer, spec: RivalsSpec, staging: Path, out: Path, zoo_dir: Path,
                      log: Callable[[str], None] | None) -> dict:
    """Held-out accuracies (the two new skills, and the replayed ones apart); the specialists are written."""
    manifest: dict = {"family": "rivals", "seed": spec.seed, "skills": list(spec.skills),
                      "replay_skills": list(spec.replay_skills), "models": {}, "sha256": {}}
    for member, model in models.items():
        scores = evaluate(model, tokenizer, spec.skills, seed=spec.seed)
        entry = {
            "path": _display_path(zoo_dir / "base") if member == "base" else None,
            "architecture": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "heldout_accuracy": scores,
            "composite": composite(scores),
            "replay_heldout_accuracy": evaluate(model, tokenizer, spec.replay_skills, seed=spec.seed),
        }
        if member in RIVALS_SHIPPED:
            save_member(model, tokenizer, staging / member)
            weights = staging / member / "model.safetensors"
            entry["path"], entry["bytes"] = _display_path(out / member), weights.stat().st_size
            manifest["sha256"][f"{member}/model.safetensors"] = sha256_file(weights)
        manifest["models"][member] = entry
        if log:
            log(f"{member:>13}: composite {entry['composite']:.3f}  {scores}")
    return manifest


def check_rivals_rebuild(out_dir: Path | str = DEFAULT_RIVALS_DIR, spec: RivalsSpec = DEFAULT_RIVALS_SPEC, *,
                         zoo_dir: Path | str = DEFAULT_ZOO_DIR, log: Callable[[str], None] | None = print) -> tuple[list[str], dict]:
    """Rebuild into a temporary folder; (files whose sha256 differs from out_dir's zoo.json, fresh manifest)."""
    expected = read_manifest(out_dir)
    if log and expected.get("spec") != json.loads(json.dumps(asdict(spec))):
        log("note: the shipped rivals zoo.json was built from a different RivalsSpec than the code's; expect a mismatch")
    with tempfile.TemporaryDirectory(prefix="darwin-rivals-check-") as tmp:
        fresh = build_rivals(Path(tmp) / "rivals", spec, zoo_dir=zoo_dir, log=log)
    mismatched = sorted(rel for rel, digest in expected["sha256"].items() if fresh["sha256"].get(rel) != digest)
    return mismatched, fresh
