"""CUDA correctness: a merge on the GPU is reproducible to the byte and agrees with the CPU merge.

Marked `gpu`: skipped in CI (no CUDA there); run on the device machine with `python -m pytest -m gpu tests/test_gpu.py`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from darwin_core.genome.spaces import get_space
from darwin_core.merge.disk import merge_to_disk
from darwin_core.recipe import density_table
from darwin_core.io.tensors import TensorReader, sha256_of_files

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GENES = [0.4989, 0.1766, 0.9021, 0.6122, 0.9951, 0.9617, 0.5740, 0.5811, 0.5736, 0.4697, 0.4930, 0.8418,
         0.4907, 0.3623]


@pytest.mark.parametrize("method", ["linear", "slerp", "ties", "dare_ties", "dare_linear"])
@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe", "mixtral"])
def test_cuda_merge_is_byte_identical_twice_and_matches_cpu(arch, method, fixture_pair, tmp_path):
    father, mother = fixture_pair(arch, related=True)
    recipe = get_space("darwin-v6").to_recipe(GENES, father=father, mother=mother, layer_count=4, method=method)
    if method.startswith("dare"):
        recipe = dataclasses.replace(recipe, densities=density_table((0.7, 0.5)))
    first = merge_to_disk(recipe, tmp_path / "cuda-1", device="cuda")
    second = merge_to_disk(recipe, tmp_path / "cuda-2", device="cuda")
    assert sha256_of_files(first) == sha256_of_files(second)
    cpu = merge_to_disk(recipe, tmp_path / "cpu", device="cpu")
    on_gpu, on_cpu = TensorReader(first), TensorReader(cpu)
    assert on_gpu.names == on_cpu.names
    for name in on_cpu.names:
        a, b = on_gpu.get(name).double(), on_cpu.get(name).double()
        scale = b.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale).item() <= 1e-5, name


@pytest.mark.parametrize("seed", [0, 1, 0x7FFFFFFF, 0xDEADBEEF_CAFEF00D, 2**64 - 1])
def test_the_fused_cuda_keep_mask_equals_the_torch_mask_bit_for_bit(seed):
    from darwin_core.merge.methods.delta import keep_mask

    for shape, density in (((1,), 0.5), ((3, 5), 0.3), ((4096, 1031), 0.9), ((3 * (1 << 22) + 17,), 0.1)):
        on_cpu = keep_mask(shape, density, seed, "cpu")
        on_gpu = keep_mask(shape, density, seed, "cuda")
        assert on_gpu.dtype == torch.bool and on_gpu.shape == on_cpu.shape
        assert torch.equal(on_gpu.cpu(), on_cpu), (shape, density, seed)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3_text"])
def test_evaluate_on_cuda_gives_the_cpu_answers(arch, fixture_pair):
    """The evaluator's CUDA path (flat rows, batched greedy decoding with per-task budgets) and its CPU path
    (contexts shared through batched prefills) score the same items alike: same picks, same generations, and
    float64 log-likelihoods within a relative 1e-7 (measured on an H100: up to 2.3e-9 apart, from the devices'
    different summation orders; a wrong mask or position is off by ~1e-1)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from darwin_core.fitness.evaluate import evaluate
    from darwin_core.fitness.sources import task_from_items
    from darwin_core.fitness.tasks import Item, seeded_rng

    father, _ = fixture_pair(arch)
    rng = seeded_rng("gpu-evaluate")
    letters = "abcdefghijklmnopqrstuvwxyz "
    choice = task_from_items("quiz", [
        Item(id=f"c{k}", prompt="".join(rng.choice(letters) for _ in range(rng.randint(130, 200))), answer=str(k % 3),
             choices=tuple("".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(3)))
        for k in range(12)
    ], seed=0)
    short = task_from_items("short", [Item(id=f"s{k}", prompt=f"say {w}:", answer=w) for k, w in enumerate(["ab", "cd", "ef", "gh"])],
                            seed=0, max_new_tokens=2)
    long = task_from_items("long", [Item(id=f"l{k}", prompt=f"q: {w}\na:", answer=w) for k, w in enumerate(["abcdef", "xyz", "12345"])],
                           seed=0, max_new_tokens=9)
    tokenizer = AutoTokenizer.from_pretrained(father)
    results = {}
    for device in ("cpu", "cuda"):
        model = AutoModelForCausalLM.from_pretrained(father, dtype=torch.float64).to(device)
        results[device] = evaluate(model, tokenizer, [choice, short, long], split="search", batch_size=5)
        del model
    cpu, cuda = results["cpu"], results["cuda"]
    for name in ("quiz", "short", "long"):
        for a, b in zip(cpu.tasks[name].items, cuda.tasks[name].items, strict=True):
            assert (a.id, a.chosen, a.output, a.correct) == (b.id, b.chosen, b.output, b.correct)
            assert a.logliks == pytest.approx(b.logliks, rel=1e-7)
