"""Benchmark: Darwin `merge_to_disk` vs `mergekit-yaml` on the same linear merge of two random Llama-shaped models.

    python bench/merge.py --workdir /tmp/darwin-bench                 # two ~1 GB bf16 parents, CPU, 3 runs each
    python bench/merge.py --workdir /tmp/darwin-bench --size-gb 0.05  # quick check of the script
    python bench/merge.py --workdir /tmp/darwin-bench --device cuda   # GPU math; also reports GB/s and disk read GB/s

The parents are written once into --workdir (reused on later runs with the same size and dtype). Each tool runs
as a subprocess (imports included: Darwin's `merge_to_disk` call, mergekit's `mergekit-yaml` entry point), timed by wall clock, with its peak RSS read from
`os.wait4`. The mergekit config is the Darwin recipe's own `mergekit_yaml(recipe)` export, so both compute the same
child (float32 math, output in the parents' dtype); the script checks that the two children agree.
Numbers depend on the machine and on the page cache (the parents are usually cached after the first run); the
table says which machine and what was measured, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def llama_shape(target_bytes: int, element_size: int) -> dict:
    """A Llama config whose weights take about `target_bytes`."""
    if target_bytes >= 400e6:
        hidden, inter, vocab, heads = 1024, 2816, 32000, 16
    else:
        hidden, inter, vocab, heads = 256, 704, 4096, 8
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((target_bytes / element_size - fixed) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "rope_theta": 10000.0,
    }


def write_parent(folder: Path, config: dict, dtype: torch.dtype, seed: int) -> None:
    """Random weights with Llama's on-disk names, one safetensors file, config.json; written once."""
    from safetensors.torch import save_file

    if (folder / "model.safetensors").is_file():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (h, h),
            p + "self_attn.v_proj.weight": (h, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        })
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    tensors = {name: (torch.randn(shape, generator=g) * 0.02).to(dtype) for name, shape in shapes.items()}
    save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps({**config, "dtype": str(dtype).removeprefix("torch.")}, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    tmp.rename(folder)


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a subprocess, from os.wait4's rusage of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace")[-3000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    proc.stderr.close()
    return wall, usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def disk_read_gbps(paths: list[Path], block: int = 64 << 20) -> float:
    """Sequential read bandwidth of the parents' files after asking the kernel to drop them from the page cache."""
    total = 0
    start = time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold-ish: evict this file's cached pages
            while chunk := os.read(fd, block):
                total += len(chunk)
        finally:
            os.close(fd)
    return total / (time.perf_counter() - start) / 1e9


def in_memory_rate(recipe, father: Path, mother: Path, device: str, repeats: int = 3) -> float:
    """GB/s of the evolution's inner loop: parents resident on `device`, the child written in place."""
    from darwin_core.merge.methods.apply import StateDictSource, merge_tensors
    from darwin_core.io.tensors import TensorReader

    f, m = TensorReader(father), TensorReader(mother)
    resident_f = StateDictSource({n: f.get(n, device) for n in f.names})
    resident_m = StateDictSource({n: m.get(n, device) for n in m.names})
    child = {n: torch.empty_like(resident_f.get(n)) for n in f.names}
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            for name, tensor in merge_tensors(recipe, resident_f, resident_m, f.names, device=device):
                child[name].copy_(tensor)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * f.total_bytes / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="cache for the parents and the outputs")
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of each parent (default 1.0)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (median reported; default 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Darwin's math; mergekit gets --cuda)")
    parser.add_argument("--skip-mergekit", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    from darwin_core.merge.mergekit_export import mergekit_yaml
    from darwin_core.recipe import Recipe
    from darwin_core.io.tensors import TensorReader

    dtype = getattr(torch, args.dtype)
    config = llama_shape(int(args.size_gb * 1e9), torch.empty(0, dtype=dtype).element_size())
    cache = args.workdir / f"parents-{args.size_gb:g}gb-{args.dtype}"
    father, mother = cache / "father", cache / "mother"
    t0 = time.perf_counter()
    write_parent(father, config, dtype, seed=0)
    write_parent(mother, config, dtype, seed=1)
    parent_bytes = TensorReader(father).total_bytes
    print(f"parents: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
          f"{parent_bytes / 1e9:.2f} GB each ({args.dtype}), ready in {time.perf_counter() - t0:.1f} s")

    recipe = Recipe(father={"id": "bench/father", "path": str(father)},
                    mother={"id": "bench/mother", "path": str(mother)}, method="linear", ratios=0.5)
    recipe_path = recipe.save(args.workdir / "recipe.yaml")
    mk_path = args.workdir / "mergekit.yaml"
    mk_path.write_text(mergekit_yaml(recipe))
    out_darwin, out_mk = args.workdir / "child-darwin", args.workdir / "child-mergekit"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    # merge_to_disk itself (what `python -m darwin_core merge` calls), without the CLI's import of every command
    darwin_cmd = [sys.executable, "-c",
                  "import sys; from darwin_core.recipe import Recipe; from darwin_core.merge.disk import merge_to_disk; "
                  "merge_to_disk(Recipe.load(sys.argv[1]), sys.argv[2], device=sys.argv[3], overwrite=True)",
                  str(recipe_path), str(out_darwin), args.device]
    mk_cmd = [sys.executable, "-c", "from mergekit.scripts.run_yaml import main; main()", str(mk_path), str(out_mk),
              "--no-write-model-card", "--quiet"] + (["--cuda"] if args.device.startswith("cuda") else [])

    results: dict[str, list[tuple[float, float]]] = {"darwin": [], "mergekit": []}
    for _ in range(args.runs):  # interleaved, so drift in machine load hits both tools alike
        results["darwin"].append(run_measured(darwin_cmd, env))
        if not args.skip_mergekit:
            shutil.rmtree(out_mk, ignore_errors=True)
            results["mergekit"].append(run_measured(mk_cmd, env))

    if not args.skip_mergekit:
        a, b = TensorReader(out_darwin), TensorReader(out_mk)
        worst = max(((a.get(n).float() - b.get(n).float()).abs().max() / b.get(n).float().abs().max()).item()
                    for n in a.names)
        print(f"children agree: max relative difference {worst:.3g} over {len(a.names)} tensors")

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
          + f"; device={args.device}; {args.runs} runs each (median)")
    print(f"{'tool':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MB':>12} {'parent GB/s':>12}")
    medians = {}
    for tool, rows in results.items():
        if not rows:
            continue
        walls = [w for w, _ in rows]
        rss = max(r for _, r in rows)
        medians[tool] = (statistics.median(walls), rss)
        rate = 2 * parent_bytes / statistics.median(walls) / 1e9
        print(f"{tool:<10} {statistics.median(walls):>9.2f} {min(walls):>7.2f} {max(walls):>7.2f} {rss:>12.0f} {rate:>12.3f}")
    if len(medians) == 2:
        print(f"ratio mergekit/darwin: time {medians['mergekit'][0] / medians['darwin'][0]:.2f}x, "
              f"peak RSS {medians['mergekit'][1] / medians['darwin'][1]:.2f}x")
    print("(parent GB/s = bytes of both parents / median wall time, imports included)")
    if args.device.startswith("cuda"):
        import dataclasses

        for method, extra in (("linear", {}), ("slerp", {}), ("dare_ties", {"densities": (1.0, 0.9)})):
            r = dataclasses.replace(recipe, method=method)
            if extra:
                from darwin_core.recipe import density_table

                r = dataclasses.replace(r, densities=density_table(extra["densities"]))
            print(f"in-memory candidate merge on {args.device} ({method}): "
                  f"{in_memory_rate(r, father, mother, args.device):.1f} GB/s of parent weights")
        print(f"disk sequential read (page cache dropped per file): {disk_read_gbps([father / 'model.safetensors', mother / 'model.safetensors']):.2f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
