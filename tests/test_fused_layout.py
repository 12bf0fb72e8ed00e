"""The resident child's fused merge with tables made once (`fused_layout.ResidentLayout`), on the CPU: every
candidate's rows, read back by a torch stand-in for the kernels, give the reference child's bytes; tensors the
kernels cannot take come from the reference path; a candidate is one launch per dtype triple (the kernels' own
bytes are checked on a GPU in tests/test_gpu.py, through the resident child)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from darwin_core.merge.methods import fused, fused_tables
from darwin_core.merge.methods.fused_layout import ResidentLayout
from darwin_core.merge.methods.fused_tables import FLOAT_ROW, INT_ROW, SKIP_MODE, DareFlag, DareRow
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


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_a_candidate_through_the_layout_writes_the_reference_child_and_launches_once_per_dtype_triple(
        cpu_layout, fixture_pair, method, dtype):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, dtype, method=method)
    launches = cpu_layout(father, mother)
    layout = ResidentLayout(father, mother, outputs, None, recipe.torch_dtype, torch.device("cpu"))
    assert layout.entries and len(layout.entries) < len(reference)  # some outputs do not fit: the reference's
    got = dict(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs, layout=layout))
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
    got = dict(fused.fused_merge_tensors(recipe, father, mother, names, device="cpu", outputs=outputs, layout=layout))
    assert sorted(got) == sorted(names)
    assert all(torch.equal(outputs[name].view(torch.uint8), before[name].view(torch.uint8)) for name in kept)
    assert all(torch.equal(got[name].view(torch.uint8), reference[name].view(torch.uint8)) for name in names)


def test_a_layout_serves_only_the_sources_and_child_dtype_it_was_made_for(cpu_layout, fixture_pair):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, "bfloat16")
    layout = ResidentLayout(father, mother, outputs, None, torch.bfloat16, torch.device("cpu"))
    cpu = torch.device("cpu")
    assert layout.serves(father, mother, None, torch.bfloat16, cpu)
    assert not layout.serves(mother, father, None, torch.bfloat16, cpu)
    assert not layout.serves(father, mother, None, torch.float32, cpu)
    assert not layout.serves(father, mother, {}, torch.bfloat16, cpu)


def test_the_dare_columns_are_the_dare_rows_of_each_tensor():
    from darwin_core.merge.methods.registry import TensorParams

    rng = np.random.default_rng(3)
    params = [TensorParams(ratio=float(r), density_mother=float(d), mask_seeds=(1, int(s)), normalize=n, rescale=z,
                           scale=float(c), weight_signs=(1.0, g))
              for r, d, s, n, z, c, g in zip(rng.random(40), np.r_[rng.random(30), np.ones(10)],
                                             rng.integers(0, 1 << 62, 40), [None, True, False, True] * 10,
                                             [None, False] * 20, rng.random(40) + 0.5, [1.0, -1.0] * 20)]
    for blend in (None, 0.3):
        ints, values = fused_tables.dare_columns(params, blend)
        for k, p in enumerate(params):
            row = fused_tables.dare_row(p, blend)
            assert ints[k].tolist() == [row.seed_low, row.seed_high, row.threshold, int(row.flags), row.linear[0]]
            assert values[k].tolist() == [row.weight, row.scale, *row.linear[1:], row.blend]
            seed = p.mask_seeds[1]
            assert (row.seed_low, row.seed_high) == (seed & 0xFFFFFFFF, seed >> 32)
            assert row.threshold == (int(p.density_mother * (1 << 24)) if p.density_mother < 1 else 1 << 24)
            assert row.weight == float(np.float32(p.weight_signs[1] * p.ratio))


def test_the_linear_columns_are_linear_weights_of_each_ratio():
    ratios = np.r_[np.random.default_rng(4).random(500), 0.0, 1.0, 0.5, 1e-8]
    modes, w0, w1, total = fused_tables.linear_columns(ratios)
    for k, ratio in enumerate(ratios.tolist()):
        assert fused.linear_weights(ratio) == (int(modes[k]), float(w0[k]), float(w1[k]), float(total[k]))


@pytest.mark.parametrize("count", [0, 1, 2, 5, 398])
def test_a_candidate_is_cut_into_growing_slices_that_hold_every_tensor_once_in_order(count):
    from darwin_core.evolution.child import _slices

    names = [f"t{k}" for k in range(count)]
    for slices in (1, 4):
        parts = _slices(names, slices)
        assert [name for part in parts for name in part] == names
        assert len(parts) <= max(1, slices)
        sizes = [len(part) for part in parts]
        assert sizes == sorted(sizes)  # the first is the smallest: the GPU starts early
