"""CUDA correctness: a merge on the GPU is reproducible to the byte and agrees with the CPU merge.

Marked `gpu`: skipped in CI (no CUDA there); run on the device machine with `python -m pytest -m gpu tests/test_gpu.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
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


@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe"])
def test_packed_scoring_with_compiled_layers_agrees_with_eager_packed_scoring(arch, fixture_pair, monkeypatch):
    """In bf16 on CUDA the packed scorer compiles the decoder layers (fused norms and rotary): it must really
    compile, survive a second batch shape (dynamic shapes, no failure), and give the eager layers' log-likelihoods
    up to bf16 rounding (a wrong mask or position would be off by whole nats)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from darwin_core.fitness import packed
    from darwin_core.fitness.loglikelihood import loglikelihoods

    father, _ = fixture_pair(arch)
    tokenizer = AutoTokenizer.from_pretrained(father)
    requests = [(f"item {q}: the word after {q * 7} is", f" {w}") for q in range(40) for w in ("red", "green", "blue", "sky")]
    results = {}
    for compiled in (False, True):
        monkeypatch.setitem(packed.COMPILE_LAYERS, "cuda", compiled)
        model = AutoModelForCausalLM.from_pretrained(father, dtype=torch.bfloat16).to("cuda").eval()
        assert packed.packable(model)
        results[compiled] = [loglikelihoods(model, tokenizer, requests[:n]) for n in (len(requests), 12)]
        assert packed._COMPILED.get(model, False) is compiled
        del model
    for eager, fused in zip(results[False], results[True], strict=True):
        assert fused == pytest.approx(eager, rel=3e-2, abs=3e-2)


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_fused_linear_kernel_writes_the_reference_bytes(dtype):
    from darwin_core.merge.methods import _fused_triton
    from darwin_core.merge.methods.fused import _linear
    from darwin_core.merge.methods.linear import linear
    from darwin_core.merge.methods.registry import TensorParams

    generator = torch.Generator(device="cuda").manual_seed(7)
    f = (torch.randn(3 * (1 << 20) + 5, device="cuda", generator=generator) * 0.02).to(dtype)
    m = (f.float() + torch.randn(f.shape, device="cuda", generator=generator) * 0.002).to(dtype)
    for ratio in (0.0, 0.3, 0.1234567, 0.5, 0.77, 1.0):
        reference = linear(f, m, None, TensorParams(ratio=ratio)).to(dtype)
        fused = _linear(_fused_triton, f, m, ratio, dtype)
        if not _same_bytes(fused, reference):
            other = torch.empty_like(fused)
            w0, w1 = np.float32(1.0 - ratio), np.float32(ratio)
            _fused_triton.linear_cuda(f, m, float(w0), float(w1), float(np.float32(w0 + w1)), other, fma=False)
            differing = int((fused.view(torch.uint8) != reference.view(torch.uint8)).sum())
            pytest.fail(f"ratio {ratio}: {differing} bytes differ; without FMA the kernel matches: {_same_bytes(other, reference)}")


@pytest.mark.parametrize("density", [0.0, 0.35, 0.9, 1.0])
@pytest.mark.parametrize("options", [{}, {"normalize": True}, {"scale": 0.8, "weight_signs": (1.0, -1.0)}, {"rescale": False}])
def test_the_fused_dare_ties_kernels_write_the_reference_bytes_of_the_gpu_and_of_the_cpu(density, options):
    """One tensor through the batched kernels = the reference kernel on the GPU = the reference on a CPU: DARE's
    rescale sums are added in one fixed order, so the child merge_to_disk writes on a CPU is the one scored."""
    from darwin_core.merge.methods import fused
    from darwin_core.merge.methods.registry import TensorParams, get_method

    generator = torch.Generator(device="cuda").manual_seed(11)
    f = (torch.randn(1 << 21, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
    m = (f.float() + torch.randn(f.shape, device="cuda", generator=generator) * 0.002).to(torch.bfloat16)
    m[:1000] = f[:1000]  # zero task-vector entries: the sign election's edge
    kernel = get_method("dare_ties").kernel
    for ratio in (0.2, 0.6543):
        params = TensorParams(ratio=ratio, density_father=0.5, density_mother=density, mask_seeds=(3, 0xDEADBEEF12345), **options)
        reference = kernel(f, m, None, params).to(torch.bfloat16)
        on_cpu = kernel(f.cpu(), m.cpu(), None, params).to(torch.bfloat16)
        got = fused.dare_ties_one(fused._triton_kernels(), f, m, params, torch.bfloat16)
        assert _same_bytes(got, reference), (ratio, int((got.view(torch.uint8) != reference.view(torch.uint8)).sum()))
        assert _same_bytes(on_cpu.cuda(), reference), ratio


@pytest.mark.parametrize("parents, child", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16),
                                            (torch.bfloat16, torch.float32)])
def test_the_multi_tensor_dare_ties_kernels_write_each_tensors_reference_bytes(parents, child):
    """One batch of tensors of every size class (one element, block tails, several chunks, more blocks than one
    level of the sums' tree, empty) and every option (densities 0, between and 1, rescale off, normalize, scale
    and a negative weight, a method-weight blend) writes what the reference writes, tensor by tensor."""
    from darwin_core.merge.methods import fused, fused_tables
    from darwin_core.merge.methods.registry import TensorParams, get_method

    block, chunk = fused_tables.BLOCK, fused_tables.MULTI_CHUNK
    shapes = [(1,), (block - 1,), (block + 1,), (0,), (3, 5), (2 * chunk + 5,), (block * block + 3,), (1031, 96),
              (chunk - 3,), (7,)]
    options = [{}, {"normalize": True}, {"scale": 0.8, "weight_signs": (1.0, -1.0)}, {"rescale": False}, {}, {}, {},
               {"normalize": True}, {}, {}]
    densities = [0.35, 0.9, 1.0, 0.5, 0.0, 0.6, 0.7, 0.3, 1.0, 0.5]
    ratios = [0.2, 0.6543, 0.3, 0.5, 0.9, 0.1, 0.77, 0.45, 0.5, 1.0]
    generator = torch.Generator(device="cuda").manual_seed(5)
    fathers = [(torch.randn(s, device="cuda", generator=generator) * 0.02).to(parents) for s in shapes]
    mothers = [(f.float() + torch.randn(f.shape, device="cuda", generator=generator) * 0.002).to(parents) for f in fathers]
    params = [TensorParams(ratio=r, density_father=0.5, density_mother=d, mask_seeds=(3, 0xC0FFEE + 7919 * k), **o)
              for k, (r, d, o) in enumerate(zip(ratios, densities, options))]
    kernel = get_method("dare_ties").kernel
    for blend in (None, 0.6):
        outs = [torch.full(s, float("nan"), dtype=child, device="cuda") for s in shapes]
        fused._triton_kernels().dare_ties_multi_cuda(fathers, mothers, outs, [fused.dare_row(p, blend) for p in params])
        for f, m, out, p in zip(fathers, mothers, outs, params, strict=True):
            reference = kernel(f, m, None, p)
            if blend is not None:
                reference = torch.lerp(get_method("linear").kernel(f, m, None, p), reference, blend)
            assert _same_bytes(out, reference.to(child)), (tuple(f.shape), p.density_mother, blend)


@pytest.mark.parametrize("method", ["linear", "dare_ties", "ties", "slerp"])
@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe"])
def test_fused_merge_tensors_yields_the_reference_child_byte_for_byte(arch, method, fixture_pair):
    from darwin_core.evolution.child import ResidentTensors
    from darwin_core.merge.methods.apply import merge_tensors
    from darwin_core.merge.methods.fused import fused_merge_tensors

    father_dir, mother_dir = fixture_pair(arch, related=True)
    recipe = get_space("darwin-v6").to_recipe(GENES, father=father_dir, mother=mother_dir, layer_count=4, method=method)
    if method.startswith("dare"):
        recipe = dataclasses.replace(recipe, densities=density_table((0.7, 0.5)))
    for dtype in ("bfloat16", None):
        recipe = dataclasses.replace(recipe, dtype=dtype) if dtype else recipe
        father, mother = ResidentTensors(father_dir, "cuda"), ResidentTensors(mother_dir, "cuda")
        reference = dict(merge_tensors(recipe, father, mother, device="cuda"))
        fused = dict(fused_merge_tensors(recipe, father, mother, device="cuda"))
        assert sorted(fused) == sorted(reference)  # batched tensors come at their batch's launch
        for name, tensor in reference.items():
            assert _same_bytes(fused[name], tensor), name


def _choice_task():
    from darwin_core.fitness.sources import task_from_items
    from darwin_core.fitness.tasks import Item, seeded_rng

    rng = seeded_rng("gpu-resident-child")
    letters = "abcdefghijklmnopqrstuvwxyz "
    return task_from_items("quiz", [
        Item(id=f"c{k}", prompt="".join(rng.choice(letters) for _ in range(rng.randint(140, 200))), answer=str(k % 4),
             choices=tuple("".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) for _ in range(4)))
        for k in range(16)
    ], seed=0)


def _state_bytes(child) -> dict[str, torch.Tensor]:
    return {name: (t.detach().contiguous().view(torch.uint8) if t.is_floating_point() else t).clone()
            for name, t in child.model.state_dict().items()}


@pytest.mark.parametrize("method", ["linear", "dare_ties"])
@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe"])
def test_the_fused_resident_child_holds_and_scores_what_the_unfused_one_does(arch, method, fixture_pair, monkeypatch):
    """ResidentChild.load_recipe on CUDA (fused kernels, unchanged tensors skipped) against the reference path
    (`merge_tensors`, every tensor rewritten from the father), the host-streamed parents and the parents read from
    disk: the same child bytes after every candidate of a sequence, and the same fitness per candidate."""
    from transformers import AutoTokenizer

    from darwin_core.evolution import child as child_module
    from darwin_core.fitness.evaluate import evaluate

    father, mother = fixture_pair(arch, related=True)
    space = get_space("darwin-v6")
    low, high = space.bounds
    rng = np.random.default_rng(5)
    genomes = [GENES, GENES] + [[float(rng.uniform(lo, hi)) for lo, hi in zip(low, high)] for _ in range(3)]
    genomes.insert(3, [*genomes[2][:-1], genomes[2][-1] * 0.5])  # one gene moved: most tensors are unchanged
    recipes = [space.to_recipe(g, father=father, mother=mother, layer_count=4, method=method, frozen_layers=(1,),
                               dtype="bfloat16") for g in genomes]
    task, tokenizer = _choice_task(), AutoTokenizer.from_pretrained(father)
    fused = child_module.ResidentChild(father, mother, device="cuda")
    reference = child_module.ResidentChild(father, mother, device="cuda")
    streamed = child_module.ResidentChild(father, mother, device="cuda", parents="host")
    on_disk = child_module.ResidentChild(father, mother, device="cuda", parents="disk")
    assert fused.parents_on == "accelerator" and streamed.parents_on == "pinned host memory"
    assert on_disk.parents_on == "disk"
    rewritten = []
    for recipe in recipes:
        monkeypatch.setattr(child_module, "FUSED_MERGE", True)
        fused.load_recipe(recipe)
        streamed.load_recipe(recipe)
        on_disk.load_recipe(recipe)
        rewritten.append(fused.last_rewritten)
        monkeypatch.setattr(child_module, "FUSED_MERGE", False)
        reference.load_parent("father")  # forget what it holds: every tensor is merged again
        reference.load_recipe(recipe)
        expected = _state_bytes(reference)
        for other in (fused, streamed, on_disk):
            got = _state_bytes(other)
            assert list(got) == list(expected)
            assert all(torch.equal(got[name], expected[name]) for name in expected), recipe.recipe_hash
        scores = [evaluate(c.model, tokenizer, [task], split="search", batch_size=8) for c in (fused, reference)]
        assert scores[0].composite() == scores[1].composite()
        assert [i.chosen for i in scores[0].tasks["quiz"].items] == [i.chosen for i in scores[1].tasks["quiz"].items]
        assert [i.logliks for i in scores[0].tasks["quiz"].items] == [i.logliks for i in scores[1].tasks["quiz"].items]
    total = len(fused.names)
    assert rewritten[0] == total and rewritten[1] == total  # the same recipe twice: the second is a no-op (label)
    assert rewritten[3] < total and 0 < rewritten[3]


@pytest.mark.parametrize("parents, child", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16),
                                            (torch.bfloat16, torch.float32), (torch.float32, torch.float32)])
def test_the_multi_tensor_linear_kernel_writes_the_per_tensor_bytes(parents, child):
    """One launch over many tensors (varied sizes: one element, non-multiples of BLOCK, several chunks, empty;
    ratios 0 and 1 copies, weighted sums) writes what the per-tensor path writes, tensor by tensor; and
    `fused_merge_tensors` into the child's tensors gives the same bytes with and without it."""
    from darwin_core.merge.methods import _fused_triton, fused
    from darwin_core.merge.methods.linear import linear
    from darwin_core.merge.methods.registry import TensorParams

    block, chunk = _fused_triton.BLOCK, fused.MULTI_CHUNK
    shapes = [(1,), (block - 1,), (block + 1,), (0,), (3, 5), (2 * chunk + 5,), (chunk,), (1031, 96), (7,), (chunk - 3,)]
    ratios = [0.0, 1.0, 0.3, 0.7, 0.1234567, 0.3, 0.7, 0.0, 1.0, 0.5]
    generator = torch.Generator(device="cuda").manual_seed(3)
    fathers = [(torch.randn(s, device="cuda", generator=generator) * 0.02).to(parents) for s in shapes]
    mothers = [(f.float() + torch.randn(f.shape, device="cuda", generator=generator) * 0.002).to(parents) for f in fathers]
    outs = [torch.full(s, float("nan"), dtype=child, device="cuda") for s in shapes]
    _fused_triton.linear_multi_cuda(fathers, mothers, outs, [fused.linear_weights(r) for r in ratios])
    for f, m, out, ratio in zip(fathers, mothers, outs, ratios, strict=True):
        single = fused._linear(_fused_triton, f, m, ratio, child)
        assert _same_bytes(out, single), (tuple(f.shape), ratio)
        assert _same_bytes(out, linear(f, m, None, TensorParams(ratio=ratio)).to(child)), (tuple(f.shape), ratio)


@pytest.mark.parametrize("dtype", ["bfloat16", None])
def test_fused_merge_tensors_in_place_gives_the_same_bytes_with_and_without_the_multi_tensor_kernel(dtype, fixture_pair,
                                                                                                      monkeypatch):
    from darwin_core.evolution.child import ResidentTensors
    from darwin_core.merge.methods import fused
    from darwin_core.merge.methods.apply import merge_tensors

    father_dir, mother_dir = fixture_pair("qwen3", related=True)
    recipe = get_space("darwin-v6").to_recipe(GENES, father=father_dir, mother=mother_dir, layer_count=4, method="linear",
                                              frozen_layers=(1,), dtype=dtype)
    father, mother = ResidentTensors(father_dir, "cuda"), ResidentTensors(mother_dir, "cuda")
    reference = {name: t.clone() for name, t in merge_tensors(recipe, father, mother, device="cuda")}
    results = {}
    for multi in (True, False):
        monkeypatch.setattr(fused, "MULTI_TENSOR_LINEAR", multi)
        outputs = {name: torch.full_like(t, float("nan")) for k, (name, t) in enumerate(reference.items()) if k % 9 != 4}
        results[multi] = [(name, t.clone()) for name, t in fused.fused_merge_tensors(recipe, father, mother, device="cuda",
                                                                                     outputs=outputs)]
    for multi, got in results.items():
        assert sorted(name for name, _ in got) == sorted(reference), multi
        for name, tensor in got:
            assert _same_bytes(tensor, reference[name]), (multi, name)
