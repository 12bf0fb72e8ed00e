"""The real problem the search optimises: genomes become recipes, recipes are written into the resident child
(bred in memory, bit-identical to the child merged to disk), and the child is scored on the tasks.

The loop in search.py only sees the `Problem` protocol; this is its implementation over real models.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from darwin_core.genome.spaces import default_method
from darwin_core.merge.methods.registry import Method
from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig
from darwin_core.evolution.search import Candidate
from darwin_core.evolution.tasks import load_tasks
from darwin_core.evolution.timing import EvalTiming, TokenCounter
from darwin_core.fitness.evaluate import EvalResult
from darwin_core.fitness.probes import vet_probes_file
from darwin_core.fitness.tasks import Task


def speaking(recipe, tokenizer_source: str):
    """`recipe` with a run config's tokenizer_source (every recipe of a run — candidates, references and a
    candidate rebuilt later from its genome — speaks one vocabulary); the default leaves the recipe as it is, so
    its hash is what it always was."""
    if tokenizer_source == "father":
        return recipe
    from darwin_core.parents.tokenizers import TokenizerSource

    return replace(recipe, tokenizer_source=TokenizerSource(tokenizer_source))


def resolve_parent(ref: str, *, local_mode: bool, runs_dir: str | Path | None = None, token: str | None = None):
    """(ParentRef for the recipe, local folder) of a parent named any way darwin_core.parents knows (demo:, run:,
    a Hub id, a folder in local mode), downloaded (weights, config, tokenizer only) when not cached.

    A run's parents were checked when it was submitted (the visitor's access to a gated commit, their right to a
    `run:` child), so the worker reads a pinned cached commit without asking the Hub again. `token` is the Hub
    token of whoever executes the run where that is the user themself (the CLI's HF_TOKEN, a Job's secret), for
    a gated or private parent this machine has not cached; None (the worker) asks anonymously.
    """
    from darwin_core.parents import hub
    from darwin_core.parents import resolve_parent_name
    from darwin_core.recipe import ParentRef

    resolved = resolve_parent_name(ref, local_mode=local_mode, runs_dir=runs_dir, token=token, check_access=False)
    if resolved.folder is None:
        resolved = hub.download(resolved, token=token)
    folder = Path(resolved.folder)
    if resolved.local:
        return ParentRef.of(folder), folder
    return ParentRef(id=resolved.id, revision=resolved.commit or resolved.revision, path=str(folder)), folder


class ModelProblem:
    """The real problem: genomes become recipes, recipes are written into the resident child, the child is scored."""

    def __init__(self, config: EvolutionConfig, *, log: Callable[[str], None] | None = None,
                 runs_dir: str | Path | None = None, token: str | None = None):
        from darwin_core.parents import anatomy
        from darwin_core.evolution.child import ResidentChild
        from darwin_core.genome.spaces import get_space
        from darwin_core.merge.methods.registry import get_method

        self.config = config
        self.log = log or (lambda message: None)
        self._runs_dir = runs_dir
        self.method = config.method or default_method(config.genome)
        get_method(self.method)  # unknown method: one sentence now, not after loading the models
        parent = functools.partial(resolve_parent, local_mode=config.local_mode, runs_dir=runs_dir, token=token)
        self.father_ref, self.father_dir = parent(config.father)
        self.mother_ref, self.mother_dir = parent(config.mother)
        self.base_ref, self.base_dir = ("father", None)
        if config.base:
            self.base_ref, self.base_dir = parent(config.base)
        self.tasks, self.weights = load_tasks(config, runs_dir=runs_dir)
        self.layer_count = anatomy.layer_count(json.loads((self.father_dir / "config.json").read_text(encoding="utf-8")))
        self.space = get_space(config.genome, layer_count=self.layer_count)
        self.dtype = None if config.dtype == "auto" else config.dtype
        self.log("loading the parents and the resident child")
        self.child = ResidentChild(self.father_dir, self.mother_dir, base=self.base_dir, device=config.device, dtype=config.dtype)
        self.mri_ratios = self._prescription()
        self.lower, self.upper = self.space.bounds
        self.x0 = self._start_genome()
        self._baselines = self._baseline_recipes()
        self._tokens = TokenCounter(self.child.tokenizer)
        self.last_timing: EvalTiming | None = None

    # ---------------------------------------------------------------- genome ↔ recipe

    def _prescription(self) -> dict[str, float] | None:
        """Per-tensor MRI ratios (share of the mother), from a saved pair scan or a scan made now. A scan made now
        probes with the config's `probes:` file, else texts from the tasks' search split (never held-out), else
        the generic five categories (`mri.probes.choose_probes`); the log says which."""
        self.scan: dict[str, Any] | None = None
        self.probe_source: str | None = None
        if not self.config.mri:
            return None
        from darwin_core.mri import scan as mri
        from darwin_core.mri.probes import choose_probes, describe_probes

        if self.config.mri == "auto":
            probes_file = getattr(self.config, "probes", None)
            if probes_file:
                vet_probes_file(probes_file, local_mode=self.config.local_mode, runs_dir=self._runs_dir)
            probes, source = choose_probes(self.tasks, probes_file)
            self.log("scanning the parents (MRI) for the prescription; " + describe_probes(probes, source))
            scan = mri.scan_pair(self.father_dir, self.mother_dir, probes=probes, probe_source=source,
                                 device=str(self.child.device))
        else:
            scan = mri.load_scan(self.config.mri)
        if "prescription" not in scan:
            raise DarwinError(f"The MRI file {self.config.mri} is a scan of one model; the prescription needs a scan of both parents.")
        self.scan = scan
        self.probe_source = scan.get("probe_source")
        return {str(k): float(v) for k, v in scan["prescription"].items()}

    def _start_genome(self) -> list[float]:
        """CMA-ES's starting point: the space's neutral genome, or (start: mri) the one that follows the MRI."""
        from darwin_core.evolution.start import mri_start_genome

        if self.config.start == "mri":
            if self.mri_ratios is None:
                raise DarwinError("start: mri needs the MRI prescription; set mri to auto or a saved scan of both parents.")
            return mri_start_genome(self.space, self.mri_ratios, self.layer_count)
        return list(self.space.default())

    def _recipe_args(self) -> dict[str, Any]:
        return dict(
            father=self.father_ref, mother=self.mother_ref, layer_count=self.layer_count, method=self.method,
            mri_ratios=self.mri_ratios, frozen_layers=self.config.frozen_layers, seed=self.config.seed,
            base=self.base_ref, dtype=self.dtype,
        )

    def recipe(self, vector: Sequence[float]):
        return self.speaking(self.space.to_recipe(list(vector), **self._recipe_args()))

    def speaking(self, recipe):
        return speaking(recipe, self.config.tokenizer_source)

    def _baseline_recipes(self) -> dict[str, Any]:
        """Reference lines: a uniform 50/50 linear merge, and the MRI prescription with no search at all
        (darwin-v6's neutral genome with mri_trust = 1, so every tensor takes its MRI ratio)."""
        from darwin_core.genome.spaces import DarwinV6Space
        from darwin_core.recipe import Recipe, ratio_table

        recipes = {
            "uniform-50": Recipe(
                father=self.father_ref, mother=self.mother_ref, method=Method.LINEAR.value, ratios=ratio_table(0.5),
                frozen_layers=self.config.frozen_layers, dtype=self.dtype, seed=self.config.seed,
            )
        }
        if self.mri_ratios is not None:
            v6 = DarwinV6Space()
            genome = [1.0 if name == "mri_trust" else value for name, value in zip(v6.names, v6.default())]
            recipes["mri"] = v6.to_recipe(genome, **self._recipe_args())
        return {name: self.speaking(recipe) for name, recipe in recipes.items()}

    def baseline_names(self) -> list[str]:
        return ["father", "mother", *self._baselines]

    def baseline_recipe(self, name: str):
        return self._baselines.get(name)

    def describe(self, vector: Sequence[float]) -> dict[str, Any]:
        return {"recipe_hash": self.recipe(vector).recipe_hash}

    def status_extras(self) -> dict[str, Any]:
        """Progress facts for status.json: peak accelerator memory so far (what the UI shows beside the curve)."""
        import torch

        if self.child.device.type == "cuda":
            return {"device_memory_bytes": int(torch.cuda.max_memory_allocated(self.child.device))}
        return {}

    # ---------------------------------------------------------------- measuring

    def load(self, candidate: Candidate) -> None:
        if isinstance(candidate, str):
            if candidate in ("father", "mother"):
                self.child.load_parent(candidate)
            else:
                self.child.load_recipe(self._baselines[candidate])
        else:
            self.child.load_recipe(self.recipe(candidate))

    def measure(self, candidate: Candidate, tasks: Sequence[Task], split: str = "search") -> EvalResult:
        """Load the candidate, score it, and leave what it cost in `last_timing` (merge seconds up to a device
        synchronisation, scoring seconds, token positions of the scored items)."""
        import time

        started = time.perf_counter()
        self.load(candidate)
        self._synchronize()
        loaded = time.perf_counter()
        result = self.measure_loaded(tasks, split)
        self.last_timing = EvalTiming(merge_seconds=loaded - started, scoring_seconds=time.perf_counter() - loaded,
                                      tokens_scored=self._tokens.positions(tasks, split))
        return result

    def _synchronize(self) -> None:
        """Wait for the device's queued kernels, so the merge's seconds are its own and not the scoring's."""
        import torch

        if self.child.device.type == "cuda":
            torch.cuda.synchronize(self.child.device)

    def measure_loaded(self, tasks: Sequence[Task], split: str = "search") -> EvalResult:
        """Score the weights the resident child holds now (after `load`, or `child.load_recipe` of any recipe)."""
        from darwin_core.fitness.evaluate import evaluate

        return evaluate(self.child.model, self.child.tokenizer, list(tasks), split=split, batch_size=self.config.batch_size, seed=self.config.seed)
