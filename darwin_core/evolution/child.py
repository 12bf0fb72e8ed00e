"""The resident child: one loaded model whose weights every candidate overwrites in place.

Evaluating a CMA-ES candidate must not cost a model load. So the father is loaded once as a transformers
model on the device (the "child"), both parents' tensors are loaded once and stay resident on the same
device, and each candidate's merged tensors — produced by the one merge path, `merge.apply.merge_tensors`,
the same code that writes children to disk — are copied into the child's parameters under `torch.no_grad()`.
No candidate touches the disk, and the weights the evaluator sees are exactly those `merge_to_disk` would
write for the same recipe (same kernels, same dtype cast, same seeded DARE masks).

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

import torch

from darwin_core.io.dtypes import dtype_from_name
from darwin_core.errors import DarwinError
from darwin_core.merge.methods.apply import StateDictSource


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
        """parents: where the parents' tensors live — "auto" (on the accelerator when they fit), "device", or
        "host" (pinned host memory, streamed to the accelerator tensor by tensor during each merge)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's log is for the run's progress, not per-tensor bars
        self.device = resolve_device(device)
        self.father_dir, self.mother_dir = Path(father), Path(mother)
        load_dtype = dtype_from_name(dtype) if dtype not in (None, "auto") else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(self.father_dir, dtype=load_dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.father_dir)
        folders = [self.father_dir, self.mother_dir] + ([Path(base)] if base is not None else [])
        if parents not in ("auto", "device", "host"):
            raise DarwinError(f"parents must be auto, device or host, not {parents!r}.")
        storage, pin = self._parent_storage(folders) if parents == "auto" else (
            (self.device, False) if parents == "device" or self.device.type != "cuda" else (torch.device("cpu"), True)
        )
        self.parents_on = "accelerator" if storage.type == "cuda" else ("pinned host memory" if pin else "host memory")
        from darwin_core.merge.pairing import pairing_for, resolved_folders

        self._parent_models = resolved_folders(self.father_dir, self.mother_dir)
        self.pairing = pairing_for(*self._parent_models)  # refused in one sentence before a tensor is loaded
        self._pairings = {(): self.pairing}
        self.father = ResidentTensors(self.father_dir, storage, pin=pin)
        self.mother = ResidentTensors(self.mother_dir, storage, pin=pin)
        self.base = ResidentTensors(base, storage, pin=pin) if base is not None else None
        self.names = list(self.father.names)
        self._child_model, self._child_tokenizer = self.model, self.tokenizer
        self._mother_model = None
        self.plan = WritePlan(self.model, self.names)
        self.plan.check_shapes(self.father)
        self.current: str | None = "father"  # what the child's weights hold now (a recipe hash or a parent)

    def _parent_storage(self, folders: list[Path]) -> tuple[torch.device, bool]:
        """Where the parents' tensors live: on the accelerator when they fit beside the child with room to spare
        for evaluation (a quarter of what is free after them), else in pinned host memory, streamed per tensor."""
        if self.device.type != "cuda":
            return self.device, False
        from darwin_core.io.tensors import TensorReader

        needed = sum(TensorReader(folder).total_bytes for folder in folders)
        free, _ = torch.cuda.mem_get_info(self.device)
        if needed <= 0.75 * free:
            return self.device, False
        return torch.device("cpu"), True

    def write(self, items: Iterable[tuple[str, torch.Tensor]], label: str | None = None) -> int:
        """Overwrite the child's parameters with `items`; every checkpoint tensor must come exactly once."""
        seen: set[str] = set()

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in items:
                seen.add(name)
                yield name, tensor

        self.current = None  # a failure half-way leaves a mixed child: say so
        self.model, self.tokenizer = self._child_model, self._child_tokenizer
        written = self.plan.write(counted())
        if seen != set(self.names):
            missing = sorted(set(self.names) - seen)[:3]
            raise DarwinError(f"The merge did not produce every tensor of the model (missing e.g. {', '.join(missing)}).")
        self.current = label
        return written

    def pairing_for(self, layer_map=None):
        """The pairing for a recipe's `layer_map` (the default depth map without one), built once per map."""
        key = tuple(sorted((layer_map or {}).items()))
        if key not in self._pairings:
            from darwin_core.merge.pairing import pairing_for

            self._pairings[key] = pairing_for(*self._parent_models, layer_map)
        return self._pairings[key]

    def load_parent(self, which: str) -> None:
        """Put one parent's own weights into the child (the reference lines of every curve).

        A mother named differently (a wrapper pair) is written through the pairing, towers the father's; a mother
        of another family (an FFN-only pair) is her own model, loaded once and evaluated as she is.
        """
        source = {"father": self.father, "mother": self.mother}.get(which)
        if source is None:
            raise ValueError("which must be 'father' or 'mother'")
        if self.current == which:
            return
        if which == "mother" and self.pairing.mode == "ffn_only":
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
        """Merge the parents by `recipe` (the one merge path, through the pair's pairing) into the child."""
        from darwin_core.merge.methods.apply import merge_tensors

        label = "recipe:" + recipe.recipe_hash
        if self.current == label:
            return
        pairing = self.pairing_for(getattr(recipe, "layer_map", None))
        items = merge_tensors(recipe, self.father, self.mother, self.names, device=self.device, base=self.base,
                              pairing=pairing.names)
        self.write(items, label=label)
