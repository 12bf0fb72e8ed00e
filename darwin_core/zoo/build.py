"""The embedded demo zoo: tiny parents that make breeding meaningful on a laptop CPU in minutes.

A 0.8M-parameter Qwen3-architecture model is trained from scratch on a mix of character puzzles (the *base*),
then two specialists are fine-tuned from it, briefly and with a small learning rate, on *different* puzzles:
the father on some skills, the mother on the others. Each specialist gets good at its own skills and
forgets some of the rest; their deltas from the shared base stay small, which is the regime where a weight
merge can keep both skills and beat both parents on the composite (mean over skills).

The build is deterministic (fixed seeds, deterministic kernels, one thread), so rebuilding gives
byte-identical safetensors; `zoo build --check` proves it against the sha256 in `assets/zoo/zoo.json`.
(Float kernels may round differently on another CPU family or torch version; --check says so if they do.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import replace_folder
from darwin_core.io.hashes import sha256_file
from darwin_core.fitness.demo_tasks import DEMO_SKILLS

from darwin_core.io.runfolder import REPO_ROOT
from darwin_core.parents.demo import DEFAULT_ZOO_DIR, MANIFEST, MEMBERS, load_zoo_manifest, read_manifest, zoo_paths

# The public names, including those re-exported from parents.demo: the UI, scripts and tests read the zoo's
# manifest and paths through this module.
__all__ = [
    "DEFAULT_SPEC", "DEFAULT_ZOO_DIR", "MANIFEST", "MEMBERS", "REPO_ROOT", "ZooSpec", "build_models", "build_zoo",
    "check_rebuild", "composite", "deterministic", "evaluate", "linear_50_50", "load_zoo_manifest", "make_model",
    "make_tokenizer", "read_manifest", "train", "verify_hashes", "zoo_paths",
]


@dataclass(frozen=True)
class ZooSpec:
    """Everything that decides the zoo's bytes. Change a value and the sha256 in zoo.json changes with it."""

    seed: int = 0
    threads: int = 1  # one thread: fastest on a shared CPU, and the bytes do not depend on the core count
    # model
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    # training
    batch_size: int = 64
    base_skills: tuple[str, ...] = DEMO_SKILLS
    base_steps: int = 500
    base_lr: float = 3e-3
    father_skills: tuple[str, ...] = DEMO_SKILLS[:2]  # reverse, uppercase: rearrange / restyle the word
    mother_skills: tuple[str, ...] = DEMO_SKILLS[2:]  # translate, sort
    specialist_steps: int = 150
    specialist_lr: float = 1e-3
    warmup_steps: int = 30

    @property
    def skills(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.base_skills + self.father_skills + self.mother_skills))


DEFAULT_SPEC = ZooSpec()


# --------------------------------------------------------------------------------------------- building


def make_tokenizer():
    from darwin_core.parents.chartok import build_char_tokenizer
    from darwin_core.fitness.demo_tasks import ALPHABET

    return build_char_tokenizer(ALPHABET)


def make_model(spec: ZooSpec, tokenizer):
    """A freshly initialised Qwen3 model sized by `spec` (weights depend only on spec.seed)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(spec.seed)
    return Qwen3ForCausalLM(config).float()


def _batches(tokenizer, skills: tuple[str, ...], batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded training batches; the loss sees only the answer and its end-of-sequence token."""
    from darwin_core.fitness.demo_tasks import training_pairs

    stream = training_pairs(skills, seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    while True:
        rows = []
        for _ in range(batch_size):
            prompt, answer = next(stream)
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
            rows.append((p + a, [-100] * len(p) + a))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (ids, lab) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            mask[r, : len(ids)] = 1
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def train(model, tokenizer, skills: tuple[str, ...], *, steps: int, lr: float, warmup: int, batch_size: int, seed: int,
          log: Callable[[str], None] | None = None, only: tuple[str, ...] | None = None):
    """AdamW with linear warm-up and cosine decay to 10%; returns the model (trained in place).

    `only` trains just the parameters whose name contains one of its parts (`model.layers.0.`, `.mlp.`); the
    rest, embeddings and final norm included, stay as they are: the rivals' specialists move disjoint parts.
    """
    torch.manual_seed(seed)
    model.train()
    trained = [p for n, p in model.named_parameters() if only is None or any(part in n for part in only)]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    batches = _batches(tokenizer, skills, batch_size, seed)
    for step in range(steps):
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"  step {step:4d}/{steps} loss {loss.item():.4f}")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()
    return model


def evaluate(model, tokenizer, skills: tuple[str, ...], seed: int = 0, split: str = "heldout") -> dict[str, float]:
    """Exact-match accuracy per skill on the demo tasks' `split`."""
    from darwin_core.fitness.demo_tasks import demo_task
    from darwin_core.fitness.generate import exact_match_accuracy

    return {s: round(exact_match_accuracy(model, tokenizer, demo_task(s, seed), split)[0], 4) for s in skills}


def composite(scores: dict[str, float]) -> float:
    return round(sum(scores.values()) / len(scores), 4) if scores else 0.0


def linear_50_50(father, mother):
    """The plain 50/50 linear merge of two zoo models, by the merge engine (the `linear` kernel, float32).

    Over parameters, not the state dict: with tied embeddings the state dict names one tensor twice, and
    merging it twice would write it twice.
    """
    from darwin_core.merge.methods.apply import StateDictSource, merge_tensors
    from darwin_core.recipe import Recipe, ratio_table

    merged = _clone(father)
    father_params, mother_params = dict(father.named_parameters()), dict(mother.named_parameters())
    targets = dict(merged.named_parameters())
    recipe = Recipe(father={"id": "demo:father"}, mother={"id": "demo:mother"}, method="linear", ratios=ratio_table(0.5))
    with torch.no_grad():
        for name, tensor in merge_tensors(recipe, StateDictSource(father_params), StateDictSource(mother_params),
                                          list(father_params)):
            targets[name].copy_(tensor)
    return merged


def _clone(model):
    import copy

    return copy.deepcopy(model)


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the block; the caller's settings come back after."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def build_models(spec: ZooSpec = DEFAULT_SPEC, log: Callable[[str], None] | None = None) -> dict:
    """Train base, father and mother in memory; returns {"tokenizer", "base", "father", "mother"}."""
    with deterministic(spec.threads):
        return _build_models(spec, log)


def _build_models(spec: ZooSpec, log: Callable[[str], None] | None) -> dict:
    tokenizer = make_tokenizer()
    common = dict(warmup=spec.warmup_steps, batch_size=spec.batch_size)
    base = make_model(spec, tokenizer)
    if log:
        log(f"base: {sum(p.numel() for p in base.parameters()):,} parameters, skills {', '.join(spec.base_skills)}")
    train(base, tokenizer, spec.base_skills, steps=spec.base_steps, lr=spec.base_lr, seed=spec.seed, log=log, **common)
    out = {"tokenizer": tokenizer, "base": base}
    for offset, (member, skills) in enumerate((("father", spec.father_skills), ("mother", spec.mother_skills)), start=1):
        if log:
            log(f"{member}: fine-tuning on {', '.join(skills)}")
        out[member] = train(_clone(base), tokenizer, skills, steps=spec.specialist_steps, lr=spec.specialist_lr, seed=spec.seed + offset, log=log, **common)
    return out


# --------------------------------------------------------------------------------------------- writing


def save_member(model, tokenizer, folder: Path) -> None:
    """HF layout: config.json, model.safetensors, generation_config.json, tokenizer files."""
    from transformers.utils import logging as hf_logging

    model.generation_config.do_sample = False
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a progress bar for writing 3 MB is noise in the build log
    try:
        model.save_pretrained(folder)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    if not (folder / "model.safetensors").is_file():
        raise DarwinError(f"Saving the {folder.name} model did not produce a single model.safetensors.")


def _display_path(folder: Path) -> str:
    """Repo-relative when the zoo lives in the repo (as zoo.json's schema wants), absolute otherwise."""
    try:
        return folder.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(folder.resolve())


def build_zoo(out_dir: Path | str = DEFAULT_ZOO_DIR, spec: ZooSpec = DEFAULT_SPEC, *, log: Callable[[str], None] | None = print) -> dict:
    """Build, measure and write the zoo into `out_dir`; returns the manifest (also written as zoo.json).

    Everything is written into a temporary folder beside `out_dir` first and moved into place at the end,
    so an interrupted build never leaves a zoo that looks complete.
    """
    from darwin_core.fitness.demo_tasks import demo_tasks

    demo_tasks(spec.seed, names=spec.skills)  # an unknown skill fails here, before minutes of training
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-building-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the zoo is meant to be read by anyone
    try:
        with deterministic(spec.threads):  # the measured accuracies are reproducible too
            models = build_models(spec, log=log)
            models["linear_50_50"] = linear_50_50(models["father"], models["mother"])
            manifest = _measure_and_save(models, spec, staging, out, log)
        manifest["build_seconds"] = round(time.perf_counter() - start, 1)
        manifest["spec"] = asdict(spec)
        manifest["torch"] = torch.__version__
        manifest["build_machine"] = {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            # other work on the CPUs slows the build; the 1-minute load average says how busy they were
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _measure_and_save(models: dict, spec: ZooSpec, staging: Path, out: Path, log: Callable[[str], None] | None) -> dict:
    """Held-out accuracies of every model; the three members are written to staging (the merge is not)."""
    tokenizer = models["tokenizer"]
    manifest: dict = {"seed": spec.seed, "skills": list(spec.skills), "models": {}, "sha256": {}}
    for member in (*MEMBERS, "linear_50_50"):
        model = models[member]
        scores = evaluate(model, tokenizer, spec.skills, seed=spec.seed)
        entry = {
            "path": None,
            "architecture": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": manifest["models"]["father"]["bytes"] if member == "linear_50_50" else None,  # the size it would have
            "heldout_accuracy": scores,
            "composite": composite(scores),
        }
        if member in MEMBERS:
            save_member(model, tokenizer, staging / member)
            weights = staging / member / "model.safetensors"
            entry["path"] = _display_path(out / member)
            entry["bytes"] = weights.stat().st_size
            manifest["sha256"][f"{member}/model.safetensors"] = sha256_file(weights)
        manifest["models"][member] = entry
        if log:
            log(f"{member:>13}: composite {entry['composite']:.3f}  {scores}")
    return manifest


# --------------------------------------------------------------------------------------------- reading


def verify_hashes(zoo_dir: Path | str, expected: dict[str, str]) -> list[str]:
    """The files under `zoo_dir` whose sha256 differs from `expected` (missing files count as differing)."""
    root = Path(zoo_dir)
    return [rel for rel, digest in sorted(expected.items()) if not (root / rel).is_file() or sha256_file(root / rel) != digest]


def check_rebuild(zoo_dir: Path | str = DEFAULT_ZOO_DIR, spec: ZooSpec = DEFAULT_SPEC, *, log: Callable[[str], None] | None = print) -> tuple[list[str], dict]:
    """Rebuild into a temporary folder; returns (files whose sha256 differs from zoo_dir's zoo.json, fresh manifest)."""
    expected = read_manifest(zoo_dir)
    if log and expected.get("spec") != json.loads(json.dumps(asdict(spec))):
        log("note: the shipped zoo.json was built from a different ZooSpec than the code's; expect a mismatch")
    with tempfile.TemporaryDirectory(prefix="darwin-zoo-check-") as tmp:
        fresh = build_zoo(Path(tmp) / "zoo", spec, log=log)
    mismatched = sorted(rel for rel, digest in expected["sha256"].items() if fresh["sha256"].get(rel) != digest)
    return mismatched, fresh
