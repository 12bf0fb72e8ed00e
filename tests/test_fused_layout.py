"""The resident child's fused merge with tables made once (`fused_layout.ResidentLayout`), on the CPU: every
candidate's rows, read back by a torch stand-in for the kernels, give the reference child's bytes; tensors the
kernels cannot take come from the reference path; a candidate is one launch per dtype triple (the kernels' own
bytes are checked on a GPU in tests/test_gpu.py, through the resident child)."""

from __future__ import annotations

import types
from dataclasses import replace

import numpy as np
import pytest
import torch

from darwin_core.merge.methods import fused, fused_tables
from darwin_core.merge.methods.fused_layout import ResidentLayout
from darwin_core.merge.methods.fused_tables import FLOAT_ROW, INT_ROW, SKIP_MODE, DareFlag, DareRow
from darwin_core.merge.methods.registry import get_method
from tests.test_fused_multi import _fake_kernels, _setup, _torch_dare_ties, _torch_linear


def _layout_kernels(father, mother, launches):
    """`_fake_kernels` with a `layout_launch` that carries out each row of a group's table in torch."""

    def layout_launch(table, group, kinds, chunk_range):
        count = len(group.names)
        ints = table[:count * INT_ROW].reshape(count, INT_ROW)
        floats = table[count * INT_ROW:].view(np.float32).reshape(count, FLOAT_ROW)
        launches.append(len(group.names))
        tasks = (ints[:, 8] & int(DareFlag.TASK_VECTOR)) != 0
        assert kinds.rescales == bool(np.any(ints[:, 8] & int(DareFlag.RESCALE)))
        assert kinds.task_vectors == bool(tasks.any())
        assert kinds.linear == bool(np.any(~tasks & (ints[:, 9] != SKIP_MODE)))
        assert kinds.keep_bits == fused_tables.keep_bits(ints[:, 8])
        assert ints[:, 4].tolist() == group.chunk_starts[:-1].tolist()  # each tensor's first chunk
        low, high = chunk_range
        for position, name in enumerate(group.names):
            seed_low, seed_high, threshold, flags, mode = ints[position, 5:10].tolist()
            if not (low <= group.chunk_starts[position] and group.chunk_starts[position + 1] <= high):
                assert mode == SKIP_MODE and not flags, name  # a row outside the launched chunks is skipped
                continue
            weight, scale, w0, w1, total, blend = floats[position, :6].tolist()
            f, m, out = father.get(name), mother.get(name), group.outputs[position]
            assert ints[position, :3].tolist() == [f.data_ptr(), m.data_ptr(), out.data_ptr()]
            if flags & DareFlag.TASK_VECTOR:
                row = DareRow(DareFlag(flags), seed_low, seed_high, threshold, weight, scale, (mode, w0, w1, total), blend)
                out.copy_(_torch_dare_ties(f, m, row))
            elif mode != SKIP_MODE:
                out.copy_(_torch_linear(f, m, (mode, w0, w1, total)))

    base = _fake_kernels([])
    return types.SimpleNamespace(**vars(base), layout_launch=layout_launch)


@pytest.fixture()
def cpu_layout(monkeypatch):
    monkeypatch.setattr(fused, "fusable", lambda recipe, device: recipe.method in ("linear", "dare_ties"))
    monkeypatch.setattr(fused, "_fits", lambda f, m, target: f.shape == m.shape and f.is_contiguous() and m.is_contiguous())
    launches: list[int] = []

    def install(father, mother):
        monkeypatch.setattr(fused, "_triton_kernels", lambda: _layout_kernels(father, mother, launches))
        return launches

    return install


def _through_layout(recipe, father, mother, outputs, layout, names):
    """One candidate as the resident child runs it: the layout takes what it can of `names` (every tensor planned by
    `recipe.columns`), `fused_merge_tensors` the rest; (name → tensor) of both."""
    from darwin_core.recipe.columns import TensorIndex, plan_columns

    index = TensorIndex.of(father.names)
    columns = plan_columns(recipe, index)
    wanted = np.asarray([name in names for name in index.names], dtype=bool)
    done = layout.merge(columns, wanted, recipe.method == "dare_ties", fused.dare_blend(recipe),
                        fused._triton_kernels().layout_launch)
    assert not (done & ~wanted).any()  # a tensor the candidate does not name is not touched
    got = dict(fused.fused_merge_tensors(recipe, father, mother, columns.names(wanted & ~done), device="cpu",
                                         outputs=outputs))
    return {**got, **{name: outputs[name] for name in columns.names(done)}}


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_a_candidate_through_the_layout_writes_the_reference_child_and_launches_once_per_dtype_triple(
        cpu_layout, fixture_pair, method, dtype):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, dtype, method=method)
    launches = cpu_layout(father, mother)
    layout = ResidentLayout(father, mother, outputs, None, recipe.torch_dtype, torch.device("cpu"))
    assert layout.entries and len(layout.entries) < len(reference)  # some outputs do not fit: the reference's
    got = _through_layout(recipe, father, mother, outputs, layout, set(reference))
    assert sorted(got) == sorted(reference)
    for name, tensor in got.items():
        assert torch.equal(tensor.view(torch.uint8), reference[name].view(torch.uint8)), name
        assert (tensor is outputs.get(name)) == (name in layout.entries), name
    assert len(launches) == len(layout.groups)


def test_a_tensor_the_candidate_does_not_name_is_left_as_it_is(cpu_layout, fixture_pair):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, "bfloat16", method="dare_ties")
    cpu_layout(father, mother)
    layout = ResidentLayout(father, mother, outputs, None, recipe.torch_dtype, torch.device("cpu"))
    kept = [name for name in layout.entries][::2]
    before = {name: outputs[name].clone() for name in kept}
    names = [name for name in reference if name not in kept]
    got = _through_layout(recipe, father, mother, outputs, layout, set(names))
    assert sorted(got) == sorted(names)
    assert all(torch.equal(outputs[name].view(torch.uint8), before[name].view(torch.uint8)) for name in kept)
    assert all(torch.equal(got[name].view(torch.uint8), reference[name].view(torch.uint8)) for name in names)


def test_the_dare_columns_are_the_dare_rows_of_each_tensor():
    from darwin_core.merge.methods.registry import TensorParams

    rng = np.random.default_rng(3)
    params = [TensorParams(ratio=float(r), density_mother=float(d), mask_seeds=(1, int(s)), normalize=n, rescale=z,
                           scale=float(c), weight_signs=(1.0, g))
              for r, d, s, n, z, c, g in zip(rng.random(40), np.r_[rng.random(30), np.ones(10)],
                                             rng.integers(0, 1 << 62, 40), [None, True, False, True] * 10,
                                             [None, False] * 20, rng.random(40) + 0.5, [1.0, -1.0] * 20)]
    column = lambda field: np.asarray([getattr(p, field) for p in params])  # noqa: E731
    defaults = get_method("dare_ties")
    for blend in (None, 0.3):
        shared = TensorParams(ratio=0.0, scale=1.7, weight_signs=(1.0, -1.0))  # one value for every row (a recipe's)
        one = fused_tables.dare_columns(column("ratio"), column("density_mother"), np.asarray(
            [p.mask_seeds[1] for p in params], dtype=np.uint64), None, None, shared.scale, shared.weight_signs[1], blend)
        ints, values = fused_tables.dare_columns(
            column("ratio"), column("density_mother"), np.asarray([p.mask_seeds[1] for p in params], dtype=np.uint64),
            np.asarray([defaults.default_normalize if p.normalize is None else p.normalize for p in params]),
            np.asarray([defaults.default_rescale if p.rescale is None else p.rescale for p in params]),
            column("scale"), np.asarray([p.weight_signs[1] for p in params]), blend)
        for k, p in enumerate(params):
            row = fused_tables.dare_row(p, blend)
            assert ints[k].tolist() == [row.seed_low, row.seed_high, row.threshold, int(row.flags), row.linear[0]]
            assert values[k].tolist() == [row.weight, row.scale, *row.linear[1:], row.blend]
            seed = p.mask_seeds[1]
            assert (row.seed_low, row.seed_high) == (seed & 0xFFFFFFFF, seed >> 32)
            assert row.threshold == (int(p.density_mother * (1 << 24)) if p.density_mother < 1 else 1 << 24)
            assert row.weight == float(np.float32(p.weight_signs[1] * p.ratio))
            row = fused_tables.dare_row(replace(p, normalize=None, rescale=None, scale=1.7, weight_signs=(1.0, -1.0)),
                                        blend)
            assert one[0][k].tolist() == [row.seed_low, row.seed_high, row.threshold, int(row.flags), row.linear[0]]
            assert one[1][k].tolist() == [row.weight, row.scale, *row.linear[1:], row.blend]


def test_the_merge_reads_the_sums_kernels_keep_masks_only_when_every_dropping_row_rescales():
    task, drop, rescale = int(DareFlag.TASK_VECTOR), int(DareFlag.DROP), int(DareFlag.RESCALE)
    assert fused_tables.keep_bits(np.asarray([task | drop | rescale, task, task | drop | rescale]))
    assert not fused_tables.keep_bits(np.asarray([task | drop | rescale, task | drop]))  # one row's mask is hashed
    assert not fused_tables.keep_bits(np.asarray([task, task]))  # nothing dropped, no mask to read


def test_the_linear_columns_are_linear_weights_of_each_ratio():
    ratios = np.r_[np.random.default_rng(4).random(500), 0.0, 1.0, 0.5, 1e-8]
    modes, w0, w1, total = fused_tables.linear_columns(ratios)
    for k, ratio in enumerate(ratios.tolist()):
        assert fused.linear_weights(ratio) == (int(modes[k]), float(w0[k]), float(w1[k]), float(total[k]))


@pytest.mark.parametrize("count", [0, 1, 2, 5, 398])
def test_a_candidate_is_cut_into_growing_slices_that_hold_every_tensor_once_in_order(count):
    from darwin_core.evolution.child import _slices

    for slices in (1, 4):
        parts = _slices(count, slices)
        assert [row for start, stop in parts for row in range(start, stop)] == list(range(count))
        assert len(parts) <= max(1, slices)
        sizes = [stop - start for start, stop in parts]
        assert sizes == sorted(sizes)  # the first is the smallest: the GPU starts early
