"""The multi-tensor linear merge's host side (`fused.py`): chunk and pointer tables, dtype groups, and the batching
in `fused_merge_tensors` (a run of in-place linear tensors → one launch, names in their order), on the CPU with a
torch stand-in for the Triton kernels (the kernels' bytes are checked on a GPU in tests/test_gpu.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from darwin_core.merge.methods import fused
from darwin_core.merge.methods.apply import StateDictSource, merge_tensors

GENES = [0.4989, 0.1766, 0.9021, 0.6122, 0.9951, 0.9617, 0.5740, 0.5811, 0.5736, 0.4697, 0.4930, 0.8418,
         0.4907, 0.3623]


@pytest.mark.parametrize("chunk", [1, 8, 32768])
def test_the_chunk_table_covers_every_element_of_every_tensor_once_in_order(chunk):
    numels = [0, 1, chunk - 1, chunk, chunk + 1, 0, 3 * chunk - 1, 5, 2 * chunk]
    numels = [n for n in numels if n >= 0]
    table = fused.chunk_table(numels, chunk)
    assert table.dtype == np.int32 and table.shape == (sum(-(-n // chunk) for n in numels), 2)
    assert np.all(np.diff(table[:, 0]) >= 0)  # tensors in order
    for index, n in enumerate(numels):
        firsts = table[table[:, 0] == index, 1].astype(np.int64) * chunk
        assert list(firsts) == list(range(0, n, chunk))  # each chunk once, ascending, an empty tensor has none
        covered = np.zeros(n, dtype=np.int64)
        for first in firsts:
            covered[first:first + chunk] += 1
        assert np.all(covered == 1)


def test_the_chunk_table_of_nothing_is_empty():
    assert fused.chunk_table([], 8).shape == (0, 2)
    assert fused.chunk_table([0, 0], 8).shape == (0, 2)


def test_the_linear_tables_hold_each_tensors_addresses_weights_and_chunks():
    shapes = [(3, 5), (0,), (fused.MULTI_CHUNK + 1,)]
    fathers = [torch.zeros(s, dtype=torch.bfloat16) for s in shapes]
    mothers = [torch.ones(s, dtype=torch.bfloat16) for s in shapes]
    outs = [torch.empty(s, dtype=torch.float32) for s in shapes]
    weights = [fused._linear_weights(r) for r in (0.3, 1.0, 0.0)]
    buffer, count = fused.linear_tables(fathers, mothers, outs, weights)
    assert count == 1 + 0 + 2
    rows = buffer[:15].reshape(3, 5)
    assert rows[:, 0].tolist() == [t.data_ptr() for t in fathers]
    assert rows[:, 1].tolist() == [t.data_ptr() for t in mothers]
    assert rows[:, 2].tolist() == [t.data_ptr() for t in outs]
    assert rows[:, 3].tolist() == [15, 0, fused.MULTI_CHUNK + 1]
    assert rows[:, 4].tolist() == [2, 1, 0]
    floats = buffer[15:21].view(np.float32).reshape(3, 4)
    assert floats[0, :3].tolist() == [np.float32(0.7), np.float32(0.3), np.float32(np.float32(0.7) + np.float32(0.3))]
    assert floats[1, :3].tolist() == [0.0, 1.0, 1.0] and floats[2, :3].tolist() == [1.0, 0.0, 1.0]
    assert len(buffer) == 21 + 3 and buffer[21:].view(np.int32)[:6].reshape(-1, 2).tolist() == [[0, 0], [2, 0], [2, 1]]


def test_dtype_groups_keep_first_appearance_and_positions_in_order():
    keys = ["b", "a", "b", "c", "a", "b"]
    assert fused.dtype_groups(keys) == [[0, 2, 5], [1, 4], [3]]
    assert fused.dtype_groups([]) == []


def _torch_linear(f, m, weights):
    """`linear.linear` from the (mode, w0, w1, total) the kernels receive."""
    mode, w0, w1, _ = weights
    if mode < 2:
        return (f if mode == 0 else m).to(torch.float32)
    w = torch.tensor([w0, w1], dtype=torch.float32)
    return torch.zeros(f.shape, dtype=torch.float32).addcmul_(f, w[0]).addcmul_(m, w[1]).div_(w.sum())


def _fake_kernels(launches):
    def linear_multi_cuda(fathers, mothers, outs, weights):
        assert len({t.dtype for t in fathers}) == len({t.dtype for t in mothers}) == len({t.dtype for t in outs}) == 1
        launches.append([out.data_ptr() for out in outs])
        for f, m, out, w in zip(fathers, mothers, outs, weights, strict=True):
            out.copy_(_torch_linear(f, m, w))
        return outs

    def linear_cuda(f, m, w0, w1, total, out):
        return out.copy_(_torch_linear(f, m, (2, w0, w1, total)))

    return types.SimpleNamespace(linear_multi_cuda=linear_multi_cuda, linear_cuda=linear_cuda)


@pytest.fixture()
def cpu_fused(monkeypatch):
    """fused_merge_tensors on CPU tensors: the CUDA checks relaxed, the kernels a torch stand-in."""
    launches: list[list[int]] = []
    monkeypatch.setattr(fused, "fusable", lambda recipe, device: recipe.method == "linear")
    monkeypatch.setattr(fused, "_triton_kernels", lambda: _fake_kernels(launches))
    monkeypatch.setattr(fused, "_fits", lambda f, m, target: f.shape == m.shape and f.is_contiguous() and m.is_contiguous())
    return launches


def _setup(fixture_pair, dtype):
    from darwin_core.evolution.child import ResidentTensors
    from darwin_core.genome.spaces import get_space

    father_dir, mother_dir = fixture_pair("qwen3", related=True)
    recipe = get_space("darwin-v6").to_recipe(GENES, father=father_dir, mother=mother_dir, layer_count=4, method="linear",
                                              frozen_layers=(1,), dtype=dtype)
    father, mother = ResidentTensors(father_dir, "cpu"), ResidentTensors(mother_dir, "cpu")
    reference = dict(merge_tensors(recipe, father, mother, device="cpu"))
    names = list(reference)
    # every 7th tensor has no output and one has the wrong shape: those take the per-tensor path
    outputs = {name: torch.full(reference[name].shape, float("nan"), dtype=reference[name].dtype)
               for k, name in enumerate(names) if k % 7 != 3}
    odd = names[5]
    outputs[odd] = torch.empty(reference[odd].numel() + 1, dtype=reference[odd].dtype)
    return recipe, father, mother, reference, outputs


@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_runs_of_in_place_linear_tensors_are_one_launch_each_and_yield_the_reference_in_order(cpu_fused, fixture_pair, dtype):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, dtype)
    names = list(reference)
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    assert [name for name, _ in got] == names
    in_place = []
    for name, tensor in got:
        assert tensor.dtype == reference[name].dtype and torch.equal(tensor.view(torch.uint8), reference[name].view(torch.uint8)), name
        plan = recipe.plan_for(name)
        batchable = plan.source is None and name in outputs and outputs[name].shape == reference[name].shape
        assert (tensor is outputs[name]) if batchable else (tensor is not outputs.get(name)), name
        in_place.append(batchable)
    runs = [k for k, b in enumerate(in_place) if b and (k == 0 or not in_place[k - 1])]
    assert len(runs) >= 3  # the frozen layer and the missing outputs split the tensors into several runs
    assert len(cpu_fused) == len(runs)
    assert sum(len(launch) for launch in cpu_fused) == sum(in_place)
    ptrs = [outputs[name].data_ptr() for name, b in zip(names, in_place) if b]
    assert [p for launch in cpu_fused for p in launch] == ptrs  # launched in the tensors' order


def test_without_the_multi_tensor_path_nothing_is_batched_and_the_bytes_are_the_same(cpu_fused, fixture_pair, monkeypatch):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, "bfloat16")
    monkeypatch.setattr(fused, "MULTI_TENSOR_LINEAR", False)
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    assert cpu_fused == []
    assert [name for name, _ in got] == list(reference)
    assert all(torch.equal(t.view(torch.uint8), reference[name].view(torch.uint8)) for name, t in got)


def test_a_batch_of_parent_copies_is_flushed_once_it_holds_enough_bytes(cpu_fused, fixture_pair, monkeypatch):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, "bfloat16")
    monkeypatch.setattr(fused, "MULTI_COPIED_BYTES", 1)  # sources without a device: their tensors count as copies
    father, mother = StateDictSource(dict(father._tensors)), StateDictSource(dict(mother._tensors))
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    assert [name for name, _ in got] == list(reference)
    assert cpu_fused and all(len(launch) == 1 for launch in cpu_fused)
    assert len(cpu_fused) == sum(1 for name, t in got if t is outputs.get(name))


def test_a_batch_launches_once_it_holds_enough_tensors_so_the_gpu_works_while_the_host_plans(cpu_fused, fixture_pair,
                                                                                            monkeypatch):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, "bfloat16")
    monkeypatch.setattr(fused, "MULTI_FLUSH_TENSORS", 2)
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    assert [name for name, _ in got] == list(reference)
    assert all(torch.equal(t.view(torch.uint8), reference[name].view(torch.uint8)) for name, t in got)
    assert cpu_fused and max(len(launch) for launch in cpu_fused) == 2
    assert sum(len(launch) for launch in cpu_fused) == sum(1 for name, t in got if t is outputs.get(name))
