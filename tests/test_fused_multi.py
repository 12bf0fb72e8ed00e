"""The multi-tensor merges' host side (`fused.py`, `fused_tables.py`): chunk and pointer tables, dtype groups, DARE
rows, and the batching in `fused_merge_tensors` (a run of in-place linear tensors → one launch; DARE-TIES tensors
batched in place or into fresh ones; names in their order), on the CPU with torch stand-ins for the Triton kernels
(the kernels' bytes are checked on a GPU in tests/test_gpu.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from darwin_core.merge.methods import fused, fused_tables
from darwin_core.merge.methods.apply import StateDictSource, merge_tensors
from darwin_core.merge.methods.delta import fixed_order_l1, keep_mask, rescale_l1
from darwin_core.merge.methods.fused_tables import DareFlag

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
    weights = [fused.linear_weights(r) for r in (0.3, 1.0, 0.0)]
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
    def multi(per_tensor):
        def launch(fathers, mothers, outs, rows):
            assert len({t.dtype for t in fathers}) == len({t.dtype for t in mothers}) == len({t.dtype for t in outs}) == 1
            launches.append([out.data_ptr() for out in outs])
            for f, m, out, row in zip(fathers, mothers, outs, rows, strict=True):
                out.copy_(per_tensor(f, m, row))
            return outs
        return launch

    def linear_cuda(f, m, w0, w1, total, out):
        return out.copy_(_torch_linear(f, m, (2, w0, w1, total)))

    return types.SimpleNamespace(linear_multi_cuda=multi(_torch_linear), linear_cuda=linear_cuda,
                                 dare_ties_multi_cuda=multi(_torch_dare_ties))


def _torch_dare_ties(f, m, row):
    """What `_dare_triton`'s kernels compute from a `DareRow`, in torch: the row must carry the whole recipe."""
    f, m = f.to(torch.float32), m.to(torch.float32)
    delta = m - f
    if row.flags & DareFlag.DROP:
        seed = (row.seed_high << 32) | row.seed_low
        masked = delta * keep_mask(delta.shape, row.threshold / (1 << 24), seed, "cpu")
        delta = rescale_l1(delta, masked, fixed_order_l1) if row.flags & DareFlag.RESCALE else masked
    weight = torch.tensor(row.weight, dtype=torch.float32)
    delta = delta * weight
    agree = torch.where(delta >= 0, delta > 0, delta < 0)
    mixed = delta * agree
    if row.flags & DareFlag.NORMALIZE:
        divisor = weight * agree
        divisor[divisor == 0] = 1
        mixed = mixed / divisor
    if row.scale != 1:
        mixed = mixed * row.scale
    result = f + mixed
    if row.flags & DareFlag.BLEND:
        result = torch.lerp(_torch_linear(f, m, row.linear), result, row.blend)
    return result


@pytest.fixture()
def cpu_fused(monkeypatch):
    """fused_merge_tensors on CPU tensors: the CUDA checks relaxed, the kernels a torch stand-in."""
    launches: list[list[int]] = []
    monkeypatch.setattr(fused, "fusable", lambda recipe, device: recipe.method in ("linear", "dare_ties"))
    monkeypatch.setattr(fused, "_triton_kernels", lambda: _fake_kernels(launches))
    monkeypatch.setattr(fused, "_fits", lambda f, m, target: f.shape == m.shape and f.is_contiguous() and m.is_contiguous())
    return launches


def _setup(fixture_pair, dtype, method="linear"):
    from darwin_core.evolution.child import ResidentTensors
    from darwin_core.genome.spaces import get_space

    father_dir, mother_dir = fixture_pair("qwen3", related=True)
    recipe = get_space("darwin-v6").to_recipe(GENES, father=father_dir, mother=mother_dir, layer_count=4, method=method,
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


def _check_pairs(got, reference, outputs) -> list[str]:
    """Every reference pair comes once with the reference's bytes, written in place wherever its output fits;
    returns the names written in place, in the order they came."""
    assert sorted(name for name, _ in got) == sorted(reference)
    in_place = []
    for name, tensor in got:
        assert tensor.dtype == reference[name].dtype and torch.equal(tensor.view(torch.uint8), reference[name].view(torch.uint8)), name
        fits = name in outputs and outputs[name].shape == reference[name].shape
        assert (tensor is outputs.get(name)) == fits, name
        if fits:
            in_place.append(name)
    return in_place


@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_in_place_linear_tensors_and_whole_parent_copies_are_batched_and_every_reference_pair_comes_once(cpu_fused,
                                                                                                        fixture_pair, dtype):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, dtype)
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    in_place = _check_pairs(got, reference, outputs)
    assert any(recipe.plan_for(name).source == "father" for name in in_place)  # the frozen layer's copies too
    assert len(cpu_fused) == -(-len(in_place) // fused.MULTI_FLUSH_TENSORS)  # one launch per full batch
    assert [p for launch in cpu_fused for p in launch] == [outputs[name].data_ptr() for name in in_place]
    names = list(reference)
    assert sorted(in_place, key=names.index) == in_place  # launched in the tensors' order


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
    in_place = _check_pairs(got, reference, outputs)
    assert cpu_fused and max(len(launch) for launch in cpu_fused) == 2
    assert sum(len(launch) for launch in cpu_fused) == len(in_place)


@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_dare_ties_tensors_are_batched_in_place_or_into_fresh_tensors_and_every_reference_pair_comes_once(cpu_fused,
                                                                                                        fixture_pair, dtype):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, dtype, method="dare_ties")
    assert any(recipe.plan_for(name).params.density_mother < 1 for name in reference)  # the masks and rescale are used
    got = list(fused.fused_merge_tensors(recipe, father, mother, device="cpu", outputs=outputs))
    in_place = _check_pairs(got, reference, outputs)
    merged = [name for name in reference if recipe.plan_for(name).source is None]
    copied = [name for name in in_place if recipe.plan_for(name).source is not None]
    assert copied and sum(len(launch) for launch in cpu_fused) == len(merged) + len(copied)  # fresh outputs batched too


class _CountedFetches:
    """A parent's source that counts each tensor's fetches (what a host-streamed parent pays per fetch)."""

    def __init__(self, source):
        self.source, self.fetches = source, {}

    def get(self, name, device=None):
        self.fetches[name] = self.fetches.get(name, 0) + 1
        return self.source.get(name, device)

    def __getattr__(self, attribute):
        return getattr(self.source, attribute)


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
def test_a_tensor_the_kernels_refuse_is_fetched_once_from_each_parent_and_merged_by_the_reference(cpu_fused,
                                                                                                  fixture_pair,
                                                                                                  monkeypatch, method):
    recipe, father, mother, reference, outputs = _setup(fixture_pair, None, method=method)
    merged = [name for name in reference if recipe.plan_for(name).source is None]
    copied = [name for name in reference if recipe.plan_for(name).source is not None and name in outputs]
    refused = {source.get(name).data_ptr() for name in (merged[0], merged[-1], copied[0]) for source in (father, mother)}
    fits = fused._fits
    monkeypatch.setattr(fused, "_fits", lambda f, m, target: not {f.data_ptr(), m.data_ptr()} & refused
                        and fits(f, m, target))
    counted_father, counted_mother = _CountedFetches(father), _CountedFetches(mother)
    got = dict(fused.fused_merge_tensors(recipe, counted_father, counted_mother, device="cpu", outputs=outputs))
    assert sorted(got) == sorted(reference)
    assert all(torch.equal(got[name].view(torch.uint8), reference[name].view(torch.uint8)) for name in reference)
    assert all(got[name] is not outputs[name] for name in (merged[0], merged[-1], copied[0]))  # the reference's
    assert counted_father.fetches and max(counted_father.fetches.values()) == 1
    assert counted_mother.fetches and max(counted_mother.fetches.values()) == 1


def test_a_dare_row_carries_density_seed_weight_and_options_and_the_tables_hold_them():
    from darwin_core.merge.methods.registry import TensorParams

    plain = fused_tables.dare_row(TensorParams(ratio=0.3, density_mother=0.6, mask_seeds=(1, (7 << 32) | 9)))
    assert plain.flags == DareFlag.TASK_VECTOR | DareFlag.DROP | DareFlag.RESCALE and (plain.seed_low, plain.seed_high) == (9, 7)
    assert plain.threshold == int(0.6 * (1 << 24)) and plain.weight == float(np.float32(0.3)) and plain.blend == 1.0
    whole = fused_tables.dare_row(TensorParams(ratio=0.3, density_mother=1.0, normalize=True, scale=0.5,
                                               weight_signs=(1.0, -1.0)), blend=0.25)
    assert whole.flags == DareFlag.TASK_VECTOR | DareFlag.NORMALIZE | DareFlag.BLEND and whole.threshold == 1 << 24
    assert whole.weight == float(np.float32(-0.3)) and whole.scale == 0.5 and whole.blend == 0.25
    assert fused_tables.dare_row(TensorParams(ratio=0.3, density_mother=0.5, rescale=False)).flags == DareFlag.TASK_VECTOR | DareFlag.DROP

    shapes = [(3, 5), (0,), (fused.MULTI_CHUNK + 1,)]
    tensors = [[torch.zeros(s, dtype=torch.bfloat16) for s in shapes] for _ in range(3)]
    buffer, chunks = fused_tables.dare_tables(*tensors, [plain, whole, plain])
    width = fused_tables.INT_ROW + fused_tables.FLOAT_ROW // 2
    ints = buffer[:3 * fused_tables.INT_ROW].reshape(3, fused_tables.INT_ROW)
    assert chunks == 1 + 0 + 2
    assert ints[:, 0].tolist() == [t.data_ptr() for t in tensors[0]] and ints[:, 2].tolist() == [t.data_ptr() for t in tensors[2]]
    assert ints[:, 3].tolist() == [15, 0, fused.MULTI_CHUNK + 1] and ints[:, 4].tolist() == [0, 1, 1]  # first chunks
    assert ints[1, 5:10].tolist() == [whole.seed_low, whole.seed_high, 1 << 24, int(whole.flags), 2]
    floats = buffer[3 * fused_tables.INT_ROW:3 * width].view(np.float32).reshape(3, fused_tables.FLOAT_ROW)
    assert floats[1, :6].tolist() == [np.float32(-0.3), 0.5, *whole.linear[1:], 0.25]
    assert buffer[3 * width:].view(np.int32)[:6].reshape(-1, 2).tolist() == [[0, 0], [2, 0], [2, 1]]
