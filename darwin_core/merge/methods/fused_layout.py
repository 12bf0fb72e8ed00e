"""A resident child's fused merge with its tables made once: each candidate is one small upload and three launches.

`fused_merge_tensors` batches tensors as they come and builds each batch's tables (addresses, sizes, chunk rows)
anew. On an H200 that host work — each of ~400 tensors fetched and checked, ~10 tables, ~30 launches — took as
long as the GPU's merge, and the GPU waited for it (bench/merge_host.py). For a resident child none of it changes
between candidates except each tensor's parameters: the parents' and the child's tensors stay where they are.
`ResidentLayout` checks every tensor once and keeps, per dtype triple, the address rows (host) and the chunk
table and scratch (GPU); a candidate then fills one row per tensor — DARE-TIES, linear, a parent's tensor copied,
or SKIP_MODE for a tensor it keeps — and `_dare_triton.launch_rows` runs it over every chunk of the triple. The
kernels are the batch path's, so the bytes are the reference's (tests/test_gpu.py, the resident child's test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from darwin_core.merge.methods.apply import paired_plan
from darwin_core.merge.methods.fused_tables import (FLOAT_ROW, INT_ROW, SKIP_MODE, DareFlag, RowKinds, chunk_starts,
                                                   chunk_table, dare_columns, linear_columns, scratch_size)
from darwin_core.merge.methods.registry import Method, get_method


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


class ResidentLayout:
    """The fused kernels' view of resident parents and a resident child's tensors, built once per child."""

    def __init__(self, father: Any, mother: Any, outputs: Mapping[str, torch.Tensor],
                 pairing: Mapping[str, str | None] | None, out_dtype: torch.dtype | None, device: torch.device):
        from darwin_core.merge.methods.fused import _aligned, _fits, _fits_into

        self.sources, self.pairing, self.out_dtype, self.device = (father, mother), pairing, out_dtype, device
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

    def serves(self, father: Any, mother: Any, pairing: Any, out_dtype: torch.dtype | None,
               device: torch.device) -> bool:
        """Whether this layout was built for these sources, pairing, child dtype and device."""
        return (self.sources[0] is father and self.sources[1] is mother and self.pairing is pairing
                and self.out_dtype == out_dtype and self.device == device)

    def merge(self, recipe: Any, names: Sequence[str], pairing: Mapping[str, str | None] | None,
              launch: Callable[[np.ndarray, LayoutGroup, RowKinds, tuple[int, int]], None]
              ) -> Iterator[tuple[str, torch.Tensor]]:
        """Merge the `names` the kernels can carry out (one `launch(table, group, kinds, chunk range)` per dtype
        triple, over the chunks from its first merged tensor to its last), yield them as (name, the child's own
        tensor); returns the names left for the reference path."""
        dare = recipe.method == Method.DARE_TIES
        blend = recipe.method_weight if recipe.method_weight < 1.0 and get_method(recipe.method).blends_with_linear else None
        merged: list[list[tuple[int, Any]]] = [[] for _ in self.groups]
        copied: list[list[tuple[int, int]]] = [[] for _ in self.groups]
        done, left = [], []
        for name in names:
            entry = self.entries.get(name)
            if entry is None:
                left.append(name)
                continue
            plan, mother_name = paired_plan(recipe, name, pairing)
            if plan.source is None and mother_name is not None and entry.mergeable:
                merged[entry.group].append((entry.position, plan.params))
            elif plan.source == "father" and entry.copies_father[plan.keep_dtype]:
                copied[entry.group].append((entry.position, 0))
            elif plan.source == "mother" and mother_name is not None and entry.copies_mother:
                copied[entry.group].append((entry.position, 1))
            else:
                left.append(name)
                continue
            done.append(name)
        for group, rows, copies in zip(self.groups, merged, copied):
            if rows or copies:
                table, kinds = candidate_table(group.template, len(group.names), rows, copies, dare, blend)
                positions = [position for position, _ in rows] + [position for position, _ in copies]
                launch(table, group, kinds, (int(group.chunk_starts[min(positions)]),
                                             int(group.chunk_starts[max(positions) + 1])))
        for name in done:
            entry = self.entries[name]
            yield name, self.groups[entry.group].outputs[entry.position]
        return left


def candidate_table(template: np.ndarray, count: int, merged: list[tuple[int, Any]], copied: list[tuple[int, int]],
                    dare: bool, blend: float | None) -> tuple[np.ndarray, RowKinds]:
    """A group's table for one candidate: `template` with the rows of the merged tensors (position, params) and
    of the copied ones (position, linear mode 0/1) filled; the launches its rows need."""
    table = template.copy()
    ints = table[:count * INT_ROW].reshape(count, INT_ROW)
    floats = table[count * INT_ROW:].view(np.float32).reshape(count, FLOAT_ROW)
    if copied:
        positions, modes = zip(*copied)
        ints[list(positions), 9] = modes
    rescales = False
    if merged:
        positions = [position for position, _ in merged]
        params = [p for _, p in merged]
        if dare:
            columns, values = dare_columns(params, blend)
            ints[positions, 5:10] = columns
            floats[positions, :6] = values
            rescales = bool(np.any(columns[:, 3] & int(DareFlag.RESCALE)))
        else:
            modes, w0, w1, total = linear_columns(np.asarray([p.ratio for p in params], dtype=np.float64))
            ints[positions, 9] = modes
            floats[positions, 2], floats[positions, 3], floats[positions, 4] = w0, w1, total
    return table, RowKinds(rescales, bool(merged) and dare, bool(copied) or (bool(merged) and not dare))


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
