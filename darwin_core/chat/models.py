"""Which models of a run can be talked to, and how each one is loaded.

A finished run offers its child (the folder `child/`), its two parents (as its config names them), and every
candidate the search measured: a candidate's genome is in evaluations.jsonl, and the run's config decides the
rest of its recipe (genome space, method, parents, base, frozen layers, seed, dtype, the MRI prescription kept
in the run's mri.json). The recipe rebuilt from them must have the hash the search recorded, so the weights a
candidate answers with are the ones it was scored with; a candidate is bred in memory (`ResidentChild`, the
search's own merge path), never written to disk.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.io.runfolder import CHILD, MRI_SCAN, RunFolder

CHILD_MODEL = "child"
PARENT_MODELS = ("father", "mother")
CANDIDATE = "candidate"


def run_config(run_dir: str | Path):
    """The run's EvolutionConfig (one sentence when the folder is not a run)."""
    from darwin_core.evolution.config import EvolutionConfig

    folder = RunFolder(run_dir)
    if not folder.exists():
        raise DarwinError(f"There is no run {folder.run_id!r} in {folder.path.parent}.")
    return EvolutionConfig.from_yaml(folder.config_text())


def candidates(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every candidate the search measured with its genome, by name: its last record (the full-set measurement
    comes after the proxy one), best search fitness first."""
    found: dict[str, dict[str, Any]] = {}
    for record in RunFolder(run_dir).evaluations():
        if record.get("kind") == CANDIDATE and record.get("genome") and record.get("name"):
            found[str(record["name"])] = record
    return dict(sorted(found.items(), key=lambda item: -float(item[1].get("fitness") or 0.0)))


def has_child(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHILD / "config.json").is_file()


def model_choices(run_dir: str | Path) -> list[tuple[str, str]]:
    """(label, name) of every model of the run one can talk to: the child, the parents, then the candidates."""
    config = run_config(run_dir)
    choices = [("the child", CHILD_MODEL)] if has_child(run_dir) else []
    choices += [(f"the father ({config.father})", "father"), (f"the mother ({config.mother})", "mother")]
    for name, record in candidates(run_dir).items():
        phase = "full search set" if record.get("phase") == "full" else "proxy items"
        choices.append((f"candidate {name} (generation {record.get('generation')}, fitness {float(record['fitness']):.4f} "
                        f"on the {phase})", name))
    return choices


def model_label(run_dir: str | Path, name: str) -> str:
    """How an answer's box is titled: "the child", "the father (demo:father)", "candidate g1c0 (…)"."""
    return dict((value, label) for label, value in model_choices(run_dir)).get(name, name)


def check_models(run_dir: str | Path, names: Sequence[str]) -> list[str]:
    """The models asked for, each one the run has (one sentence for the first it has not), without repeats."""
    if not names:
        raise DarwinError("Choose at least one model to talk to: the child, a candidate, the father or the mother.")
    known = {value for _, value in model_choices(run_dir)}
    for name in names:
        if name == CHILD_MODEL and name not in known:
            raise DarwinError(f"Run {Path(run_dir).name} has no child yet: talk to it once the run has finished.")
        if name not in known:
            raise DarwinError(f"Run {Path(run_dir).name} has no model {str(name)[:60]!r}; choose the child, a "
                              "candidate the search measured, the father or the mother.")
    return list(dict.fromkeys(names))


def _parent(ref: str, config: Any, runs_dir: Path):
    from darwin_core.evolution.problem import resolve_parent

    return resolve_parent(ref, local_mode=config.local_mode, runs_dir=runs_dir)


def parent_folder(run_dir: str | Path, which: str) -> Path:
    """The local folder of the run's father or mother (downloaded from the Hub when not cached)."""
    config = run_config(run_dir)
    return Path(_parent(getattr(config, which), config, Path(run_dir).parent)[1])


def candidate_recipe(run_dir: str | Path, name: str):
    """The Recipe of a measured candidate, rebuilt from its genome and the run's config; its hash is checked
    against the one the search recorded."""
    from darwin_core.evolution.problem import speaking
    from darwin_core.genome.spaces import default_method, get_space
    from darwin_core.parents import anatomy

    from darwin_core.evolution.pipeline import fit_to_pairing

    run_dir = Path(run_dir)
    record = candidates(run_dir).get(name)
    if record is None:
        raise DarwinError(f"Run {run_dir.name} has no candidate {name[:60]!r}.")
    config, _ = fit_to_pairing(run_config(run_dir), runs_dir=run_dir.parent)  # the genome the search ran (FFN-only)
    father_ref, father_dir = _parent(config.father, config, run_dir.parent)
    mother_ref, _ = _parent(config.mother, config, run_dir.parent)
    base_ref = _parent(config.base, config, run_dir.parent)[0] if config.base else "father"
    layer_count = anatomy.layer_count(json.loads((Path(father_dir) / "config.json").read_text(encoding="utf-8")))
    recipe = get_space(config.genome, layer_count=layer_count).to_recipe(
        record["genome"], father=father_ref, mother=mother_ref, layer_count=layer_count,
        method=config.method or default_method(config.genome), mri_ratios=_prescription(run_dir, config),
        frozen_layers=config.frozen_layers, seed=config.seed, base=base_ref,
        dtype=None if config.dtype == "auto" else config.dtype,
    )
    recipe = speaking(recipe, config.tokenizer_source)
    recorded = record.get("recipe_hash")
    if recorded and recipe.recipe_hash != recorded:
        raise DarwinError(f"Candidate {name} cannot be rebuilt as it was measured (its recipe hash differs): the "
                          "run's parents or config changed since.")
    return recipe


def _prescription(run_dir: Path, config: Any) -> dict[str, float] | None:
    """The MRI ratios the search used: the pair scan the run kept in its folder (none without `mri`)."""
    if not config.mri:
        return None
    path = run_dir / MRI_SCAN
    if not path.is_file():
        raise DarwinError(f"Run {run_dir.name} searched with an MRI prescription but keeps no {MRI_SCAN}.")
    return {str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["prescription"].items()}


@contextmanager
def loaded_model(run_dir: str | Path, name: str, device: str) -> Iterator[tuple[Any, Any]]:
    """(model, tokenizer) of one of the run's models on `device`, freed again when the block ends, so a job
    holds one model at a time."""
    from transformers.utils import logging as hf_logging

    from darwin_core.mri.probing import load_model

    hf_logging.disable_progress_bar()  # a job's log and the CLI's output are for answers, not per-tensor bars
    run_dir = Path(run_dir)
    resident = None
    if name == CHILD_MODEL:
        model, tokenizer = load_model(run_dir / CHILD, device)
    elif name in PARENT_MODELS:
        model, tokenizer = load_model(parent_folder(run_dir, name), device)
    else:
        from darwin_core.evolution.child import ResidentChild

        recipe = candidate_recipe(run_dir, name)
        config = run_config(run_dir)
        base = parent_folder(run_dir, "base") if config.base else None
        resident = ResidentChild(parent_folder(run_dir, "father"), parent_folder(run_dir, "mother"), base=base,
                                 device=device, dtype=config.dtype)
        resident.load_recipe(recipe)
        model, tokenizer = resident.model, resident.tokenizer
    try:
        yield model, tokenizer
    finally:
        del model, resident
        gc.collect()
        _empty_cache()


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
