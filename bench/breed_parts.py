"""The parts of bench/breed.py that are not the run itself: shapes, parents and task on disk, ceilings, phases."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

BF16_DATASHEET_FLOPS = 990e12  # H100/H200 SXM dense bf16 (H200.md)
HBM_DATASHEET_BYTES = 4.8e12  # H200 HBM3e (H200.md)

# Dense shapes beyond darwin_core/testing/shapes.py (hidden, layers, intermediate, heads, kv heads, head_dim,
# vocab, tied): Qwen3-8B's. MoE shapes (the seeds' 35B-A3B family is a Qwen3-MoE of this kind): Qwen3-30B-A3B's
# dims, with fewer layers so that two parents and a child fit the GPU machine's disk (64 GB); the per-layer cost
# is what projects to the full depth.
EXTRA_DENSE = {"8b": (4096, 36, 12288, 32, 8, 128, 151936, False)}
MOE = {  # hidden, layers, expert intermediate, experts, experts per token, heads, kv heads, head_dim, vocab
    "moe-a3b-8l": (2048, 8, 768, 128, 8, 32, 4, 128, 151936),
    "moe-a3b": (2048, 48, 768, 128, 8, 32, 4, 128, 151936),
}


def random_model(shape: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer) with transformers' seeded random init, built on `device`."""
    from darwin_core.parents.chartok import build_char_tokenizer
    from darwin_core.testing.shapes import ALPHABET, SHAPES, random_qwen3

    if shape in SHAPES:
        return random_qwen3(shape, device, dtype)
    torch.manual_seed(0)
    common = dict(max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if shape in EXTRA_DENSE:
        from transformers import AutoModelForCausalLM, Qwen3Config

        hidden, layers, inter, heads, kv, head_dim, vocab, tied = EXTRA_DENSE[shape]
        config = Qwen3Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                             num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                             tie_word_embeddings=tied, **common)
    elif shape in MOE:
        from transformers import AutoModelForCausalLM, Qwen3MoeConfig

        hidden, layers, inter, experts, active, heads, kv, head_dim, vocab = MOE[shape]
        config = Qwen3MoeConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                moe_intermediate_size=inter, intermediate_size=inter * active, num_experts=experts,
                                num_experts_per_tok=active, num_attention_heads=heads, num_key_value_heads=kv,
                                head_dim=head_dim, tie_word_embeddings=False, **common)
    else:
        raise SystemExit(f"unknown shape {shape!r}")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, build_char_tokenizer(ALPHABET)


def write_pair(shape: str, root: Path, device: torch.device) -> tuple[Path, Path, int, int]:
    """(father, mother, parameters, bytes): mother = father + 1% noise; written once per shape and reused."""
    folder = root / f"parents-{shape}"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    father, mother, done = folder / "father", folder / "mother", folder / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return father, mother, info["parameters"], info["bytes"]
    t0 = time.perf_counter()
    model, tokenizer = random_model(shape, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(father)
    tokenizer.save_pretrained(father)
    generator = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=torch.float32)
            p.add_((noise * 0.01 * p.float().pow(2).mean().sqrt()).to(p.dtype))
    model.save_pretrained(mother)
    tokenizer.save_pretrained(mother)
    del model
    done.write_text(json.dumps({"parameters": params, "bytes": size}))
    print(f"parents of shape {shape} written in {time.perf_counter() - t0:.1f} s ({params / 1e9:.2f} B parameters)", flush=True)
    return father, mother, params, size


def write_task(path: Path, n_items: int, prompt_chars: int) -> Path:
    """An ARC-like multiple-choice task file (user schema): random lowercase contexts, 4 choices of 12 characters."""
    from darwin_core.fitness.tasks import seeded_rng

    rng = seeded_rng("bench-breed", 0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    with open(path, "w") as handle:
        for k in range(n_items):
            prompt = "".join(rng.choice(letters) for _ in range(prompt_chars))
            choices = ["".join(rng.choice(letters) for _ in range(12)) for _ in range(4)]
            handle.write(json.dumps({"id": f"q{k}", "prompt": prompt, "choices": choices, "answer": k % 4}) + "\n")
    return path


def measured_ceilings(device: torch.device) -> dict:
    """The two ceilings measured here: a 1 GiB device copy (bytes read + written per second) and an 8192³ bf16
    product (FLOP per second), each the median of 10 after warm-up; the datasheet figures on a CPU."""
    if device.type != "cuda":
        return {"copy_bytes_per_s": HBM_DATASHEET_BYTES, "bf16_flops": BF16_DATASHEET_FLOPS, "measured": False}
    copy_s = _copy_seconds(device)
    matmul_s = _matmul_seconds(device)
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": 2 * 2**30 / copy_s, "bf16_flops": 2 * 8192**3 / matmul_s, "measured": True,
            "device": torch.cuda.get_device_name(device)}


def _copy_seconds(device: torch.device) -> float:
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return _median_time(lambda: dst.copy_(src))


def _matmul_seconds(device: torch.device) -> float:
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    return _median_time(lambda: a @ b)


def _median_time(step) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def count_packed_tokens(add: Callable[[int], None]) -> Callable[[], None]:
    """Make the packed scorer report its positions that held a token to `add(count)`; returns the undo."""
    from darwin_core.fitness import packed

    score_packed = packed.score_packed

    def counted(*args, **kwargs):
        real, run = score_packed(*args, **kwargs)
        add(real)
        return real, run

    packed.score_packed = counted
    return lambda: setattr(packed, "score_packed", score_packed)


class FedPositions:
    """Token positions actually run through the child's decoder in each measured evaluation (a forward pre-hook
    on the resident child's decoder, installed by wrapping `ModelProblem.measure` in this process; the packed
    scorer calls the decoder directly), the positions of those that held a token (the packed rows' padding
    left out), beside the evaluation's own timing, and how many tensors its merge rewrote."""

    def __init__(self):
        self.rows: list[dict] = []
        self.count = 0
        self.real = 0
        self.tensors = 0
        self.placement: str | None = None

    def install(self) -> "FedPositions":
        from darwin_core.evolution import problem as problem_module

        original, meter = problem_module.ModelProblem.measure, self
        count_packed_tokens(lambda real: setattr(meter, "real", meter.real + real))

        def measure(problem, candidate, tasks, split="search"):
            model = problem.child._child_model
            if not getattr(model, "_bench_fed_hook", False):
                getattr(model, "model", model).register_forward_pre_hook(meter._hook, with_kwargs=True)
                model._bench_fed_hook = True
                meter.tensors = len(problem.child.names)
                meter.placement = problem.child.placement.sentence()
                print(f"placement: {meter.placement}", flush=True)
            before, before_real = meter.count, meter.real
            result = original(problem, candidate, tasks, split)
            timing = problem.last_timing
            meter.rows.append({"baseline": isinstance(candidate, str), "merge_s": timing.merge_seconds,
                               "scoring_s": timing.scoring_seconds, "tokens": timing.tokens_scored,
                               "fed": meter.count - before,
                               "real": meter.real - before_real, "rewritten": getattr(problem.child, "last_rewritten", None)})
            return result

        problem_module.ModelProblem.measure = measure
        return self

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.count += int(ids.numel())

    def summary(self, params: int, ceilings: dict) -> dict:
        out: dict = {"tensors": self.tensors, "placement": self.placement}
        for label, rows in (("candidates", [r for r in self.rows if not r["baseline"]]),
                            ("baselines", [r for r in self.rows if r["baseline"]])):
            scoring = sum(r["scoring_s"] for r in rows)
            fed = sum(r["fed"] for r in rows)
            if not rows or not scoring:
                continue
            flops = 2 * params * fed / scoring
            real = sum(r.get("real", 0) for r in rows)
            rewritten = [r["rewritten"] for r in rows if r["rewritten"] is not None]
            out[label] = {"evaluations": len(rows), "fed": fed, "fed_per_evaluation": fed / len(rows),
                          "fed_per_s": fed / scoring, "tflops": flops / 1e12,
                          "fraction_of_measured_peak": flops / ceilings["bf16_flops"],
                          "fraction_of_datasheet": flops / BF16_DATASHEET_FLOPS,
                          "real": real, "real_tflops": 2 * params * real / scoring / 1e12,
                          "real_fraction_of_measured_peak": 2 * params * real / scoring / ceilings["bf16_flops"],
                          "merge_ms_median": 1e3 * sorted(r["merge_s"] for r in rows)[len(rows) // 2],
                          "scoring_ms_median": 1e3 * sorted(r["scoring_s"] for r in rows)[len(rows) // 2],
                          "rewritten_mean": sum(rewritten) / len(rewritten) if rewritten else float("nan")}
        return out


class TritonCompiles:
    """Every Triton kernel compiled in this process while installed (`triton.knobs.runtime`'s JIT hooks, called
    before and after each compile that the in-memory kernel cache misses, from Triton's disk cache or not): when,
    which kernel, how long. A breeding that compiles in its search pays for it inside the candidates' merges."""

    def __init__(self):
        self.compiles: list[dict] = []
        self._started: list[float] = []  # one per compile under way (Triton hands each hook a fresh fn object)

    def install(self) -> "TritonCompiles":
        try:
            from triton import knobs
        except ImportError:  # no Triton (a CPU machine): nothing compiles
            return self
        knobs.runtime.jit_cache_hook = self._before
        knobs.runtime.jit_post_compile_hook = self._after
        return self

    def _before(self, **hook) -> bool:
        self._started.append(time.perf_counter())
        return False  # a true answer would skip the compile

    def _after(self, **hook) -> bool:
        fn = hook.get("fn")
        started = self._started.pop() if self._started else None
        self.compiles.append({"kernel": getattr(fn, "name", str(fn)), "at": time.time(),
                              "seconds": time.perf_counter() - started if started is not None else float("nan")})
        return False

    def summary(self, start: float) -> dict:
        """Compiles after `start` (a time.time()): their count and seconds, by kernel."""
        after = [c for c in self.compiles if c["at"] >= start]
        by_kernel: dict[str, list[float]] = {}
        for c in after:
            by_kernel.setdefault(c["kernel"], []).append(c["seconds"])
        return {"count": len(after), "seconds": sum(c["seconds"] for c in after),
                "by_kernel": {k: {"count": len(v), "seconds": sum(v)} for k, v in sorted(by_kernel.items())},
                "first_s_after_start": [round(c["at"] - start, 1) for c in after[:12]]}


def merge_spread(seconds: list[float]) -> dict:
    """The candidate merges' distribution: median, 90th percentile, max, and the merges above 5× the median
    with the seconds they took beyond it (where a mean far above the median comes from)."""
    ordered = sorted(seconds)
    if not ordered:
        return {}
    median = ordered[len(ordered) // 2]
    slow = [s for s in ordered if s > 5 * median]
    return {"median_ms": 1e3 * median, "p90_ms": 1e3 * ordered[int(0.9 * (len(ordered) - 1))],
            "max_ms": 1e3 * ordered[-1], "above_5x_median": len(slow),
            "above_5x_median_excess_s": sum(s - median for s in slow)}


# The seeds' big parents, for the host-streamed projection: (label, parameters, active parameters per token).
PROJECTED = (("27B dense", 27e9, 27e9), ("35B-A3B MoE", 35e9, 3e9))


def projection(summary: dict, link_bytes_per_s: float, disk_bytes_per_s: float | None, host_bytes: int,
               gpu_memory_bytes: int) -> list[dict]:
    """Seconds per candidate evaluation for the seeds' big parents, from this run's measurements, placed by the
    breeding's own rule (`placement.choose`, given this machine's GPU memory less the child, its available host
    memory and the measured host link and disk rates): merge = both parents' bytes (bf16) over the link, or from
    disk and then over the link (every tensor changes: the upper bound); scoring = the same positions per
    evaluation at this run's measured FLOP rate (2·active parameters per position: a MoE's experts run at lower
    efficiency than this dense rate, so its row is a lower bound)."""
    from darwin_core.evolution.placement import ParentsOn, choose

    computed = (summary.get("computed") or {}).get("candidates")
    rows = []
    for label, params, active in PROJECTED:
        model_bytes = int(2 * params)
        placement = choose(2 * model_bytes, model_bytes, torch.device("cuda"),
                           free_bytes=max(gpu_memory_bytes - model_bytes, 0), host_bytes=host_bytes,
                           link_bytes_per_s=link_bytes_per_s, disk_bytes_per_s=disk_bytes_per_s)
        row = {"model": label, "model_gb": model_bytes / 1e9, "parents_gb": 2 * model_bytes / 1e9,
               "parents_on": str(placement.parents_on), "parents_fit_host": placement.parents_on != ParentsOn.DISK,
               "child_fits_gpu": model_bytes * 1.15 <= gpu_memory_bytes, "merge_s": placement.merge_seconds}
        if computed:
            row["scoring_s"] = 2 * active * computed["fed_per_evaluation"] / (computed["tflops"] * 1e12)
            row["total_s"] = None if row["merge_s"] is None else row["merge_s"] + row["scoring_s"]
        rows.append(row)
    return rows


def phases_of(events: list[dict], log: list[tuple[float, str]], start: float) -> dict[str, float]:
    """Seconds per phase from events.jsonl's `t` and the timed log lines (the MRI starts with its log line)."""
    def first(name: str) -> float | None:
        return next((e["t"] for e in events if e.get("event") == name), None)

    def last(name: str) -> float | None:
        return next((e["t"] for e in reversed(events) if e.get("event") == name), None)

    loading, baselines = first("loading"), first("baselines_started")
    mri = next((t for t, line in log if "MRI" in line), None)
    first_candidate = next((i for i, e in enumerate(events) if e.get("event") == "evaluated" and str(e.get("name", "")).startswith("g")), None)
    baselines_end = None
    if first_candidate is not None:
        baselines_end = next((e["t"] for e in reversed(events[:first_candidate]) if e.get("event") == "evaluated"), baselines)
    marks = [("setup", start), ("load", loading), ("MRI", mri), ("baselines", baselines), ("search", baselines_end),
             ("choose best", last("generation")), ("merge to disk", first("best_recipe")),
             ("held-out report", first("child_written")), ("end", last("report_written"))]
    marks = [(name, t) for name, t in marks if t is not None]
    ends = [t for _, t in marks[1:]] + [max(e["t"] for e in events)]
    phases = {name: round(end - t, 2) for (name, t), end in zip(marks, ends)}
    phases["total"] = round(ends[-1] - start, 2)
    return phases
