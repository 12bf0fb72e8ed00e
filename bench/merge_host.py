"""Where a candidate merge's time goes on one GPU, host and GPU, against the copy roofline, as a breeding runs it.

    python bench/merge_host.py --shape 4b --candidates 8

Random parents of the shape's tensor names and sizes are made on the GPU (nothing is written to disk), with a
resident child's worth of tensors; darwin-v6 recipes (linear and DARE-TIES), each fresh (its plans made inside the
timing), go through `ResidentChild.load_recipe` itself (change check, slices, fused merge in place) in two
columns: the batches of `fused_merge_tensors` (parents treated as streamed: no layout, no slices) and the resident
layout with its slices (what a resident child runs). Rows, medians per candidate after the first: the wall with
every tensor rewritten (the roofline's bytes), its table building, uploads and Triton launch calls, the wall as in
a breeding (unchanged tensors kept), the host alone (launches idle), the change check's planning alone, and the
GPU's busy time in one candidate (torch.profiler). First, each kernel's element rate over all tensors at once
(`--no-rates` skips it); `--timeline` adds one fresh candidate's launches through the layout, when the host issued
each and when the GPU ran it (CUDA events), to show whether the GPU waited for the host.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.breed_parts import measured_ceilings  # noqa: E402


class _Resident:
    """GPU tensors behind the TensorSource interface, resident (a fetch is the tensor itself)."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: torch.device):
        self.tensors, self.device, self.names = tensors, device, list(tensors)

    def get(self, name, device=None):
        return self.tensors[name]

    def shape(self, name):
        return tuple(self.tensors[name].shape)

    def dtype(self, name):
        return self.tensors[name].dtype


def _parents(shape: str, device: torch.device):
    from transformers import AutoModelForCausalLM, Qwen3Config

    from darwin_core.testing.shapes import SHAPES

    hidden, layers, inter, heads, kv, head_dim, vocab, tied = SHAPES[shape]
    config = Qwen3Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                         tie_word_embeddings=tied)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items() if not (tied and n == "lm_head.weight")}
    made = []
    for seed in range(3):
        generator = torch.Generator(device=device).manual_seed(seed)
        made.append({n: torch.randn(s, generator=generator, device=device, dtype=torch.bfloat16) * 0.02
                     for n, s in shapes.items()})
    return _Resident(made[0], device), _Resident(made[1], device), made[2], layers


class _Clock:
    """Host seconds spent inside wrapped functions, by label (the wrapped calls are not nested)."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.saved: list[tuple[object, str, object]] = []

    def wrap(self, owner, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        spent = self.spent

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t0

        self.saved.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self.saved):
            setattr(owner, attribute, original)


class _WritePlan:
    """The child's tensors by their checkpoint names (what `child.WritePlan` is for a plain Qwen3)."""

    def __init__(self, targets: dict[str, torch.Tensor]):
        self.targets, self.direct, self.groups, self.group_of = targets, {n: n for n in targets}, {}, {}

    def write(self, items) -> int:
        written = 0
        for name, tensor in items:
            if tensor.data_ptr() != self.targets[name].data_ptr():
                self.targets[name].copy_(tensor)
            written += 1
        return written


def _child(father, mother, targets, device, layouts: bool):
    """A `ResidentChild` over the in-memory parents and child tensors (its constructor loads folders): its own
    `load_recipe` runs, change check, slices and layout included; `layouts` False: the batches, unsliced."""
    from darwin_core.evolution.child import ResidentChild
    from darwin_core.evolution.placement import ParentsOn
    from darwin_core.merge.pairing import Pairing
    from darwin_core.parents.compatibility import PairingMode

    child = object.__new__(ResidentChild)
    child.device, child.father, child.mother, child.base, child.names = device, father, mother, None, father.names
    child.plan = _WritePlan(targets)
    child.placement = types.SimpleNamespace(parents_on=ParentsOn.ACCELERATOR if layouts else ParentsOn.PINNED_HOST)
    pairing = Pairing(PairingMode.NAMES, None)
    child.pairing_for = lambda *_: pairing  # tensors by their own names, one vocabulary
    child._vocabulary, child._held, child._layouts, child._indexes = None, [], {}, {}
    child.current, child.model, child.tokenizer = None, None, None
    child._child_model, child._child_tokenizer = None, None
    return child


def _candidate(recipe, child, device, rewrite_all: bool = True) -> float:
    """Seconds of one `load_recipe` from an idle GPU to the GPU's end; `rewrite_all`: the child first forgets
    what it holds, so every tensor is merged and written (the roofline's bytes), else as in a breeding (the
    tensors whose plan did not change since the last candidate are kept)."""
    if rewrite_all:
        child._held, child.current = [], None
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    child.load_recipe(recipe)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _recipes(method: str, layers: int, count: int):
    from darwin_core.fitness.tasks import seeded_rng
    from darwin_core.genome.spaces import DarwinV6Space
    from darwin_core.recipe import ParentRef

    space, rng = DarwinV6Space(), seeded_rng("bench-merge-host", method)
    low, high = space.bounds
    refs = ParentRef("bench/father"), ParentRef("bench/mother")
    return [space.to_recipe([lo + (hi - lo) * rng.random() for lo, hi in zip(low, high)], father=refs[0],
                            mother=refs[1], layer_count=layers, method=method, seed=0) for _ in range(count)]


def _planning(recipes, names) -> float:
    """Seconds of a fresh recipe's plans and change check (`recipe.columns`) for every tensor, against the last's."""
    from darwin_core.recipe.columns import TensorIndex, plan_columns

    index, times, previous = TensorIndex.of(names), [], None
    for recipe in recipes:
        fresh = dataclasses.replace(recipe)
        t0 = time.perf_counter()
        columns = plan_columns(fresh, index)
        columns.changed(previous)
        times.append(time.perf_counter() - t0)
        previous = columns
    return statistics.median(times[1:])


def _segments(recipes, child, device) -> dict[str, float]:
    """Medians per candidate (fresh recipes, every tensor rewritten) of the wall, its host segments and the
    GPU's busy time; and the wall of a breeding's candidates (unchanged tensors kept)."""
    import triton

    from darwin_core.merge.methods import _dare_triton, _fused_triton, fused, fused_layout

    clock = _Clock()
    clock.wrap(_dare_triton, "dare_tables", "tables")
    clock.wrap(_fused_triton, "linear_tables", "tables")
    clock.wrap(fused_layout, "candidate_table", "tables")
    clock.wrap(_fused_triton, "_upload", "upload")
    clock.wrap(_dare_triton, "_upload", "upload")
    clock.wrap(triton.runtime.jit.JITFunction, "run", "Triton launch calls")
    rows: dict[str, list[float]] = defaultdict(list)
    try:
        for recipe in recipes:
            clock.spent.clear()
            rows["wall, every tensor rewritten"].append(_candidate(dataclasses.replace(recipe), child, device))
            for label in ("tables", "upload", "Triton launch calls"):
                rows[label].append(clock.spent.get(label, 0.0))
    finally:
        clock.restore()
    rows["wall, as in a breeding (unchanged tensors kept)"] = [
        _candidate(dataclasses.replace(r), child, device, rewrite_all=False) for r in recipes]
    real = fused._triton_kernels
    kernels = real()
    idle = type(kernels)(kernels.linear_cuda, lambda *a: a[2], lambda *a: a[2], lambda *a: None)
    fused._triton_kernels = lambda: idle
    try:
        rows["host alone, launches idle"] = [_candidate(dataclasses.replace(r), child, device) for r in recipes]
    finally:
        fused._triton_kernels = real
    rows["planning and change check"] = [_planning(recipes, child.names)] * 2
    rows["GPU busy (profiler, one candidate)"] = [_busy(recipes[-1], child, device)] * 2
    return {label: statistics.median(values[1:]) for label, values in rows.items()}


def _busy(recipe, child, device) -> float:
    """Seconds the GPU spent in kernels and copies during one candidate (torch.profiler): its floor."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _candidate(dataclasses.replace(recipe), child, device)
    print(_elements(recipe, child.father))
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=6, max_name_column_width=40))
    return sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()
               if str(getattr(e, "device_type", "")).endswith("CUDA")) / 1e6


def _timeline(recipe, child, device) -> None:
    """One fresh candidate's launches through the layout: when the host issued each (ms after the start) and when
    the GPU ran it (CUDA events around it, on the same origin), so a gap shows whether the GPU waited for the host."""
    from darwin_core.merge.methods import _dare_triton

    real, marks = _dare_triton.layout_launch, []

    def marked(table, group, kinds, chunk_range):
        issued = time.perf_counter()
        events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        events[0].record()
        real(table, group, kinds, chunk_range)
        events[1].record()
        marks.append((issued, time.perf_counter(), *events, chunk_range))

    _dare_triton.layout_launch = marked
    try:
        child._held, child.current = [], None
        torch.cuda.synchronize(device)
        origin = torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        origin.record()
        child.load_recipe(dataclasses.replace(recipe))
        returned = time.perf_counter()
        torch.cuda.synchronize(device)
        ended = time.perf_counter()
    finally:
        _dare_triton.layout_launch = real
    print("| launch | chunks | host issued, ms | host done | GPU start | GPU end |")
    for k, (issued, done, start, end, chunks) in enumerate(marks):
        print(f"| {k} | {chunks[1] - chunks[0]} | {1e3 * (issued - t0):.2f} | {1e3 * (done - t0):.2f} | "
              f"{origin.elapsed_time(start):.2f} | {origin.elapsed_time(end):.2f} |")
    print(f"load_recipe returned at {1e3 * (returned - t0):.2f} ms, the GPU done at {1e3 * (ended - t0):.2f} ms")


def _elements(recipe, father) -> str:
    """Millions of elements per kind of work in `recipe`: copied whole, merged (DARE: dropped and rescaled or not)."""
    kinds: dict[str, int] = defaultdict(int)
    for name in father.names:
        plan = recipe.plan_for(name)
        params = plan.params
        if plan.source is not None:
            kind = "copied"
        elif recipe.method == "dare_ties" and params.density_mother < 1:
            kind = "DARE, dropped" + (", blended" if recipe.method_weight < 1 else "")
        else:
            kind = "merged" + (", blended" if recipe.method_weight < 1 else "")
        kinds[kind] += father.get(name).numel()
    return "elements (millions): " + ", ".join(f"{kind} {count / 1e6:.0f}" for kind, count in kinds.items())


def _kernel_rates(father, mother, targets) -> None:
    """Every tensor through one batch of each kernel (DARE-TIES dropped, rescaled, blended or not; linear), each
    kernel's GPU time from the profiler and the element rate: whether a kernel is bound by memory or by its math."""
    from torch.profiler import ProfilerActivity, profile

    from darwin_core.merge.methods import fused
    from darwin_core.merge.methods.registry import TensorParams

    kernels = fused._triton_kernels()
    names = father.names
    batch = [father.get(n) for n in names], [mother.get(n) for n in names], [targets[n] for n in names]
    elements = sum(t.numel() for t in batch[0])
    params = TensorParams(ratio=0.4, density_mother=0.9, mask_seeds=(1, 2))
    cases = [("DARE, blended", kernels.dare_ties_multi_cuda, [fused.dare_row(params, 0.5)] * len(names)),
             ("DARE", kernels.dare_ties_multi_cuda, [fused.dare_row(params)] * len(names)),
             ("linear", kernels.linear_multi_cuda, [fused.linear_weights(0.4)] * len(names)),
             ("copy", kernels.linear_multi_cuda, [fused.linear_weights(0.0)] * len(names))]
    print(f"kernels over all {len(names)} tensors, {elements / 1e9:.2f} G elements")
    for label, launch, rows in cases:
        for _ in range(2):
            launch(*batch, rows)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            launch(*batch, rows)
            torch.cuda.synchronize()
        for event in prof.key_averages():
            seconds = getattr(event, "self_device_time_total", 0.0) / 1e6
            if seconds > 1e-4:
                print(f"| {label} | {event.key[:40]} | {1e3 * seconds:.2f} ms | {elements / seconds / 1e9:.0f} G elements/s |")


def _least_bytes(recipe, father) -> int:
    total = 0
    for name in father.names:
        tensor = father.get(name)
        source = recipe.plan_for(name).source
        total += tensor.numel() * tensor.element_size() * (2 if source is not None else 3)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4b")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--methods", default="linear,dare_ties")
    parser.add_argument("--no-rates", action="store_true", help="skip the kernels' element rates over all tensors")
    parser.add_argument("--timeline", action="store_true", help="one candidate's launches, host and GPU times")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    ceilings = measured_ceilings(device)
    father, mother, targets, layers = _parents(args.shape, device)
    print(f"copy {ceilings['copy_bytes_per_s'] / 1e9:.0f} GB/s; {len(father.names)} tensors")
    if not args.no_rates:
        _kernel_rates(father, mother, targets)
    for method in args.methods.split(","):
        recipes = _recipes(method, layers, args.candidates)
        least = statistics.median(_least_bytes(r, father) for r in recipes)
        full = sum(t.numel() * t.element_size() for t in targets.values()) * 3
        children = [_child(father, mother, targets, device, layouts) for layouts in (False, True)]
        for recipe in recipes[:2]:  # compile and warm up
            for child in children:
                _candidate(dataclasses.replace(recipe), child, device)
        columns = [_segments(recipes, child, device) for child in children]
        if args.timeline:
            _timeline(recipes[-1], children[1], device)
        print(f"| {method} | batches ms | resident layout, sliced ms | layout: of the copy by {full / 1e9:.2f} GB "
              f"| by the recipe's {least / 1e9:.2f} GB |")
        for label in columns[0]:
            seconds = columns[1][label]
            shares = (f"{100 * full / ceilings['copy_bytes_per_s'] / seconds:.0f}% | "
                      f"{100 * least / ceilings['copy_bytes_per_s'] / seconds:.0f}%"
                      if label in ("wall, every tensor rewritten", "GPU busy (profiler, one candidate)") else " | ")
            print(f"| {label} | {1e3 * columns[0][label]:.2f} | {1e3 * seconds:.2f} | {shares} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
