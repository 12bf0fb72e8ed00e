"""A whole breeding as a user runs it (`python -m darwin_core evolve`), timed phase by phase against the roofline.

    python bench/breed.py --shape 4b --candidates 500 --items 400      # one GPU: 200 search + 200 held-out items
    python bench/breed.py --shape tiny --device cpu --candidates 8     # the script itself, in seconds
    python bench/breed.py --shape 4b --vram-cap-gb 28 --candidates 240 --no-heldout  # parents "too big": host-streamed
    python bench/breed.py --shape 4b --vram-cap-gb 28 --host-cap-gb 10 --candidates 40 --no-heldout  # and the host: disk

Two random-weight parents of the named shape (a father and a mother = father + 1% noise) are written in the
parents' dtype to --workdir, with a multiple-choice task file (ARC-like: ~200-character contexts, 4 choices of
12 characters). The config is what the issue's run used (population, 32 proxy items, top 2 re-scored on the
whole search split, MRI on, held-out report); the CLI's own entry point (`darwin_core.cli.main.main(["evolve",
...])`) runs it in this process, so the VRAM cap applies to it. Phases come from events.jsonl timestamps and the
log lines: load, MRI, baselines, search, merge to disk, report. Per candidate: merge and scoring seconds and the
tokens scored, from the "evaluated" events (when the run records them), with the merges' spread (median, p90,
max, the merges above 5× the median) and every Triton kernel compiled during the run (`TritonCompiles`): a
compile inside the search is paid inside a candidate's merge.

Roofline: scoring at 2·parameters·positions FLOP against the bf16 matrix rate (measured here on an 8192³
product, and the 990 TFLOP/s datasheet figure); a candidate merge moves at least 3 × the model's bytes (read
both parents, write the child) against the device-copy bandwidth measured here and the datasheet HBM figure.

--vram-cap-gb X caps this process's CUDA memory (`torch.cuda.set_per_process_memory_fraction`) and makes
`torch.cuda.mem_get_info` report the capped free memory, so the child's automatic choice sees a GPU of X GB and
streams the parents from pinned host memory when they do not fit beside the child. --host-cap-gb Y makes the
placement see Y GB of available host memory (nothing is limited), so parents that do not fit in its share stay
on disk and are read per candidate, as on a host too small for them (`evolution.placement`).
Candidates merge through the fused kernels on a GPU (`ResidentChild.load_recipe`); --reference-merge makes them
the reference `merge_tensors` (same bytes, the comparison run). Scoring is reported twice: by the positions the
model actually ran (a forward pre-hook on the child: shared contexts run once per item) and by lm-eval's
positions (every choice's context + continuation, the events' `tokens_scored`), which count shared work again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from darwin_core.evolution.placement import available_host_bytes, measure_disk_read  # noqa: E402
from bench.breed_parts import (  # noqa: E402
    BF16_DATASHEET_FLOPS, HBM_DATASHEET_BYTES, FedPositions, TritonCompiles, measured_ceilings, merge_spread, phases_of,
    projection, write_pair, write_task,
)

def config_yaml(args: argparse.Namespace, father: Path, mother: Path, task: Path) -> str:
    """The breeding's config: the issue's settings, generations enough for --candidates."""
    generations = max(1, math.ceil(args.candidates / args.population))
    lines = [
        f"father: {father}", f"mother: {mother}",
        "tasks:", f"  - file: {task}", "    name: mc",
        f"population: {args.population}", f"generations: {generations}", f"proxy_items: {args.proxy_items}",
        f"topk_full: {args.topk_full}", f"device: {args.device}", f"batch_size: {args.batch_size}",
        f"heldout: {'true' if args.heldout else 'false'}", f"seed: {args.seed}",
    ]
    if args.method:
        lines.append(f"method: {args.method}")
    if args.mri:
        lines.append("mri: auto")
    return "\n".join(lines) + "\n"


class TimedLog(io.TextIOBase):
    """stdout with a timestamp per line, kept for the phase split (the CLI prints the pipeline's log lines)."""

    def __init__(self, echo):
        self.echo, self.lines, self._partial = echo, [], ""

    def write(self, text: str) -> int:
        self.echo.write(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self.lines.append((time.time(), line))
        return len(text)

    def flush(self) -> None:
        self.echo.flush()


def cap_vram(gigabytes: float, device: torch.device) -> None:
    """This process may use `gigabytes` of the GPU, and `mem_get_info` says so (free = cap − reserved)."""
    total = torch.cuda.get_device_properties(device).total_memory
    cap = int(gigabytes * 1e9)
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device.index or 0)
    real = torch.cuda.mem_get_info

    def capped(dev=None):
        free, _ = real(dev)
        return min(free, max(cap - torch.cuda.memory_reserved(dev), 0)), cap

    torch.cuda.mem_get_info = capped


def cap_host(gigabytes: float) -> None:
    """The placement sees at most `gigabytes` of available host memory (nothing is allocated or limited): parents
    that do not fit in its share are read from disk per candidate, as on a host too small for them."""
    from darwin_core.evolution import placement

    real = placement.available_host_bytes
    placement.available_host_bytes = lambda: min(real(), int(gigabytes * 1e9))


def use_reference_merge() -> None:
    """Every candidate merge by the reference `merge_tensors` (the unfused path), for the comparison run."""
    from darwin_core.evolution import child

    child.FUSED_MERGE = False


def run_breeding(args: argparse.Namespace, father: Path, mother: Path, task: Path, run_id: str) -> dict:
    """The CLI breeding in this process; returns the run folder, exit code, wall time and timed log lines."""
    from darwin_core.cli.main import main as cli_main

    work = Path(args.workdir)
    config = work / f"{run_id}.yaml"
    config.write_text(config_yaml(args, father, mother, task))
    runs = work / "runs"
    shutil.rmtree(runs / run_id, ignore_errors=True)
    log = TimedLog(sys.stdout)
    start = time.time()
    with contextlib.redirect_stdout(log):
        code = cli_main(["evolve", str(config), "--runs-dir", str(runs), "--run-id", run_id])
    return {"folder": runs / run_id, "code": code, "start": start, "wall_s": time.time() - start, "log": log.lines}


def summarize(args: argparse.Namespace, run: dict, params: int, model_bytes: int, ceilings: dict,
              meter: FedPositions, compiles: TritonCompiles) -> dict:
    """Phases, per-candidate costs and the roofline fractions of one finished run."""
    folder: Path = run["folder"]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if line.strip()]
    phases = phases_of(events, run["log"], run["start"])
    evaluated = [e for e in events if e.get("event") == "evaluated"]
    candidates = [e for e in evaluated if str(e.get("name", "")).startswith("g")]
    proxy = [e for e in candidates if e.get("phase") != "full"]
    timed = [e for e in candidates if "scoring_seconds" in e]
    out = {
        "shape": args.shape, "parameters": params, "model_bytes": model_bytes, "exit_code": run["code"],
        "wall_s": run["wall_s"], "phases_s": phases, "evaluations": len(evaluated),
        "candidates": len({e["name"] for e in candidates}), "candidate_evaluations": len(candidates),
        "proxy_evaluations": len(proxy), "ceilings": ceilings, "vram_cap_gb": args.vram_cap_gb,
        "fused_merge": not args.reference_merge,
    }
    best = [e for e in events if e.get("event") == "best_recipe"]
    out["best_recipe_hash"] = best[-1]["recipe_hash"] if best else None
    out["best"] = best[-1]["name"] if best else None
    status = folder / "status.json"
    if status.is_file():
        out["state"] = json.loads(status.read_text()).get("state")
    if timed:
        merge = sum(e["merge_seconds"] for e in timed)
        scoring = sum(e["scoring_seconds"] for e in timed)
        tokens = sum(e.get("tokens_scored") or 0 for e in timed)
        out["per_candidate_s"] = {"merge": merge / len(timed), "scoring": scoring / len(timed),
                                  "total": (merge + scoring) / len(timed)}
        out["merge_spread"] = merge_spread([e["merge_seconds"] for e in timed])
        out["merge_gb_per_s"] = 3 * model_bytes / (merge / len(timed)) / 1e9 if merge else None
        out["merge_fraction_of_copy"] = (3 * model_bytes / (merge / len(timed))) / ceilings["copy_bytes_per_s"] if merge else None
        out["merge_fraction_of_datasheet"] = (3 * model_bytes / (merge / len(timed))) / HBM_DATASHEET_BYTES if merge else None
        if tokens and scoring:
            flops = 2 * params * tokens / scoring
            out["scoring"] = {"tokens": tokens, "positions_per_s": tokens / scoring, "tflops": flops / 1e12,
                              "fraction_of_measured_peak": flops / ceilings["bf16_flops"],
                              "fraction_of_datasheet": flops / BF16_DATASHEET_FLOPS}
    out["computed"] = meter.summary(params, ceilings)
    out["triton_compiles"] = compiles.summary(run["start"])
    return out


def print_summary(s: dict) -> None:
    print(f"\n== {s['shape']}: {s['parameters'] / 1e9:.2f} B parameters, {s['model_bytes'] / 1e9:.2f} GB; "
          f"exit {s['exit_code']} ({s.get('state')}); {s['wall_s']:.1f} s end to end; "
          f"vram cap {s['vram_cap_gb']}; fused merge {s['fused_merge']}")
    print("| phase | seconds |\n| --- | ---: |")
    for name, seconds in s["phases_s"].items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"candidates {s['candidates']} ({s['candidate_evaluations']} evaluations, {s['proxy_evaluations']} proxy); "
          f"best {s['best']} {s['best_recipe_hash']}")
    if "per_candidate_s" in s:
        p = s["per_candidate_s"]
        print(f"per candidate evaluation: merge {p['merge'] * 1e3:.1f} ms + scoring {p['scoring'] * 1e3:.1f} ms = {p['total'] * 1e3:.1f} ms")
        print(f"merge: {s['merge_gb_per_s']:.0f} GB/s = {100 * s['merge_fraction_of_copy']:.0f}% of the measured copy "
              f"bandwidth ({s['ceilings']['copy_bytes_per_s'] / 1e9:.0f} GB/s), {100 * s['merge_fraction_of_datasheet']:.0f}% of 4.8 TB/s")
        m = s["merge_spread"]
        print(f"merge spread: median {m['median_ms']:.1f} ms, p90 {m['p90_ms']:.1f}, max {m['max_ms']:.1f}; "
              f"{m['above_5x_median']} merges above 5x the median took {m['above_5x_median_excess_s']:.1f} s beyond it")
    t = s["triton_compiles"]
    print(f"Triton compiles during the run: {t['count']} ({t['seconds']:.1f} s), by kernel {t['by_kernel']}; "
          f"the first at {t['first_s_after_start']} s after the start")
    computed = s.get("computed") or {}
    if computed.get("candidates"):
        c = computed["candidates"]
        print(f"scoring, positions the model ran: {c['fed_per_s']:,.0f}/s = {c['tflops']:.0f} TFLOP/s = "
              f"{100 * c['fraction_of_measured_peak']:.0f}% of the measured bf16 rate, {100 * c['fraction_of_datasheet']:.0f}% of 990 "
              f"({c['fed_per_evaluation']:,.0f} positions per candidate evaluation; tensors rewritten per candidate: "
              f"{c['rewritten_mean']:.0f} of {computed['tensors']})")
        if c.get("real"):
            print(f"scoring, positions that held a token (packed rows' padding left out): {c['real_tflops']:.0f} TFLOP/s = "
                  f"{100 * c['real_fraction_of_measured_peak']:.0f}% of the measured bf16 rate "
                  f"({c['real']:,} of {c['fed']:,} positions run)")
    if s.get("projection"):
        link = s["ceilings"]["host_link_bytes_per_s"]
        print(f"projection, host-streamed parents (pinned host -> GPU measured here: {link / 1e9:.1f} GB/s):")
        disk = s["ceilings"].get("disk_bytes_per_s")
        print(f"(disk, cold read measured here: {disk / 1e9 if disk else float('nan'):.2f} GB/s; host memory available: "
              f"{s['ceilings'].get('host_bytes', 0) / 1e9:.0f} GB)")
        print("| parents | child GB | parents GB | parents on | merge s | scoring s | s per candidate |")
        for r in s["projection"]:
            merge, total = (float("nan") if r.get(k) is None else r[k] for k in ("merge_s", "total_s"))
            print(f"| {r['model']} | {r['model_gb']:.0f} | {r['parents_gb']:.0f} | {r['parents_on']} | {merge:.1f} | "
                  f"{r.get('scoring_s', float('nan')):.2f} | {total:.1f} |")
    if "scoring" in s:
        c = s["scoring"]
        print(f"scoring, lm-eval positions (contexts counted per choice): {c['positions_per_s']:,.0f} positions/s = {c['tflops']:.0f} TFLOP/s = "
              f"{100 * c['fraction_of_measured_peak']:.0f}% of the measured bf16 rate "
              f"({s['ceilings']['bf16_flops'] / 1e12:.0f} TFLOP/s), {100 * c['fraction_of_datasheet']:.0f}% of 990")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4b", help="4b, 8b, 1b, 100m, tiny, or a MoE shape (bench/breed_parts.py)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", default="/tmp/darwin-breed")
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--items", type=int, default=400, help="task items (half search, half held out)")
    parser.add_argument("--prompt-chars", type=int, default=200)
    parser.add_argument("--proxy-items", type=int, default=32)
    parser.add_argument("--topk-full", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mri", dest="mri", action="store_false")
    parser.add_argument("--no-heldout", dest="heldout", action="store_false")
    parser.add_argument("--vram-cap-gb", type=float, default=None)
    parser.add_argument("--host-cap-gb", type=float, default=None, help="host memory the placement sees (disk mode)")
    parser.add_argument("--reference-merge", action="store_true", help="candidates by the unfused merge_tensors")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ceilings = measured_ceilings(device)
    if device.type == "cuda":
        from darwin_core.evolution.placement import measure_host_link

        ceilings["host_link_bytes_per_s"] = measure_host_link(device, 1 << 30)
    father, mother, params, model_bytes = write_pair(args.shape, work, device)
    ceilings["disk_bytes_per_s"], ceilings["host_bytes"] = measure_disk_read(father), available_host_bytes()
    task = write_task(work / f"mc-{args.items}-{args.prompt_chars}.jsonl", args.items, args.prompt_chars)
    if args.vram_cap_gb:
        cap_vram(args.vram_cap_gb, device)
    if args.host_cap_gb:
        cap_host(args.host_cap_gb)
    if args.reference_merge:
        use_reference_merge()
    meter = FedPositions().install()
    compiles = TritonCompiles().install()
    run_id = args.run_id or f"breed-{args.shape}-{args.candidates}" + ("-capped" if args.vram_cap_gb else "") + (
        "-disk" if args.host_cap_gb else "")
    run = run_breeding(args, father, mother, task, run_id)
    summary = summarize(args, run, params, model_bytes, ceilings, meter, compiles)
    shutil.rmtree(run["folder"] / "child", ignore_errors=True)  # the disk is small; the timing is recorded
    if "host_link_bytes_per_s" in ceilings:
        summary["projection"] = projection(summary, ceilings["host_link_bytes_per_s"], ceilings["disk_bytes_per_s"],
                                           ceilings["host_bytes"], torch.cuda.get_device_properties(device).total_memory)
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if run["code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
