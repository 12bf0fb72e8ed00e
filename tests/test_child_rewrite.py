"""The resident child rewrites only the tensors a candidate changed, and holds exactly what a full rewrite holds;
the parents' placement (resident, host-streamed or read from disk) follows free memory and says so in one
sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darwin_core.evolution.child import ResidentChild
from darwin_core.evolution.placement import ParentsOn, available_host_bytes, choose, measure_disk_read, plan_for_pair
from darwin_core.io.tensors import TensorReader
from darwin_core.genome.spaces import get_space


def _state(child) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in child.model.state_dict().items()}


def _random_genomes(space, seed: int, count: int) -> list[list[float]]:
    low, high = space.bounds
    rng = np.random.default_rng(seed)
    return [[float(rng.uniform(lo, hi)) for lo, hi in zip(low, high)] for _ in range(count)]


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
def test_a_candidate_rewrites_only_changed_tensors_and_equals_a_full_rewrite(method, fixture_pair):
    father, mother = fixture_pair("qwen3", related=True)
    space = get_space("darwin-v6")
    first, last = _random_genomes(space, 3, 2)
    genomes = [first, [*first[:-1], (first[-1] + space.bounds[0][-1]) / 2], last]
    recipes = [space.to_recipe(g, father=father, mother=mother, layer_count=4, method=method, frozen_layers=(0, 2))
               for g in genomes]
    child, fresh = ResidentChild(father, mother, device="cpu"), ResidentChild(father, mother, device="cpu")
    frozen = [n for n in child.names if ".layers.0." in n or ".layers.2." in n]
    assert frozen
    for k, recipe in enumerate(recipes):
        child.load_recipe(recipe)
        assert child.last_rewritten == len(child.names) if k == 0 else child.last_rewritten <= len(child.names) - len(frozen)
        fresh.load_parent("father")
        fresh.load_recipe(recipe)
        assert fresh.last_rewritten == len(fresh.names)
        got, expected = _state(child), _state(fresh)
        assert all(torch.equal(got[name], expected[name]) for name in expected), k
    child.load_parent("mother")  # a parent written over the child: the next candidate rewrites everything
    child.load_recipe(recipes[0])
    assert child.last_rewritten == len(child.names)


def test_the_parents_stay_on_the_gpu_when_they_fit_and_stream_from_pinned_memory_when_not():
    gb = 10**9
    cuda = torch.device("cuda")  # no CUDA call is made: free memory and the host link are given
    host = {"host_bytes": 200 * gb}
    resident = choose(16 * gb, 8 * gb, cuda, free_bytes=100 * gb, link_bytes_per_s=25e9, **host)
    assert resident.parents_on == ParentsOn.ACCELERATOR and not resident.pinned
    assert resident.sentence().startswith("Parents resident on the GPU (16.0 GB, 100.0 GB free beside the 8.0 GB child)")
    streamed = choose(108 * gb, 54 * gb, cuda, free_bytes=80 * gb, link_bytes_per_s=25e9, **host)
    assert streamed.parents_on == ParentsOn.PINNED_HOST and streamed.pinned
    assert streamed.merge_seconds == pytest.approx(108 / 25)
    assert "streamed from pinned host memory (108.0 GB do not fit in 75% of the 80.0 GB free" in streamed.sentence()
    assert "about 4.3 s" in streamed.sentence()
    forced = choose(16 * gb, 8 * gb, cuda, free_bytes=100 * gb, link_bytes_per_s=25e9, force=ParentsOn.PINNED_HOST, **host)
    assert forced.parents_on == ParentsOn.PINNED_HOST
    on_cpu = choose(16 * gb, 8 * gb, torch.device("cpu"), **host)
    assert on_cpu.parents_on == ParentsOn.HOST and "host memory" in on_cpu.sentence()


def test_parents_the_host_cannot_hold_are_read_from_disk_and_the_sentence_says_how_long_a_merge_takes():
    gb = 10**9
    cuda = torch.device("cuda")  # no CUDA call is made: free memory, host memory and both rates are given
    moe = choose(140 * gb, 70 * gb, cuda, free_bytes=60 * gb, host_bytes=125 * gb, link_bytes_per_s=50e9,
                 disk_bytes_per_s=2e9)
    assert moe.parents_on == ParentsOn.DISK and not moe.pinned
    assert moe.merge_seconds == pytest.approx(140 / 2 + 140 / 50)
    assert moe.sentence() == ("Parents read from disk for every candidate (140.0 GB do not fit in 90% of the 125.0 GB "
                              "of host memory available nor beside the child on the GPU) at 2.0 GB/s; a candidate's "
                              "merge takes at least about 72.8 s (its bytes from disk).")
    dense = choose(108 * gb, 54 * gb, cuda, free_bytes=60 * gb, host_bytes=125 * gb, link_bytes_per_s=50e9)
    assert dense.parents_on == ParentsOn.PINNED_HOST  # 108 GB fit in 90% of 125 GB: the host link, not the disk
    on_cpu = choose(30 * gb, 15 * gb, torch.device("cpu"), host_bytes=20 * gb, disk_bytes_per_s=1e9)
    assert on_cpu.parents_on == ParentsOn.DISK and on_cpu.merge_seconds == pytest.approx(30)
    assert "nor beside" not in on_cpu.sentence() and "20.0 GB of host memory available" in on_cpu.sentence()


def test_the_disk_read_rate_and_host_memory_are_measured_and_the_preflight_names_the_mode(fixture_pair):
    father, mother = fixture_pair("qwen3", related=True)
    rate = measure_disk_read(father)
    assert rate is not None and rate > 0
    assert 0 < available_host_bytes()
    placement = plan_for_pair([father, mother], "cpu")  # two tiny parents: host memory, not the disk
    assert placement.parents_on == ParentsOn.HOST and placement.host_bytes is not None


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
def test_a_child_whose_parents_stay_on_disk_holds_what_the_resident_child_holds(method, fixture_pair):
    father, mother = fixture_pair("qwen3", related=True)
    space = get_space("darwin-v6")
    recipes = [space.to_recipe(genome, father=father, mother=mother, layer_count=4, method=method)
               for genome in _random_genomes(space, 5, 3)]
    on_disk, resident = ResidentChild(father, mother, parents="disk"), ResidentChild(father, mother)
    assert on_disk.parents_on == ParentsOn.DISK and isinstance(on_disk.father, TensorReader)
    assert resident.parents_on == ParentsOn.HOST
    for k, recipe in enumerate(recipes):
        on_disk.load_recipe(recipe)
        resident.load_recipe(recipe)
        got, expected = _state(on_disk), _state(resident)
        assert all(torch.equal(got[name], expected[name]) for name in expected), k
    with pytest.raises(Exception, match="auto, device, host or disk"):
        ResidentChild(father, mother, parents="ssd")
