"""The two inner costs of a breeding on one GPU, each against its ceiling, on the parents bench/breed.py wrote.

    python bench/breed_kernels.py --shape 4b --workdir /tmp/darwin-breed

- merge: a candidate written into a resident child (parents resident on the GPU), by the reference path
  (`merge_tensors`) and the fused one (`fused_merge_tensors`), for linear and DARE-TIES darwin-v6 recipes; every
  tensor of the two is compared byte for byte; also with the parents in pinned host memory (streamed per tensor),
  whose rate projects the host-streamed mode to bigger parents;
- scoring: the task's search items scored by the father with several token budgets per forward and with the
  contexts shared across choices or not; positions/s and TFLOP/s by 2·parameters·positions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.breed_parts import count_packed_tokens, measured_ceilings, write_pair, write_task  # noqa: E402


def _recipes(father: Path, mother: Path, layers: int, method: str, count: int):
    from darwin_core.fitness.tasks import seeded_rng
    from darwin_core.genome.spaces import DarwinV6Space
    from darwin_core.recipe import ParentRef

    space, rng = DarwinV6Space(), seeded_rng("bench-breed-kernels", method)
    low, high = space.bounds
    refs = ParentRef.of(father), ParentRef.of(mother)
    return [space.to_recipe([lo + (hi - lo) * rng.random() for lo, hi in zip(low, high)], father=refs[0], mother=refs[1],
                            layer_count=layers, method=method, seed=0) for _ in range(count)]


FRESH_PLANS = "fused, in place, each recipe planned inside the timing (as in a breeding)"


def _timed(call, device) -> float:
    """Seconds of `call()` from an idle GPU until the GPU has finished what it queued."""
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    call()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _timed_merge(merge, recipe, father, mother, names, targets, device, in_place: bool = False) -> float:
    """One candidate merged into `targets` (the child's tensors); `in_place`: the fused kernels write into them
    (`outputs=`, what ResidentChild.load_recipe does), so only tensors yielded elsewhere are copied."""
    extra = {"outputs": targets} if in_place else {}

    def candidate() -> None:
        for name, tensor in merge(recipe, father, mother, names, device=device, **extra):
            if tensor.data_ptr() != targets[name].data_ptr():
                targets[name].copy_(tensor)

    return _timed(candidate, device)


def merge_bench(father_dir: Path, mother_dir: Path, device: torch.device, ceilings: dict, pin: bool, count: int,
                tune_sums: bool = False, methods: tuple[str, ...] = ("linear", "dare_ties")) -> list[dict]:
    """Reference and fused candidate merges into a resident child's worth of tensors, compared byte for byte."""
    from darwin_core.evolution.child import ResidentTensors
    from darwin_core.merge.methods.apply import merge_tensors
    from darwin_core.merge.methods import fused
    from darwin_core.merge.methods.fused import fused_merge_tensors

    def per_tensor(*args, **kwargs):  # the in-place path with one launch per tensor (before the multi-tensor launch)
        fused.MULTI_TENSOR_LINEAR = False
        try:
            yield from fused_merge_tensors(*args, **kwargs)
        finally:
            fused.MULTI_TENSOR_LINEAR = True

    storage = torch.device("cpu") if pin else device
    father, mother = ResidentTensors(father_dir, storage, pin=pin), ResidentTensors(mother_dir, storage, pin=pin)
    names = father.names
    targets = {n: torch.empty(father.shape(n), dtype=father.dtype(n), device=device) for n in names}
    check = {n: torch.empty_like(t) for n, t in targets.items()}
    layers = json.loads((father_dir / "config.json").read_text())["num_hidden_layers"]
    least = 3 * father.total_bytes
    rows = []
    for method in methods:
        recipes = _recipes(father_dir, mother_dir, layers, method, count + 1)
        paths = [("reference", merge_tensors, False), ("fused", fused_merge_tensors, False),
                 ("fused, in place", fused_merge_tensors, True), (FRESH_PLANS, fused_merge_tensors, True)]
        if method == "linear":
            paths.insert(2, ("fused, in place, a launch per tensor", per_tensor, True))
        timed = []
        for label, merge, in_place in paths:
            # a recipe memoises its tensors' plans: the rows after the first reuse them, a breeding's new recipe
            # does not (FRESH_PLANS: copies with an empty memo, planned inside the timing)
            timing = [dataclasses.replace(r) for r in recipes] if label == FRESH_PLANS else recipes
            times = [_timed_merge(merge, r, father, mother, names, targets, device, in_place) for r in timing]
            timed.append((label, statistics.median(times[1:])))  # the first warms up kernels and Triton's compile cache
            print(f"{method}, {label}: {1e3 * timed[-1][1]:.1f} ms", flush=True)  # before the table, should a limit stop the run
        if not pin:
            split = _split_times(method, recipes, father, mother, names, targets, device, tune_sums)
            timed += split
            print("; ".join(f"{method}, {label}: {1e3 * seconds:.1f} ms" for label, seconds in split), flush=True)
        needed = statistics.median(_least_bytes(r, father, names) for r in recipes[1:])
        print(f"{method}: the recipes' own least bytes {needed / 1e9:.2f} GB (every tensor blended: {least / 1e9:.2f} GB)", flush=True)
        for label, seconds in timed:
            rows.append({"method": method, "path": label, "parents": "pinned host" if pin else "GPU", "ms": 1e3 * seconds,
                         "gb_per_s": least / seconds / 1e9, "fraction_of_copy": least / seconds / ceilings["copy_bytes_per_s"],
                         "fraction_of_4_8tb": least / seconds / 4.8e12, "recipe_least_bytes": needed,
                         "recipe_fraction_of_copy": needed / seconds / ceilings["copy_bytes_per_s"]})
        same = 0
        for recipe in recipes[:2]:
            _timed_merge(merge_tensors, recipe, father, mother, names, check, device)
            _timed_merge(fused_merge_tensors, recipe, father, mother, names, targets, device, True)
            same += all(torch.equal(targets[n].view(torch.uint8) if targets[n].dtype.is_floating_point else targets[n],
                                    check[n].view(torch.uint8) if check[n].dtype.is_floating_point else check[n]) for n in names)
        for row in rows[-len(timed):]:
            row["bytes_identical_recipes"] = f"{same}/2"
    del father, mother, targets, check
    torch.cuda.empty_cache()
    return rows


def _least_bytes(recipe, father, names) -> int:
    """The traffic this recipe's candidate cannot avoid: both parents read and the child written for a merged
    tensor, one parent read and the child written for a tensor taken whole from a parent."""
    total = 0
    for name in names:
        total += (3 if recipe.plan_for(name).source is None else 2) * father.get(name).nbytes
    return total


def _split_times(method: str, recipes, father, mother, names, targets, device, tune_sums: bool = False
                 ) -> list[tuple[str, float]]:
    """Where an in-place candidate's time goes: the kernels alone (every tensor in one batch, rows built before the
    clock starts) and the host alone (`fused_merge_tensors` with launches that do nothing); medians of the recipes
    after the first. Each kernel's own CUDA time is printed from torch.profiler."""
    import types

    from torch.profiler import ProfilerActivity, profile

    from darwin_core.merge.methods import fused

    kernels = fused._triton_kernels()
    launch = kernels.dare_ties_multi_cuda if method == "dare_ties" else kernels.linear_multi_cuda
    batches = []
    for recipe in recipes:
        plans = [(n, recipe.plan_for(n)) for n in names]
        chosen = [(n, p) for n, p in plans if p.source is None and targets[n].dtype == torch.bfloat16]
        rows = [fused.dare_row(p.params) if method == "dare_ties" else fused.linear_weights(p.params.ratio) for _, p in chosen]
        batches.append(([father.get(n) for n, _ in chosen], [mother.get(n) for n, _ in chosen],
                        [targets[n] for n, _ in chosen], rows))

    alone = [_timed(lambda b=b: launch(*b), device) for b in batches]
    if method == "dare_ties" and tune_sums:
        _tune_sums(batches, launch, device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        launch(*batches[-1])
        torch.cuda.synchronize(device)
    print(f"-- {method}: kernels of one batch of {len(batches[-1][0])} tensors")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=6, max_name_column_width=40))
    busy = _profile_candidate(method, recipes[-1], father, mother, names, targets, device)
    variants = _flush_variants(recipes, father, mother, names, targets, device)
    idle = types.SimpleNamespace(linear_multi_cuda=lambda *a: a[2], dare_ties_multi_cuda=lambda *a: a[2],
                                 linear_cuda=kernels.linear_cuda)
    real = fused._triton_kernels
    fused._triton_kernels = lambda: idle
    try:
        host = [_timed_merge(fused.fused_merge_tensors, r, father, mother, names, targets, device, True) for r in recipes]
    finally:
        fused._triton_kernels = real
    return [("kernels alone, one batch", statistics.median(alone[1:])),
            ("host alone, launches idle", statistics.median(host[1:])),
            ("GPU busy in one in-place candidate (profiler)", busy)] + variants


FLUSH_VARIANTS = (24, 96, 192)  # tensors per multi-tensor launch, against fused.MULTI_FLUSH_TENSORS


def _flush_variants(recipes, father, mother, names, targets, device) -> list[tuple[str, float]]:
    """The in-place candidate with other batch sizes (fewer launches, less overlap), then the host's own profile
    (cProfile, by own time) of one candidate at the default size: where the host's time goes when it, not the
    GPU, bounds the candidate."""
    import cProfile
    import pstats

    from darwin_core.merge.methods import fused

    saved, timed = fused.MULTI_FLUSH_TENSORS, []
    try:
        for size in FLUSH_VARIANTS:
            fused.MULTI_FLUSH_TENSORS = size
            times = [_timed_merge(fused.fused_merge_tensors, r, father, mother, names, targets, device, True) for r in recipes]
            timed.append((f"fused, in place, launches of {size} tensors", statistics.median(times[1:])))
    finally:
        fused.MULTI_FLUSH_TENSORS = saved
    profiler = cProfile.Profile()
    profiler.runcall(_timed_merge, fused.fused_merge_tensors, recipes[-1], father, mother, names, targets, device, True)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return timed


def _profile_candidate(method: str, recipe, father, mother, names, targets, device) -> float:
    """One whole in-place fused candidate under torch.profiler: the top rows by host time (a host that waits for
    the GPU shows as cudaEventSynchronize) and by GPU time; returns the seconds the GPU was busy with kernels and
    copies (the candidate's floor with the host fully hidden)."""
    from torch.profiler import ProfilerActivity, profile

    from darwin_core.merge.methods.fused import fused_merge_tensors

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _timed_merge(fused_merge_tensors, recipe, father, mother, names, targets, device, True)
    events = prof.key_averages()
    print(f"-- {method}: one in-place candidate, by host time and by GPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40))
    print(events.table(sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=40))
    gpu_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events
                 if str(getattr(e, "device_type", "")).endswith("CUDA"))
    return gpu_us / 1e6


SUMS_VARIANTS = [  # --tune-sums: (sums block, warps, joined trees)
    (2048, 8, False), (2048, 8, True), (2048, 4, True), (4096, 8, True), (8192, 8, True)]


def _tune_sums(batches, launch, device) -> None:
    """The DARE kernels of each candidate's batch under each variant of the sums kernel: medians, and whether the
    child's bytes are those of the first variant (they must be: every variant adds in `pairwise_sum`'s order)."""
    from darwin_core.merge.methods import _dare_triton

    saved = (_dare_triton.SUMS_BLOCK, _dare_triton.SUMS_WARPS, _dare_triton.SUMS_JOINED)
    first = None
    print("| sums block | warps | joined trees | kernels ms | same child bytes |")
    try:
        for block, warps, joined in SUMS_VARIANTS:
            _dare_triton.SUMS_BLOCK, _dare_triton.SUMS_WARPS, _dare_triton.SUMS_JOINED = block, warps, joined
            times = [_timed(lambda b=b: launch(*b), device) for b in batches]
            outs = [t.view(torch.uint8).clone() for t in batches[-1][2]]
            first = outs if first is None else first
            same = all(torch.equal(a, b) for a, b in zip(outs, first))
            print(f"| {block} | {warps} | {joined} | {1e3 * statistics.median(times[1:]):.2f} | {same} |")
            del outs
    finally:
        _dare_triton.SUMS_BLOCK, _dare_triton.SUMS_WARPS, _dare_triton.SUMS_JOINED = saved


def _profile(model, tokenizer, items, label: str) -> None:
    """The CUDA kernels and CPU time of one scoring of `items` (torch.profiler), the top rows by CUDA time."""
    from torch.profiler import ProfilerActivity, profile

    from darwin_core.fitness.scoring import score_choices

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        score_choices(model, tokenizer, items, batch_size=64)
        torch.cuda.synchronize()
    print(f"-- profile: {label} ({len(items)} items)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def _score_row(label: str, budget: int, items: int, seconds: float, fed: dict, params: int, ceilings: dict,
               first_extra_s: float, same_picks: int | None) -> dict:
    """One scoring row: rates by the positions run (padding included) and by those that held a token."""
    run, real = fed["positions"], fed["real"] or fed["positions"]
    return {"path": label, "tokens_per_forward": budget or "64 rows", "items": items, "seconds": seconds,
            "positions": run, "positions_with_a_token": real, "positions_per_s": run / seconds,
            "tflops": 2 * params * run / seconds / 1e12, "fraction_of_measured_peak": 2 * params * run / seconds / ceilings["bf16_flops"],
            "real_fraction_of_measured_peak": 2 * params * real / seconds / ceilings["bf16_flops"],
            "first_call_extra_s": first_extra_s, "same_picks_as_first": same_picks}


def score_bench(father_dir: Path, task_file: Path, device: torch.device, ceilings: dict, items: int,
                proxy_items: int = 32, profile: bool = False) -> list[dict]:
    """The father scored on the task's first `items` search items, by token budget and context sharing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from darwin_core.fitness import loglikelihood, packed
    from darwin_core.fitness.scoring import score_choices
    from darwin_core.fitness.sources import task_from_items
    from darwin_core.fitness.tasks import Item

    model = AutoModelForCausalLM.from_pretrained(father_dir, dtype=torch.bfloat16).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(father_dir)
    params = sum(p.numel() for p in model.parameters())
    records = [json.loads(line) for line in task_file.read_text().splitlines()]
    chosen = [Item(id=r["id"], prompt=r["prompt"], answer=str(r["answer"]), choices=tuple(r["choices"])) for r in records]
    task = task_from_items("mc", chosen, seed=0)
    search = list(task.search[:items])
    fed = {"positions": 0, "real": 0}
    decoder = getattr(model, "model", model)  # the packed scorer calls the decoder itself
    hook = decoder.register_forward_pre_hook(lambda m, a, k: fed.__setitem__("positions", fed["positions"] + k["input_ids"].numel()), with_kwargs=True)
    uncount = count_packed_tokens(lambda real: fed.__setitem__("real", fed["real"] + real))
    packable_types = packed.PACKABLE_MODEL_TYPES
    rows, reference = [], None
    # (label, token budget, share contexts, pack, compile the layers): packed rows last, the compiled ones after
    # the eager ones (a model is compiled once, on its first compiled call: the warm-up repetition pays it)
    settings = [("flat, 64 rows", 0, None, False, False), ("flat", 32768, None, False, False),
                ("shared contexts", 32768, 2, False, False), ("shared contexts", 131072, 2, False, False),
                ("packed, eager", 32768, 2, True, False), ("packed, eager", 65536, 2, True, False),
                ("packed, compiled", 16384, 2, True, True), ("packed, compiled", 32768, 2, True, True),
                ("packed, compiled", 65536, 2, True, True)]
    for label, budget, share, pack, compiled in settings:
        loglikelihood.TOKENS_PER_FORWARD["cuda"] = budget
        packed.PACKABLE_MODEL_TYPES = packable_types if pack else frozenset()
        packed.COMPILE_LAYERS["cuda"] = compiled
        results = None
        times = []
        for _ in range(3):
            fed["positions"] = fed["real"] = 0
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            results = score_choices(model, tokenizer, search, batch_size=64, share_context_from=share)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        seconds = statistics.median(times[1:])
        picks = [r.chosen for r in results]
        reference = reference or picks
        rows.append(_score_row(label, budget, len(search), seconds, fed, params, ceilings, times[0] - seconds,
                               sum(a == b for a, b in zip(picks, reference))))
    loglikelihood.TOKENS_PER_FORWARD["cuda"] = 32768  # the defaults again: packed and compiled
    packed.PACKABLE_MODEL_TYPES = packable_types
    packed.COMPILE_LAYERS["cuda"] = True
    proxy = search[:proxy_items]
    for _ in range(2):
        score_choices(model, tokenizer, proxy, batch_size=64)
    times = []
    for _ in range(5):
        fed["positions"] = fed["real"] = 0
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        score_choices(model, tokenizer, proxy, batch_size=64)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    rows.append(_score_row("packed, compiled: the proxy", 32768, len(proxy), statistics.median(times), fed, params,
                           ceilings, 0.0, None))
    if profile:
        _profile(model, tokenizer, proxy, "proxy")
        _profile(model, tokenizer, search, "search")
    hook.remove()
    uncount()
    del model
    torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4b")
    parser.add_argument("--workdir", default="/tmp/darwin-breed")
    parser.add_argument("--candidates", type=int, default=4, help="timed merges per method and path")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--no-host", dest="host", action="store_false", help="skip the pinned-host merge rows")
    parser.add_argument("--proxy-items", type=int, default=32)
    parser.add_argument("--no-scoring", dest="scoring", action="store_false", help="merge rows only")
    parser.add_argument("--no-merge", dest="merge", action="store_false", help="scoring rows only")
    parser.add_argument("--profile", action="store_true", help="torch.profiler tables of the proxy and search scoring")
    parser.add_argument("--tune-sums", action="store_true", help="time the DARE sums kernel's variants")
    parser.add_argument("--methods", default="linear,dare_ties", help="merge methods to time, comma-separated")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ceilings = measured_ceilings(device)
    print(f"ceilings: copy {ceilings['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 {ceilings['bf16_flops'] / 1e12:.0f} TFLOP/s", flush=True)
    father, mother, params, size = write_pair(args.shape, work, device)
    task = write_task(work / f"mc-{2 * args.items}-200.jsonl", 2 * args.items, 200)
    report = {"shape": args.shape, "parameters": params, "model_bytes": size, "ceilings": ceilings,
              "merge": merge_bench(father, mother, device, ceilings, False, args.candidates, args.tune_sums,
                                   tuple(args.methods.split(","))) if args.merge else []}
    if args.host:
        report["merge"] += merge_bench(father, mother, device, ceilings, True, max(2, args.candidates // 2))
    from darwin_core.evolution.placement import measure_host_link

    report["host_link_bytes_per_s"] = measure_host_link(device, 1 << 30)
    report["scoring"] = score_bench(father, task, device, ceilings, args.items, args.proxy_items, args.profile) if args.scoring else []
    print(f"ceilings: copy {ceilings['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 {ceilings['bf16_flops'] / 1e12:.0f} TFLOP/s; "
          f"pinned host -> GPU {report['host_link_bytes_per_s'] / 1e9:.1f} GB/s")
    print("| method | path | parents | ms | GB/s | of copy | of 4.8 TB/s | recipe's least GB | of copy, by them | same bytes |")
    for r in report["merge"]:
        print(f"| {r['method']} | {r['path']} | {r['parents']} | {r['ms']:.1f} | {r['gb_per_s']:.0f} | "
              f"{100 * r['fraction_of_copy']:.0f}% | {100 * r['fraction_of_4_8tb']:.0f}% | {r['recipe_least_bytes'] / 1e9:.2f} | "
              f"{100 * r['recipe_fraction_of_copy']:.0f}% | {r.get('bytes_identical_recipes')} |")
    print("| path | tokens/forward | items | s | positions run | with a token | positions/s | TFLOP/s | of peak | "
          "of peak, tokens only | first call +s | picks as row 1 |")
    for r in report["scoring"]:
        print(f"| {r['path']} | {r['tokens_per_forward']} | {r['items']} | {r['seconds']:.3f} | {r['positions']:,} | "
              f"{r['positions_with_a_token']:,} | {r['positions_per_s']:,.0f} | {r['tflops']:.0f} | "
              f"{100 * r['fraction_of_measured_peak']:.0f}% | {100 * r['real_fraction_of_measured_peak']:.0f}% | "
              f"{r['first_call_extra_s']:.1f} | {r['same_picks_as_first']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
