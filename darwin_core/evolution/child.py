"""The resident child: one loaded model whose weights every candidate overwrites in place.

Evaluating a CMA-ES candidate must not cost a model load. So the father is loaded once as a transformers
model on the device (the "child"), both parents' tensors are loaded once and stay resident on the same
device, and each candidate's merged tensors — produced by the one merge path, `merge.apply.merge_tensors`,
the same code that writes children to disk — are copied into the child's parameters under `torch.no_grad()`.
No candidate touches the disk, and the weights the evaluator sees are exactly those `merge_to_disk` would
write for the same recipe (same kernels, same dtype cast, same seeded DARE masks). On a CUDA device the merge
is `merge.methods.fused.fused_merge_tensors` (one Triton pass per linear or DARE-TIES tensor, written straight
into the child's parameter; the reference's bytes, `tests/test_gpu.py`), and a candidate rewrites only the
tensors whose plan changed since the last one. Where the parents live (beside the child on the GPU, or in
pinned host memory, streamed per tensor) is decided from measured free memory by `evolution.placement`.

The parents need not share their tensor names: the child builds the pair's `Pairing` itself from the two folders
(`darwin_core.merge.pairing`: same names, a multimodal wrapper against its text-only sibling, or the FFNs of two
families of one hidden size), so any genome works — a tensor the pairing gives no partner is the father's. Where
the mother cannot be written into the father's model (an FFN-only pair), her own model is loaded once, when a
curve first asks for her, and `model`/`tokenizer` point to it until the next write.

Checkpoint names and parameter names usually coincide. Where transformers 5 converts tensors on load (MoE
experts stored one tensor per expert on disk but fused into one 3-D parameter in memory, renamed prefixes),
the conversion transformers itself recorded for this model (`model._weight_conversions`) is replayed on the
merged tensors, group by group, so the in-memory child is what `from_pretrained` would build from the merged
files.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from darwin_core.io.dtypes import dtype_from_name
from darwin_core.errors import DarwinError
from darwin_core.evolution.placement import ParentsOn
from darwin_core.merge.methods.apply import StateDictSource
from darwin_core.parents.compatibility import PairingMode

# A ResidentChild's explicit `parents=` (the bench's and tests' way to try a mode the measured memory would not pick)
PARENTS_FORCED = {"device": ParentsOn.ACCELERATOR, "host": ParentsOn.PINNED_HOST, "disk": ParentsOn.DISK}

# Candidates on a CUDA device merge through the fused one-pass kernels (`merge.methods.fused`: the reference's
# bytes, a third of its traffic); False makes every merge the reference `merge_tensors` (bench/breed.py's
# --reference-merge, and the GPU tests' unfused side).
FUSED_MERGE = True
MERGE_SLICES = 4  # a fused candidate through a resident layout is planned and launched in this many slices


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' → the first CUDA device when there is one, else CPU; a named CUDA device must exist."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DarwinError("The run asks for a CUDA device but this machine has none; use device: cpu or auto.")
    return device


class ResidentTensors(StateDictSource):
    """Every tensor of a checkpoint folder, loaded once and kept in memory, behind the TensorSource interface.

    `merge_tensors` asks its sources for tensors by name (`.get(name, device)`); answering from memory
    instead of from the files is what makes a candidate cost a merge and not a load. The tensors live on
    `device` (the accelerator, when they fit) or in pinned host memory, from which each one is streamed to the
    accelerator when the merge asks for it (`pin=True`).
    """

    def __init__(self, folder: Path | str, device: torch.device | str = "cpu", *, pin: bool = False):
        from darwin_core.io.tensors import TensorReader

        self.folder = Path(folder)
        self.device = torch.device(device)
        reader = TensorReader(self.folder, device=str(self.device))
        tensors: dict[str, torch.Tensor] = {}
        for name in reader.names:
            tensor = reader.get(name, device=self.device)
            tensors[name] = tensor.pin_memory() if pin and tensor.device.type == "cpu" else tensor
        super().__init__(tensors)

    def get(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        try:
            tensor = self._tensors[name]
        except KeyError:
            raise DarwinError(f"Tensor {name!r} is not in {self.folder}.") from None
        if device is None or torch.device(device) == tensor.device:
            return tensor
        return tensor.to(device, non_blocking=tensor.is_pinned())

    @property
    def total_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())


@dataclass
class _Group:
    """Checkpoint tensors that together make one (or a few) model parameters through a transformers converter."""

    converter: object
    members: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint name, source pattern)


class WritePlan:
    """Where each checkpoint tensor goes in a loaded model: straight into a parameter, or through a converter.

    Built once from names only (no tensor is touched), then `write` streams (name, tensor) pairs into the
    model, buffering just the members of a converter group until the group is complete.
    """

    def __init__(self, model: torch.nn.Module, checkpoint_names: Iterable[str]):
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        self.model = model
        self.targets: dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=True))
        conversions = getattr(model, "_weight_conversions", None)
        if conversions is None:
            try:
                from transformers.conversion_mapping import get_model_conversion_mapping

                conversions = get_model_conversion_mapping(model)
            except Exception:  # noqa: BLE001 — no mapping known: names must then match as they are
                conversions = []
        renamings = [c for c in conversions or [] if isinstance(c, WeightRenaming) and not isinstance(c, WeightConverter)]
        converters = [c for c in conversions or [] if isinstance(c, WeightConverter)]
        by_pattern = {pattern: conv for conv in converters for pattern in conv.source_patterns}
        prefix = getattr(model, "base_model_prefix", None)

        self.direct: dict[str, str] = {}  # checkpoint name -> parameter name
        self.groups: dict[str, _Group] = {}  # first target key -> group
        self.group_of: dict[str, str] = {}  # checkpoint name -> group key
        unplaced: list[str] = []
        for name in sorted(checkpoint_names):
            if name in self.targets:
                self.direct[name] = name
                continue
            renamed, pattern = rename_source_key(name, renamings, converters, prefix, self.targets)
            if renamed not in self.targets:
                unplaced.append(name)
            elif pattern is None:
                self.direct[name] = renamed
            else:
                group = self.groups.setdefault(renamed, _Group(converter=by_pattern[pattern]))
                group.members.append((name, pattern))
                self.group_of[name] = renamed
        if unplaced:
            shown = ", ".join(unplaced[:3])
            raise DarwinError(f"The loaded model has no parameter for {len(unplaced)} checkpoint tensors (e.g. {shown}), so candidates cannot be written into it.")
        self._pending: dict[str, dict[str, torch.Tensor]] = {}

    def check_shapes(self, source) -> None:
        """Direct copies must match shape exactly (a silent broadcast would corrupt the child)."""
        for name, target in self.direct.items():
            want = tuple(self.targets[target].shape)
            got = tuple(source.shape(name))
            if want != got:
                raise DarwinError(f"Tensor {name} has shape {got} in the checkpoint but {want} in the loaded model.")

    @torch.no_grad()
    def write(self, items: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy each tensor into its parameter in place; returns how many model tensors were written."""
        written = 0
        for name, tensor in items:
            target = self.direct.get(name)
            if target is not None:
                if tensor.data_ptr() != self.targets[target].data_ptr():  # a fused merge may have written it in place
                    self.targets[target].copy_(tensor)
                written += 1
                continue
            key = self.group_of.get(name)
            if key is None:
                raise DarwinError(f"Tensor {name!r} does not belong to the loaded model.")
            pending = self._pending.setdefault(key, {})
            pending[name] = tensor
            group = self.groups[key]
            if len(pending) == len(group.members):
                written += self._flush(key, group, self._pending.pop(key))
        if self._pending:
            missing = sorted(self._pending)[:3]
            self._pending.clear()
            raise DarwinError(f"Merged tensors for {', '.join(missing)} were incomplete, so the child could not be written.")
        return written

    def _flush(self, key: str, group: _Group, tensors: dict[str, torch.Tensor]) -> int:
        converter = copy.deepcopy(group.converter)
        for name, pattern in group.members:
            converter.add_tensor(key, name, pattern, tensors[name])
        produced = converter.convert(key, model=self.model, config=getattr(self.model, "config", None))
        written = 0
        for target, value in produced.items():
            value = value[0] if isinstance(value, list) else value
            if target not in self.targets:
                raise DarwinError(f"Converting merged tensors produced {target!r}, which the loaded model does not have.")
            self.targets[target].copy_(value)
            written += 1
        return written


class ResidentChild:
    """The father loaded once as a model, both parents' tensors resident, candidates written in place."""

    def __init__(
        self,
        father: Path | str,
        mother: Path | str,
        *,
        base: Path | str | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        parents: str = "auto",
    ):
        """parents: where the parents' tensors live — "auto" (measured: `evolution.placement`), "device", "host"
        (pinned host memory, streamed to the accelerator tensor by tensor during each merge) or "disk" (their files,
        read tensor by tensor during each merge)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's log is for the run's progress, not per-tensor bars
        self.device = resolve_device(device)
        self.father_dir, self.mother_dir = Path(father), Path(mother)
        load_dtype = dtype_from_name(dtype) if dtype not in (None, "auto") else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(self.father_dir, dtype=load_dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.father_dir)
        folders = [self.father_dir, self.mother_dir] + ([Path(base)] if base is not None else [])
        if parents not in ("auto", *PARENTS_FORCED):
            raise DarwinError(f"parents must be auto, device, host or disk, not {parents!r}.")
        self.placement = self._placement(folders, parents)
        pin = self.placement.pinned
        storage = self.device if self.placement.parents_on == ParentsOn.ACCELERATOR else torch.device("cpu")
        self.parents_on = str(self.placement.parents_on)
        from darwin_core.merge.pairing import pairing_for, resolved_folders

        self._parent_models = resolved_folders(self.father_dir, self.mother_dir)
        self.pairing = pairing_for(*self._parent_models)  # refused in one sentence before a tensor is loaded
        self._pairings = {(): self.pairing}
        if self.placement.parents_on == ParentsOn.DISK:  # read per candidate: nothing of theirs is held
            from darwin_core.io.tensors import TensorReader

            self.father, self.mother = TensorReader(self.father_dir), TensorReader(self.mother_dir)
            self.base = TensorReader(base) if base is not None else None
        else:
            self.father = ResidentTensors(self.father_dir, storage, pin=pin)
            self.mother = ResidentTensors(self.mother_dir, storage, pin=pin)
            self.base = ResidentTensors(base, storage, pin=pin) if base is not None else None
        self.names = list(self.father.names)
        self._child_model, self._child_tokenizer = self.model, self.tokenizer
        self._mother_model = None
        self.plan = WritePlan(self.model, self.names)
        self.plan.check_shapes(self.father)
        # a pair bred with a vocabulary plan writes into a copy sized for the child's vocabulary (`_use_vocabulary`)
        self._vocabularies = {None: (self.model, self.tokenizer, self.plan)}
        self._vocabulary = None
        self.current: str | None = "father"  # what the child's weights hold now (a recipe hash or a parent)
        self._held: list = []  # the plans (`recipe.columns.PlanColumns`, per slice) the child's tensors hold now
        self.last_rewritten = 0  # tensors the last `load_recipe` merged and wrote (the rest were unchanged)
        self._layouts: dict[tuple, object] = {}  # fused_layout.ResidentLayout per (pairing, write plan, child dtype)
        self._indexes: dict[int, object] = {}  # recipe.columns.TensorIndex per pairing (`_index`)

    def _placement(self, folders: list[Path], parents: str):
        """Where the parents' tensors live (`evolution.placement`): measured free memory decides under "auto"
        (the child is loaded already, so what is free is what is left beside it); "device"/"host"/"disk" force it."""
        from darwin_core.evolution import placement

        needed = sum(placement.folder_bytes(folder) for folder in folders)
        return placement.choose(needed, placement.folder_bytes(self.father_dir), self.device,
                                force=PARENTS_FORCED.get(parents), disk_probe=self.father_dir)

    def write(self, items: Iterable[tuple[str, torch.Tensor]], label: str | None = None, *,
              names: Iterable[str] | None = None) -> int:
        """Overwrite the child's parameters with `items`; every checkpoint tensor (or each of `names`, a partial
        rewrite whose other tensors already hold the new values; read once the items are consumed, so the items'
        producer may fill it as it goes) must come exactly once."""
        seen: set[str] = set()

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in items:
                seen.add(name)
                yield name, tensor

        self.current = None  # a failure half-way leaves a mixed child: say so
        self._held = []
        self.model, self.tokenizer = self._child_model, self._child_tokenizer
        written = self.plan.write(counted())
        expected = set(self.names) if names is None else set(names)  # read after the items: they may fill it
        if seen != expected:
            missing = sorted(expected - seen)[:3]
            raise DarwinError(f"The merge did not produce every tensor of the model (missing e.g. {', '.join(missing)}).")
        self.current = label
        return written

    def pairing_for(self, layer_map=None, tokenizer_source=None):
        """The pairing for a recipe's `layer_map` (the default depth map without one) and `tokenizer_source` (with
        one, the pairing carries the vocabulary plan of parents whose vocabularies differ), built once per both."""
        key = tuple(sorted((layer_map or {}).items()))
        if tokenizer_source is not None:
            key = (key, str(getattr(tokenizer_source, "value", tokenizer_source)))
        if key not in self._pairings:
            from darwin_core.merge.pairing import pairing_for

            self._pairings[key] = pairing_for(*self._parent_models, layer_map, tokenizer_source=tokenizer_source)
        return self._pairings[key]

    def _use_vocabulary(self, plan) -> None:
        """Write into the father's model (plan None) or into a copy of it sized for the plan's vocabulary and
        scored with the plan's tokenizer (built once per tokenizer source)."""
        key = None if plan is None else plan.source
        if key == self._vocabulary:
            return
        if key not in self._vocabularies:
            from darwin_core.merge.vocabulary import vocabulary_model

            model = vocabulary_model(self._vocabularies[None][0], plan)
            self._vocabularies[key] = (model, plan.tokenizer, WritePlan(model, self.names))
        self._child_model, self._child_tokenizer, self.plan = self._vocabularies[key]
        self.model, self.tokenizer = self._child_model, self._child_tokenizer
        self._vocabulary, self.current, self._held = key, None, []

    def _mother_vocabulary_differs(self) -> bool:
        """Whether the mother speaks another vocabulary than the father (then she is scored as her own model)."""
        if not hasattr(self, "_own_vocabulary"):
            from darwin_core.merge.pairing import own_vocabulary

            self._own_vocabulary = own_vocabulary(self.father_dir, self.mother_dir)
        return self._own_vocabulary

    def load_parent(self, which: str) -> None:
        """Put one parent's own weights into the child (the reference lines of every curve).

        A mother named differently (a wrapper pair) is written through the pairing, towers the father's; a mother
        of another family (an FFN-only pair) is her own model, loaded once and evaluated as she is.
        """
        source = {"father": self.father, "mother": self.mother}.get(which)
        if source is None:
            raise ValueError("which must be 'father' or 'mother'")
        self._use_vocabulary(None)
        if self.current == which:
            return
        if which == "mother" and (self.pairing.mode == PairingMode.FFN_ONLY or self._mother_vocabulary_differs()):
            self._use_own_mother()
            return
        if which == "mother" and self.pairing.names is not None:
            pairs = ((name, self.pairing.mother_name(name)) for name in self.names)
            self.write(((name, self.mother.get(other) if other else self.father.get(name)) for name, other in pairs),
                       label=which)
            return
        self.write(((name, source.get(name)) for name in self.names), label=which)

    def _use_own_mother(self) -> None:
        """Point `model` and `tokenizer` at the mother's own model (loaded on first use), as a curve scores her."""
        if self._mother_model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            dtype = self._child_model.dtype
            self._mother_model = (AutoModelForCausalLM.from_pretrained(self.mother_dir, dtype=dtype)
                                  .to(self.device).eval(), AutoTokenizer.from_pretrained(self.mother_dir))
        self.model, self.tokenizer = self._mother_model
        self.current = "mother"

    def load_recipe(self, recipe) -> None:
        """Merge the parents by `recipe` (the one merge path, through the pair's pairing) into the child.

        Only the tensors whose plan changed since the last candidate are merged and written (a frozen layer, a
        transplanted or untouched tensor, a ratio the genome did not move): the others already hold exactly
        these bytes. Plans and the change check are numpy columns (`recipe.columns`), made slice by slice. On a
        CUDA device the merge is the fused one (same bytes as `merge_tensors`, one pass); with the parents
        resident beside the child it goes through the child's `fused_layout.ResidentLayout`, planned and launched
        in `MERGE_SLICES` slices so that the GPU merges one while the host plans the next."""
        from darwin_core.merge.methods import fused
        from darwin_core.merge.methods.registry import Method
        from darwin_core.merge.pairing import aligned_sources
        from darwin_core.recipe.columns import plan_columns

        pairing = self.pairing_for(getattr(recipe, "layer_map", None), getattr(recipe, "tokenizer_source", None))
        self._use_vocabulary(pairing.vocabulary)
        label = "recipe:" + recipe.recipe_hash
        if self.current == label:
            return
        merge = self._merge_function()
        father, mother = aligned_sources(pairing, self.father, self.mother)  # rows by token under a vocabulary plan
        layout = None
        if (merge is not apply_merge_tensors() and father is self.father and fused.fusable(recipe, self.device)
                and self.placement.parents_on == ParentsOn.ACCELERATOR):
            layout = self._layout(pairing, recipe.torch_dtype)
        index, held, planned, written = self._index(pairing), self._held, [], []
        dare, blend = recipe.method == Method.DARE_TIES, fused.dare_blend(recipe)
        rewritten = 0

        def merged() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal rewritten
            slices = MERGE_SLICES if layout is not None and not self.plan.groups else 1
            for part, (start, stop) in enumerate(_slices(len(index), slices)):
                columns = plan_columns(recipe, index, start, stop)
                planned.append(columns)
                changed = self._with_groups(columns, columns.changed(held[part] if part < len(held) else None))
                rewritten += int(changed.sum())
                if layout is not None:
                    changed &= ~layout.merge(columns, changed, dare, blend, fused._triton_kernels().layout_launch)
                names = columns.names(changed)
                written.extend(names)
                for name in names:  # planned before the merge: the reference merge on a CPU ran ~10% slower with
                    recipe.plan_for(name)  # the planning between its torch calls (docs/benchmarks.md, "The CPU path")
                extra = {}
                if merge is not apply_merge_tensors():
                    extra["outputs"] = {name: self.plan.targets[self.plan.direct[name]] for name in names
                                        if name in self.plan.direct}
                yield from merge(recipe, father, mother, names, device=self.device, base=self.base,
                                 pairing=pairing.names, **extra)

        self.current = None  # from here on the child's weights may be half written
        self.write(merged(), label=label, names=written)  # what the layout merged is the child's own tensors already
        self._held = planned
        self.last_rewritten = rewritten

    def _index(self, pairing):
        """The child's tensor names with their roles and partners (`recipe.columns.TensorIndex`), once per pairing."""
        from darwin_core.recipe.columns import TensorIndex

        key = id(pairing)
        if key not in self._indexes:
            self._indexes[key] = TensorIndex.of(self.names, pairing.names)
        return self._indexes[key]

    def _layout(self, pairing, out_dtype):
        """The fused kernels' tables for resident parents and this write plan's tensors, made at first use."""
        from darwin_core.merge.methods.fused_layout import ResidentLayout

        key = (id(pairing), id(self.plan), out_dtype)
        if key not in self._layouts:
            outputs = {name: self.plan.targets[self.plan.direct[name]] for name in self.names if name in self.plan.direct}
            self._layouts[key] = ResidentLayout(self.father, self.mother, outputs, pairing.names, out_dtype, self.device)
        return self._layouts[key]

    def _with_groups(self, columns, changed: np.ndarray) -> np.ndarray:
        """`changed` with every tensor of a converter group (MoE experts fused on load) one of whose tensors changed:
        a group is written as one (such a child is not sliced, so its columns hold every tensor)."""
        if not self.plan.groups or not changed.any():
            return changed
        groups = {self.plan.group_of.get(name) for name in columns.names(changed)} - {None}
        members = {member for group in groups for member, _ in self.plan.groups[group].members}
        names = columns.index.names[columns.start:columns.start + len(columns)]
        return changed | np.fromiter((name in members for name in names), dtype=bool, count=len(names))

    def _merge_function(self):
        """`fused_merge_tensors` on a CUDA device (it hands what it cannot fuse to `merge_tensors`), else the
        reference `merge_tensors` itself: the CPU path is unchanged."""
        from darwin_core.merge.methods import apply

        if FUSED_MERGE and self.device.type == "cuda":
            from darwin_core.merge.methods.fused import fused_merge_tensors

            return fused_merge_tensors
        return apply.merge_tensors


def _slices(total: int, count: int) -> list[tuple[int, int]]:
    """Rows 0 … `total` cut into `count` runs (start, stop) in order, each twice the one before: the first is small,
    so the GPU starts soon, and each next one is planned while the GPU merges the one before."""
    count = max(1, min(count, total))
    weights = [1 << k for k in range(count)]
    ends = [round(total * sum(weights[:k + 1]) / sum(weights)) for k in range(count)]
    return list(zip([0] + ends[:-1], ends))


def apply_merge_tensors():
    """The reference merge (looked up at call time, so a bench may substitute it)."""
    from darwin_core.merge.methods import apply

    return apply.merge_tensors
