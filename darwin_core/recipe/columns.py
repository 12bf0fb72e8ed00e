"""A recipe's plans for a run of tensors as numpy columns: what a resident child needs per candidate, in one pass.

`Recipe.plan_for` makes one `TensorPlan` (a `TensorParams` inside) per tensor, and the resident child compared
those plans with the last candidate's to find what to rewrite: ~5 µs of Python a tensor here and ~10 µs on the
GPU machines' hosts, so a 4B child's ~400 tensors took 3.5–4 ms a candidate, half the GPU's DARE-TIES merge
(bench/merge_host.py). `plan_columns` resolves the same fields through the recipe's own `resolve` for the rows of
a `TensorIndex` (the names with their roles and partners, classified once per child) without making an object per
tensor, the mask seeds hashed in one pass; `PlanColumns.changed` is the change check on those columns. Every row
equals `merge.methods.apply.paired_plan` of its tensor (tests/test_plan_columns.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from darwin_core.merge.methods.registry import PlanSource
from darwin_core.parents.anatomy import classify

SEED_BITS = (1 << 63) - 1  # a mask seed is the low 63 bits of its message's sha256, read little-endian


def seed_message(recipe_hash: str, name: str, parent: str) -> bytes:
    """What one parent's DARE mask seed of one tensor hashes (`Recipe.mask_seed`, `plan_columns`)."""
    return f"{recipe_hash}\n{name}\n{parent}".encode("utf-8")


def seed_of(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "little") & SEED_BITS


_SOURCES = {None: PlanSource.MERGED, "father": PlanSource.FATHER, "mother": PlanSource.MOTHER}


@dataclass(frozen=True, eq=False)
class TensorIndex:
    """The father's tensor names in the child's order, each with its role and whether the pairing gives it a partner
    in the mother (None: the same name in both); built once per child and pairing, compared by identity."""

    names: tuple[str, ...]
    roles: tuple[Any, ...]  # parents.anatomy.TensorRole per name
    partnered: np.ndarray  # bool
    language: np.ndarray  # bool: the language tower's (the others keep the father's dtype)

    @classmethod
    def of(cls, names: Sequence[str], pairing: Mapping[str, str | None] | None = None) -> TensorIndex:
        roles = tuple(classify(name) for name in names)
        partnered = np.asarray([pairing is None or pairing.get(name) is not None for name in names], dtype=bool)
        language = np.asarray([role.tower == "language" for role in roles], dtype=bool)
        return cls(tuple(names), roles, partnered, language)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, eq=False)
class PlanColumns:
    """The plans of rows `start` … `start + len(source)` of an index under one recipe: per row the `PlanSource`, the
    ratio and both densities of its TensorParams and both mask seeds (the defaults (0, 1) where the method reads
    none or the row is not merged); `shared` the TensorParams fields every merged row shares (ratio 0), `constants`
    the rest a merged row's bytes depend on (method, base, method weight), `dtype` the child's."""

    index: TensorIndex
    start: int
    source: np.ndarray  # int8, `PlanSource`
    ratio: np.ndarray  # float64
    density_father: np.ndarray
    density_mother: np.ndarray
    seed_father: np.ndarray  # uint64
    seed_mother: np.ndarray
    shared: Any  # TensorParams
    constants: tuple
    dtype: Any

    def __len__(self) -> int:
        return len(self.source)

    def changed(self, previous: PlanColumns | None) -> np.ndarray:
        """Which rows' bytes differ from those `previous` planned (the same rows of the same index, else all): a
        copied row by its source (and the child's dtype), a merged one by every field of its plan."""
        if (previous is None or previous.index is not self.index or previous.start != self.start
                or len(previous) != len(self) or previous.dtype != self.dtype):
            return np.ones(len(self), dtype=bool)
        changed = self.source != previous.source
        merged = self.source == PlanSource.MERGED
        if previous.constants != self.constants or previous.shared != self.shared:
            return changed | merged
        fields = ((self.ratio, previous.ratio), (self.density_father, previous.density_father),
                  (self.density_mother, previous.density_mother), (self.seed_father, previous.seed_father),
                  (self.seed_mother, previous.seed_mother))
        for now, before in fields:
            changed |= merged & (now != before)
        return changed

    def names(self, rows: np.ndarray) -> list[str]:
        """The names of `rows` (a bool mask over these columns' rows), in order."""
        names = self.index.names
        return [names[self.start + row] for row in np.flatnonzero(rows).tolist()]


def plan_columns(recipe: Any, index: TensorIndex, start: int = 0, stop: int | None = None) -> PlanColumns:
    """The plans of `index` rows start … stop (all by default) under `recipe`, as `paired_plan` makes them."""
    stop = len(index) if stop is None else stop
    names, roles = index.names[start:stop], index.roles[start:stop]
    resolved = [recipe.resolve(name, role) for name, role in zip(names, roles)]
    count = len(resolved)
    source = np.fromiter((_SOURCES[r[0]] for r in resolved), dtype=np.int8, count=count)
    ratio = np.fromiter((r[1] for r in resolved), dtype=np.float64, count=count)
    densities = np.asarray([r[2] for r in resolved], dtype=np.float64).reshape(count, 2)
    language = index.language[start:stop]
    ratio[~language] = 0.0
    seeds = np.zeros((2, count), dtype=np.uint64)
    seeds[1] = 1  # TensorParams' default mask seeds
    merged = source == PlanSource.MERGED
    if recipe.reads_mask_seeds and merged.any():
        rows = np.flatnonzero(merged).tolist()
        seeds[1, rows] = _seeds(recipe.recipe_hash, [names[k] for k in rows], "mother")
        seeds[0, rows] = 0 if recipe.base == "father" else _seeds(recipe.recipe_hash, [names[k] for k in rows], "father")
    unpaired = ~index.partnered[start:stop] & (source != PlanSource.FATHER)
    source[unpaired], ratio[unpaired] = PlanSource.FATHER, 0.0  # `paired_plan`: a tensor without a partner is the father's
    return PlanColumns(index, start, source, ratio, densities[:, 0].copy(), densities[:, 1].copy(), seeds[0], seeds[1],
                       recipe.shared_params, (recipe.method, str(recipe.base), recipe.method_weight),
                       recipe.torch_dtype)


def _seeds(recipe_hash: str, names: list[str], parent: str) -> np.ndarray:
    """`Recipe.mask_seed` of each name for `parent`, the eight bytes of each digest read in one array."""
    sha256 = hashlib.sha256
    digests = b"".join(sha256(seed_message(recipe_hash, name, parent)).digest()[:8] for name in names)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64) & np.uint64(SEED_BITS)
