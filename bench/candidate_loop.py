"""Seconds per CMA-ES candidate: Darwin's in-memory loop against the merge-to-disk-then-reload loop.

    python bench/candidate_loop.py                                 # demo zoo (or a tiny fixture pair), CPU
    python bench/candidate_loop.py --shape 4b --device cuda        # random-weight Qwen3-4B-shaped pair, one GPU

Both loops score the same candidates (seeded darwin-v6 genomes → recipes) on the same task items:

- in-memory (Darwin): parents resident on the device, `merge_tensors` → `param.copy_` into the one resident
  child, then evaluate. Timed as merge (write into the child) + evaluate.
- disk (the mergekit-evolve way, with Darwin's parts): `merge_to_disk` into a temporary folder,
  `from_pretrained` + tokenizer, evaluate with Darwin's scorer, delete. Timed as merge-to-disk + load +
  evaluate. This isolates what the disk round trip alone costs.
- with --mergekit-evolve, also mergekit-evolve's own per-candidate steps (`OnDiskMergeEvaluator`:
  `mergekit.evo.helpers.merge_model` then `evaluate_model`, re-enacted here because importing
  `mergekit.evo` needs ray): `mergekit_yaml(recipe)` → `mergekit.merge.run_merge` into a
  `mkdtemp(prefix="merged")` folder with mergekit-evolve's MergeOptions → `lm_eval.simple_evaluate(model=
  "huggingface", model_args={pretrained, dtype, use_cache=True}, log_samples=False, verbosity="WARNING",
  task_manager=<built once, as mergekit-evolve does>)` on the same items written as a local lm-eval task →
  `rmtree`. The changes from mergekit-evolve's defaults: lm-eval gets the same --batch-size as Darwin
  (mergekit-evolve leaves it unset, which lm-eval treats as 1), the parents' dtype (it says bfloat16), and for
  half-precision models `softmax_dtype=float32`, as Darwin soft-maxes (else near ties pick differently).
  Choice items become an lm-eval `multiple_choice` task scored by `acc` (equal to Darwin's,
  tests/test_lm_eval_parity.py); the demo skills become `generate_until` tasks (greedy, stop at end of
  sequence, the same token budget) scored by `exact_match` ignoring surrounding whitespace, as Darwin's
  judge does; the composite is the mean over tasks in both.

The in-memory and disk loops must give the same fitness for each candidate (same weights, same evaluator); the
script checks it. The mergekit-evolve loop's acc is compared with Darwin's and the agreement printed (float32
log-likelihoods from different batchings differ by ~1e-6, which could flip a near tie). It prints medians over
candidates and the ratios to the in-memory loop.

With --shape on a GPU it also reports the in-memory merge against the HBM roofline: the least traffic a merge
can cause is reading both parents' tensors and writing the child's (3 × model bytes); dividing by the peak
bandwidth (from the device's memory clock and bus width) gives the fastest possible merge. A device-to-device
copy of a 1 GiB buffer gives the bandwidth actually reachable. Scoring throughput is tokens fed to the model
per second (every position of every forward call the scorer makes, padding included, counted by a hook) and
TFLOP/s = 2 · parameters · positions / time, the forward-pass rule of thumb: it counts the embedding lookup
as if it were a matmul and the LM head at every position (the scorer keeps only the logits it needs), and
leaves out attention's score FLOPs, so it is an estimate, not a hardware counter.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from darwin_core.evolution.pipeline import EvolutionConfig  # noqa: E402
from darwin_core.merge.mergekit_export import mergekit_yaml  # noqa: E402
from darwin_core.testing.shapes import SHAPES, random_qwen3  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ZOO = REPO / "assets" / "zoo"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_random_pair(shape: str, root: Path, device: str, dtype: torch.dtype) -> tuple[Path, Path, int]:
    """A random-weight Qwen3 father of `shape` and a mother = father + 1% noise (a "fine-tune"), on disk."""
    model, tokenizer = random_qwen3(shape, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "father")
    tokenizer.save_pretrained(root / "father")
    generator = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=torch.float32)
            p.add_((noise * 0.01 * p.float().pow(2).mean().sqrt()).to(p.dtype))
    model.save_pretrained(root / "mother")
    tokenizer.save_pretrained(root / "mother")
    del model
    return root / "father", root / "mother", params


def synthetic_choice_task(n_items: int, prompt_chars: int, seed: int = 0):
    """Multiple-choice items scored by log-likelihood (the path ARC/MMLU/CLIcK take), over printable ASCII."""
    from darwin_core.fitness.tasks import Item, Task, seeded_rng

    rng = seeded_rng("bench-candidate-loop", seed)
    letters = "abcdefghijklmnopqrstuvwxyz "
    items = []
    for k in range(n_items):
        context = "".join(rng.choice(letters) for _ in range(prompt_chars))
        choices = tuple("".join(rng.choice(letters) for _ in range(12)) for _ in range(4))
        items.append(Item(id=f"b{k}", prompt=context, answer=str(k % 4), choices=choices))
    return Task(name="bench", kind="choice", search=tuple(items), heldout=())


class TokenCounter:
    """Counts the positions the model actually processes (input_ids of every forward call, padding included:
    it costs the same compute), so throughput is measured on what the scorer really fed, whatever batching or
    context sharing it chose."""

    def __init__(self, model: torch.nn.Module):
        self.positions = 0
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            self.positions += ids.numel()

    def close(self) -> None:
        self._handle.remove()


def genomes(count: int, seed: int) -> list[list[float]]:
    from darwin_core.fitness.tasks import seeded_rng
    from darwin_core.genome.spaces import DarwinV6Space

    space = DarwinV6Space()
    rng = seeded_rng("bench-genomes", seed)
    low, high = space.bounds
    return [[lo + (hi - lo) * rng.random() for lo, hi in zip(low, high)] for _ in range(count)]


def peak_bandwidth(device: torch.device) -> float | None:
    """Spec HBM bandwidth in bytes/s from the memory clock (kHz) and bus width (bits), double data rate."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock, width = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    return 2.0 * clock * 1e3 * width / 8 if clock and width else None


def copy_bandwidth(device: torch.device) -> float | None:
    """Reachable device bandwidth: bytes read + written by a 1 GiB device-to-device copy, per second."""
    if device.type != "cuda":
        return None
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    del src, dst
    return 2 * 2**30 / statistics.median(times)


def run(args: argparse.Namespace) -> dict:
    from darwin_core.evolution.child import ResidentChild
    from darwin_core.fitness.demo_tasks import demo_tasks
    from darwin_core.fitness.evaluate import evaluate
    from darwin_core.genome.spaces import DarwinV6Space
    from darwin_core.merge.disk import merge_to_disk
    from darwin_core.recipe import ParentRef
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = torch.device(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="darwin-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    t0 = time.perf_counter()
    if args.shape:
        if (work / "mother" / "config.json").is_file():  # --workdir of an earlier run of the same shape: reuse it
            father, mother = work / "father", work / "mother"
        else:
            father, mother, _ = write_random_pair(args.shape, work, args.device, dtype)
        source = f"random Qwen3 {args.shape} ({args.dtype})"
        tasks = [synthetic_choice_task(args.items, args.prompt_chars)]
    elif args.father and args.mother:
        father, mother = Path(args.father), Path(args.mother)
        source = f"{father} × {mother}"
        tasks = [synthetic_choice_task(args.items, args.prompt_chars)]
    elif (ZOO / "father" / "config.json").is_file():
        father, mother = ZOO / "father", ZOO / "mother"
        source = "demo zoo (father × mother)"
        tasks = [_limit(t, args.items) for t in demo_tasks()]
    else:
        from darwin_core.testing.fixtures import write_pair

        father, mother = write_pair("qwen3", work)
        source = "tiny qwen3 fixture pair"
        tasks = [synthetic_choice_task(args.items, args.prompt_chars)]
    setup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    child = ResidentChild(father, mother, device=device, parents=args.parents)
    _sync(device)
    resident_load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in child.model.parameters())
    model_bytes = child.father.total_bytes
    space = DarwinV6Space()
    layer_count = child.model.config.num_hidden_layers
    fref, mref = ParentRef.of(Path(father)), ParentRef.of(Path(mother))

    def recipe_of(genome):
        return space.to_recipe(genome, father=fref, mother=mref, layer_count=layer_count, method=args.method, seed=0)

    candidates = genomes(args.candidates + 1, args.seed)  # the first one warms up kernels and caches
    counter = TokenCounter(child.model)

    def in_memory(recipe) -> dict:
        _sync(device)
        t0 = time.perf_counter()
        child.load_recipe(recipe)
        _sync(device)
        t1 = time.perf_counter()
        result = evaluate(child.model, child.tokenizer, tasks, split="search", batch_size=args.batch_size)
        _sync(device)
        t2 = time.perf_counter()
        return {"merge_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0, "fitness": result.composite()}

    def via_disk(recipe, out: Path) -> dict:
        _sync(device)
        t0 = time.perf_counter()
        merge_to_disk(recipe, out, device=str(device), overwrite=True)
        _sync(device)
        t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(out, dtype="auto").to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(out)
        _sync(device)
        t2 = time.perf_counter()
        result = evaluate(model, tokenizer, tasks, split="search", batch_size=args.batch_size)
        _sync(device)
        t3 = time.perf_counter()
        del model
        shutil.rmtree(out)
        return {"merge_s": t1 - t0, "load_s": t2 - t1, "evaluate_s": t3 - t2, "total_s": t3 - t0, "fitness": result.composite()}

    mergekit_evolve = MergekitEvolveLoop(tasks, work, device, args) if args.mergekit_evolve else None

    # Candidate by candidate, one loop then the other, so a change in machine load hits both alike.
    memory, disk, peer = [], [], []
    disk_count = args.candidates if args.disk_candidates is None else args.disk_candidates
    for k, genome in enumerate(candidates):
        recipe = recipe_of(genome)
        row = in_memory(recipe)
        if k == 0:
            n_tokens = counter.positions  # the same items every candidate: count them once
            counter.close()
            continue  # warm-up
        memory.append(row)
        if k <= disk_count:
            other = via_disk(recipe, work / f"candidate-{k}")
            if other["fitness"] != row["fitness"]:
                raise SystemExit(f"candidate {k}: the disk loop scored {other['fitness']} but the in-memory loop {row['fitness']}")
            disk.append(other)
        if mergekit_evolve is not None and k <= disk_count:
            theirs = mergekit_evolve.candidate(recipe)
            theirs["fitness"] = float(theirs["fitness"])
            theirs["agrees"] = bool(abs(theirs["fitness"] - row["fitness"]) < 1e-9)
            peer.append(theirs)

    def med(rows, key):
        return statistics.median(r[key] for r in rows) if rows else None

    report = {
        "source": source,
        "parents_on": child.parents_on,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "parameters": params,
        "model_bytes": model_bytes,
        "tasks": {t.name: len(t.search) for t in tasks},
        "positions_per_candidate": n_tokens,
        "method": args.method,
        "candidates": len(memory),
        "disk_candidates": len(disk),
        "setup_s": setup_s,
        "resident_load_s": resident_load_s,
        "in_memory": {k: med(memory, k) for k in ("merge_s", "evaluate_s", "total_s")},
        "disk": {k: med(disk, k) for k in ("merge_s", "load_s", "evaluate_s", "total_s")} if disk else None,
        "fitness_match": bool(disk),
        "mergekit_evolve": {k: med(peer, k) for k in ("merge_s", "evaluate_s", "total_s")} if peer else None,
        "mergekit_evolve_candidates": len(peer),
        "mergekit_evolve_agreeing": sum(r["agrees"] for r in peer),
    }
    if disk:
        report["speedup_disk_over_memory"] = report["disk"]["total_s"] / report["in_memory"]["total_s"]
    if peer:
        report["speedup_mergekit_evolve_over_memory"] = report["mergekit_evolve"]["total_s"] / report["in_memory"]["total_s"]
    evaluate_s = report["in_memory"]["evaluate_s"]
    report["scoring_tokens_per_s"] = n_tokens / evaluate_s
    report["scoring_tflops"] = 2 * params * n_tokens / evaluate_s / 1e12
    peak, reachable = peak_bandwidth(device), copy_bandwidth(device)
    least_bytes = 3 * model_bytes  # read father + read mother + write child
    merge_s = report["in_memory"]["merge_s"]
    report["merge_roofline"] = {
        "least_bytes": least_bytes,
        "achieved_bytes_per_s": least_bytes / merge_s,
        "peak_bytes_per_s": peak,
        "copy_bytes_per_s": reachable,
        "roofline_s": least_bytes / peak if peak else None,
        "fraction_of_peak": (least_bytes / merge_s) / peak if peak else None,
    }
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return report


class MergekitEvolveLoop:
    """mergekit-evolve's per-candidate work (`merge_model` + `evaluate_model` of `mergekit.evo.helpers`, its
    on-disk evaluator), with the candidate's recipe exported to a mergekit config and each task's items written
    as a local lm-eval task."""

    def __init__(self, tasks, work: Path, device: torch.device, args: argparse.Namespace):
        import lm_eval
        from lm_eval.tasks import TaskManager
        from mergekit.options import MergeOptions

        self.lm_eval = lm_eval
        self.storage = work / "mergekit-evolve"
        folder = self.storage / "tasks"
        folder.mkdir(parents=True, exist_ok=True)
        self.names = [f"darwin_bench_{task.name}" for task in tasks]
        for name, task in zip(self.names, tasks):
            data = folder / f"{name}.jsonl"
            data.write_text("".join(
                json.dumps({"prompt": i.prompt, "choices": list(i.choices or ()), "answer": i.answer}) + "\n" for i in task.search
            ))
            head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                    f"  cache_dir: {folder / 'cache'}\ntest_split: test\ndoc_to_text: \"{{{{prompt}}}}\"\n")
            if task.kind == "choice":
                body = ("output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer | int}}\"\n"
                        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
            else:
                body = ("output_type: generate_until\ndoc_to_target: \"{{answer}}\"\n"
                        f"generation_kwargs:\n  until: []\n  max_gen_toks: {task.max_new_tokens}\n  do_sample: false\n"
                        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
                        "    regexes_to_ignore: ['^\\s+', '\\s+$']\n")
            (folder / f"{name}.yaml").write_text(head + body)
        self.metric = {name: "acc,none" if task.kind == "choice" else "exact_match,none" for name, task in zip(self.names, tasks)}
        self.task_manager = TaskManager(include_path=str(folder), include_defaults=False)
        cuda = device.type == "cuda"
        self.options = MergeOptions(  # mergekit-evolve's (scripts/evolve.py), for its default on-disk mode
            transformers_cache=str(self.storage / "transformers_cache"), lora_merge_cache=str(self.storage / "lora_merge_cache"),
            cuda=cuda, low_cpu_memory=cuda, out_shard_size=1_000_000_000_000, quiet=True, read_to_gpu=cuda,
            copy_tokenizer=True, safe_serialization=True,
        )
        self.device, self.dtype, self.batch_size = device, args.dtype, args.batch_size

    def model_args(self, folder: str) -> dict:
        args = {"pretrained": folder, "dtype": self.dtype, "use_cache": True}
        if self.dtype in ("bfloat16", "float16"):  # Darwin soft-maxes half-precision logits in float32; so must lm-eval
            args["softmax_dtype"] = "float32"
        return args

    def candidate(self, recipe) -> dict:
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge

        _sync(self.device)
        t0 = time.perf_counter()
        config = MergeConfiguration.model_validate(yaml.safe_load(mergekit_yaml(recipe)))
        out = tempfile.mkdtemp(prefix="merged", dir=self.storage)
        run_merge(config, out_path=out, options=self.options)
        _sync(self.device)
        t1 = time.perf_counter()
        try:
            results = self.lm_eval.simple_evaluate(
                model="huggingface",
                model_args=self.model_args(out),
                tasks=self.names, log_samples=False, verbosity="WARNING", task_manager=self.task_manager,
                num_fewshot=None, limit=None, batch_size=self.batch_size, device=str(self.device),
            )
        finally:
            shutil.rmtree(out)
        _sync(self.device)
        t2 = time.perf_counter()
        score = sum(results["results"][name][self.metric[name]] for name in self.names) / len(self.names)  # equal weights
        return {"merge_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0, "fitness": score}


def _limit(task, n: int):
    from dataclasses import replace

    return replace(task, search=task.search[:n])


def _print(report: dict) -> None:
    gb = 1e9
    print(f"model: {report['source']} — {report['parameters']:,} parameters, {report['model_bytes'] / gb:.3f} GB, on {report['device']} (parents in {report['parents_on']})")
    print(f"task: {report['tasks']} items, {report['positions_per_candidate']:,} token positions fed per candidate; method {report['method']}")
    m = report["in_memory"]
    print(f"in-memory loop  ({report['candidates']} candidates): {m['total_s']:.3f} s/candidate  (merge into child {m['merge_s']:.3f} s + evaluate {m['evaluate_s']:.3f} s)")
    if report["disk"]:
        d = report["disk"]
        print(f"disk loop       ({report['disk_candidates']} candidates): {d['total_s']:.3f} s/candidate  (merge to disk {d['merge_s']:.3f} s + load {d['load_s']:.3f} s + evaluate {d['evaluate_s']:.3f} s)")
        print(f"ratio disk / in-memory: {report['speedup_disk_over_memory']:.1f}×  (same fitness for every candidate: {report['fitness_match']})")
    if report["mergekit_evolve"]:
        e = report["mergekit_evolve"]
        print(f"mergekit-evolve ({report['mergekit_evolve_candidates']} candidates): {e['total_s']:.3f} s/candidate  (mergekit run_merge {e['merge_s']:.3f} s + lm-eval simple_evaluate, load included, {e['evaluate_s']:.3f} s)")
        print(f"ratio mergekit-evolve / in-memory: {report['speedup_mergekit_evolve_over_memory']:.1f}×  (lm-eval's score equals Darwin's for {report['mergekit_evolve_agreeing']} of {report['mergekit_evolve_candidates']} candidates)")
    print(f"scoring: {report['scoring_tokens_per_s']:,.0f} token positions/s, {report['scoring_tflops']:.2f} TFLOP/s (2·params·positions/time)")
    r = report["merge_roofline"]
    line = f"merge: {r['least_bytes'] / gb:.2f} GB least traffic in {m['merge_s'] * 1e3:.1f} ms = {r['achieved_bytes_per_s'] / gb:.0f} GB/s"
    if r["peak_bytes_per_s"]:
        line += f"; HBM peak {r['peak_bytes_per_s'] / gb:.0f} GB/s → roofline {r['roofline_s'] * 1e3:.1f} ms ({100 * r['fraction_of_peak']:.0f}% of peak)"
    if r["copy_bytes_per_s"]:
        line += f"; device copy reaches {r['copy_bytes_per_s'] / gb:.0f} GB/s"
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random-weight Qwen3-shaped pair")
    parser.add_argument("--father", default=None)
    parser.add_argument("--mother", default=None)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="for --shape (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--method", default="linear", help="merge method of the candidates' recipes")
    parser.add_argument("--parents", choices=("auto", "device", "host"), default="auto",
                        help="where the parents' tensors live (host = pinned memory, streamed per tensor)")
    parser.add_argument("--mergekit-evolve", action="store_true",
                        help="also time mergekit-evolve's own steps (mergekit run_merge + lm-eval simple_evaluate); needs the test extras")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--disk-candidates", type=int, default=None, help="candidates for the disk loop (default: --candidates)")
    parser.add_argument("--items", type=int, default=16, help="items per task (16 = the default proxy size)")
    parser.add_argument("--prompt-chars", type=int, default=200, help="context length of the synthetic choice items")
    parser.add_argument("--batch-size", type=int, default=EvolutionConfig.batch_size,
                        help=f"rows per forward pass, for Darwin and lm-eval alike (default: a breeding run's, {EvolutionConfig.batch_size})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep the written models here (default: a temp folder, removed)")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    report = run(args)
    _print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
