"""The resident child rewrites only the tensors a candidate changed, and holds exactly what a full rewrite holds;
the parents' placement (resident or host-streamed) follows free memory and says so in one sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darwin_core.evolution.child import ResidentChild
from darwin_core.evolution.placement import ParentsOn, choose
from darwin_core.genome.spaces import get_space


def _state(child) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in child.model.state_dict().items()}


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
def test_a_candidate_rewrites_only_changed_tensors_and_equals_a_full_rewrite(method, fixture_pair):
    father, mother = fixture_pair("qwen3", related=True)
    space = get_space("darwin-v6")
    low, high = space.bounds
    rng = np.random.default_rng(3)
    first = [float(rng.uniform(lo, hi)) for lo, hi in zip(low, high)]
    genomes = [first, [*first[:-1], (first[-1] + low[-1]) / 2], [float(rng.uniform(lo, hi)) for lo, hi in zip(low, high)]]
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
    resident = choose(16 * gb, 8 * gb, cuda, free_bytes=100 * gb, link_bytes_per_s=25e9)
    assert resident.parents_on == ParentsOn.ACCELERATOR and not resident.pinned
    assert resident.sentence().startswith("Parents resident on the GPU (16.0 GB, 100.0 GB free beside the 8.0 GB child)")
    streamed = choose(108 * gb, 54 * gb, cuda, free_bytes=80 * gb, link_bytes_per_s=25e9)
    assert streamed.parents_on == ParentsOn.PINNED_HOST and streamed.pinned
    assert streamed.merge_seconds == pytest.approx(108 / 25)
    assert "streamed from pinned host memory (108.0 GB do not fit in 75% of the 80.0 GB free" in streamed.sentence()
    assert "about 4.3 s" in streamed.sentence()
    forced = choose(16 * gb, 8 * gb, cuda, free_bytes=100 * gb, link_bytes_per_s=25e9, force=ParentsOn.PINNED_HOST)
    assert forced.parents_on == ParentsOn.PINNED_HOST
    on_cpu = choose(16 * gb, 8 * gb, torch.device("cpu"))
    assert on_cpu.parents_on == ParentsOn.HOST and "host memory" in on_cpu.sentence()
