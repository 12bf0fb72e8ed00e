"""A resident child's fused merge with its tables made once: each candidate is one small upload and three launches.

`fused_merge_tensors` batches tensors as they come and builds each batch's tables (addresses, sizes, chunk rows)
anew. On an H200 that host work — each of ~400 tensors fetched and checked, ~10 tables, ~30 launches — took as
long as the GPU's merge, and the GPU waited for it (bench/merge_host.py). For a resident child none of it changes
between candidates except each tensor's parameters: the parents' and the child's tensors stay where they are.
`ResidentLayout` checks every tensor once and keeps, per dtype triple, the address rows (host) and the chunk
table and scratch (GPU); a candidate then fills one row per tensor from its plans' columns
(`recipe.columns.PlanColumns`, no object per tensor) — DARE-TIES, linear, a parent's tensor copied, or SKIP_MODE
for a tensor it keeps — and `_dare_triton.launch_rows` runs it over the chunks of the tensors it merges. The
kernels are the batch path's, so the bytes are the reference's (tests/test_gpu.py, the resident child's test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from darwin_core.merge.methods.fused_tables import (FLOAT_ROW, INT_ROW, SKIP_MODE, DareFlag, RowKinds, chunk_starts,
                                                   chunk_table, dare_columns, keep_bits, linear_columns,
                                                   scratch_size)
from darwin_core.merge.methods.registry import PlanSource


@dataclass(frozen=True)
class _Entry:
    """Where one tensor's row is, and which of a recipe's plans the kernels can carry out for it."""

    group: int
    position: int
    mergeable: bool  # father and mother merged into the output (same shape, dtypes the kernels take)
    copies_father: tuple[bool, bool]  # the father's tensor copied as is into the output (keep_dtype False / True)
    copies_mother: bool


@dataclass
class LayoutGroup:
    """The tensors of one (father, mother, child) dtype triple: `template` holds their int64 rows with the
    addresses filled and every tensor skipped, then their float32 rows; `chunks` / `scratch` live on the GPU."""

    names: list[str]
    outputs: list[torch.Tensor]
    template: np.ndarray
    chunk_starts: np.ndarray  # the first chunk of each tensor, and the chunk count last
    chunks: torch.Tensor
    scratch: torch.Tensor
    witnesses: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    befores: torch.Tensor | None = None  # each chunk's |Δ| sum (DARE's rescale), made by the first launch needing it
    keeps: torch.Tensor | None = None  # the keep masks the sums kernel leaves the merge (`_dare_triton.keep_buffer`)


class ResidentLayout:
    """The fused kernels' view of resident parents and a resident child's tensors, built once per child."""

    def __init__(self, father: Any, mother: Any, outputs: Mapping[str, torch.Tensor],
                 pairing: Mapping[str, str | None] | None, out_dtype: torch.dtype | None, device: torch.device):
        from darwin_core.merge.methods.fused import _aligned, _fits, _fits_into

        self.entries: dict[str, _Entry] = {}
        members: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        for name, into in outputs.items():
            f = father.get(name, device)
            mother_name = name if pairing is None else pairing.get(name)
            m = mother.get(mother_name, device) if mother_name is not None else f
            target = out_dtype or f.dtype
            usable = (_fits(f, f, f.dtype) and _aligned(f, into) and into.is_contiguous() and into.device == f.device
                      and into.shape == f.shape)
            fits_mother = mother_name is not None and _fits(m, m, m.dtype) and m.shape == into.shape and _aligned(m)
            entry = (usable and fits_mother and _fits(f, m, target) and _fits_into(into, f, target),
                     (usable and into.dtype == target, usable and into.dtype == f.dtype),
                     usable and fits_mother and into.dtype == target)
            if not (entry[0] or any(entry[1]) or entry[2]):
                continue
            key = (f.dtype, m.dtype, into.dtype)
            group = list(members).index(key) if key in members else len(members)
            members.setdefault(key, []).append((name, f, m, into))
            self.entries[name] = _Entry(group, len(members[key]) - 1, *entry)
        self.groups = [_group(rows, device) for rows in members.values()]
        self._index_rows: tuple[Any, _IndexRows] | None = None

    def merge(self, columns: Any, rows: np.ndarray, dare: bool, blend: float | None,
              launch: Callable[[np.ndarray, LayoutGroup, RowKinds, tuple[int, int]], None]) -> np.ndarray:
        """Merge the `rows` (a bool mask over `columns`, a `recipe.columns.PlanColumns` of this layout's index) that
        the kernels can carry out into the child's own tensors, by one `launch(table, group, kinds, chunk range)`
        per dtype triple over the chunks from its first such tensor to its last; returns the mask of those done
        (the others are the reference path's)."""
        where = self._rows(columns.index)
        span = slice(columns.start, columns.start + len(columns))
        merged = rows & (columns.source == PlanSource.MERGED) & where.mergeable[span]
        copied = rows & (((columns.source == PlanSource.FATHER) & where.copies_father[span])
                         | ((columns.source == PlanSource.MOTHER) & where.copies_mother[span]))
        groups, positions = where.group[span], where.position[span]
        for number, group in enumerate(self.groups):
            ours = groups == number
            merged_here, copied_here = np.flatnonzero(merged & ours), np.flatnonzero(copied & ours)
            if not (len(merged_here) or len(copied_here)):
                continue
            table, kinds = candidate_table(group.template, len(group.names), columns, merged_here, copied_here,
                                           positions, dare, blend)
            touched = positions[np.concatenate([merged_here, copied_here])]
            launch(table, group, kinds, (int(group.chunk_starts[touched.min()]),
                                         int(group.chunk_starts[touched.max() + 1])))
        return merged | copied

    def _rows(self, index: Any) -> _IndexRows:
        """Per row of `index` (names in the child's order): its group and position, what the kernels can do."""
        if self._index_rows is None or self._index_rows[0] is not index:
            entries = [self.entries.get(name) for name in index.names]
            self._index_rows = (index, _IndexRows(
                group=np.asarray([-1 if e is None else e.group for e in entries], dtype=np.int64),
                position=np.asarray([0 if e is None else e.position for e in entries], dtype=np.int64),
                mergeable=np.asarray([e is not None and e.mergeable for e in entries], dtype=bool),
                copies_father=np.asarray([e is not None and e.copies_father[not language]
                                          for e, language in zip(entries, index.language)], dtype=bool),
                copies_mother=np.asarray([e is not None and e.copies_mother for e in entries], dtype=bool)))
        return self._index_rows[1]


@dataclass(frozen=True)
class _IndexRows:
    """`ResidentLayout._rows`: one entry per row of a tensor index (group -1: a tensor the layout does not hold)."""

    group: np.ndarray
    position: np.ndarray
    mergeable: np.ndarray
    copies_father: np.ndarray  # the father's tensor copied as it is, in the dtype the row's plan keeps
    copies_mother: np.ndarray


def candidate_table(template: np.ndarray, count: int, columns: Any, merged: np.ndarray, copied: np.ndarray,
                    positions: np.ndarray, dare: bool, blend: float | None) -> tuple[np.ndarray, RowKinds]:
    """A group's table for one candidate: `template` with the rows of the `merged` and `copied` rows of `columns`
    (indices into them; `positions` their rows in the group) filled; the launches its rows need."""
    table = template.copy()
    ints = table[:count * INT_ROW].reshape(count, INT_ROW)
    floats = table[count * INT_ROW:].view(np.float32).reshape(count, FLOAT_ROW)
    if len(copied):
        ints[positions[copied], 9] = (columns.source[copied] == PlanSource.MOTHER).astype(np.int64)
    rescales = bits = False
    if len(merged):
        at, ratio = positions[merged], columns.ratio[merged]
        if dare:
            shared = columns.shared
            kernel_ints, values = dare_columns(ratio, columns.density_mother[merged], columns.seed_mother[merged],
                                               shared.normalize, shared.rescale, shared.scale, shared.weight_signs[1],
                                               blend)
            ints[at, 5:10] = kernel_ints
            floats[at, :6] = values
            rescales = bool(np.any(kernel_ints[:, 3] & int(DareFlag.RESCALE)))
            bits = keep_bits(kernel_ints[:, 3])
        else:
            modes, w0, w1, total = linear_columns(ratio)
            ints[at, 9] = modes
            floats[at, 2], floats[at, 3], floats[at, 4] = w0, w1, total
    has_merged = bool(len(merged))
    return table, RowKinds(rescales, has_merged and dare, bool(len(copied)) or (has_merged and not dare), bits)


def _group(rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]], device: torch.device) -> LayoutGroup:
    count = len(rows)
    numels = [into.numel() for _, _, _, into in rows]
    starts = chunk_starts(numels)
    template = np.zeros(count * (INT_ROW + FLOAT_ROW // 2), dtype=np.int64)
    ints = template[:count * INT_ROW].reshape(count, INT_ROW)
    ints[:, 0] = [f.data_ptr() for _, f, _, _ in rows]
    ints[:, 1] = [m.data_ptr() for _, _, m, _ in rows]
    ints[:, 2] = [into.data_ptr() for _, _, _, into in rows]
    ints[:, 3] = numels
    ints[:, 4] = starts[:-1]
    ints[:, 9] = SKIP_MODE
    chunks = chunk_table(numels)
    first = rows[0]
    return LayoutGroup(names=[name for name, _, _, _ in rows], outputs=[into for _, _, _, into in rows],
                       template=template, chunk_starts=starts,
                       chunks=torch.from_numpy(chunks.reshape(-1).copy()).to(device),
                       scratch=torch.empty(scratch_size(count, len(chunks)), dtype=torch.float32, device=device),
                       witnesses=(first[1], first[2], first[3]))
