"""How long does an MRI scan take? Times a scan of a random-weight model of a given shape.

    python bench/mri.py --quick                      # seconds: a tiny model, to check the script works
    python bench/mri.py --shape 100m --device cpu    # ~120M-parameter Qwen3-shaped model on the CPU
    python bench/mri.py --shape 4b --device cuda     # Qwen3-4B-shaped model (bf16) on one GPU

The model is written once in the Hub layout (random init, untrained, so the numbers are about cost, not
about what the scan finds), then scanned with the default probes (five categories × four texts). The table
splits the time into the static pass (every tensor read and profiled once), model loading and the probe
pass ((layers + 2) forward passes over the probe texts), and reports the probe tokens per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from darwin_core.mri import scan as mri  # noqa: E402
from darwin_core.mri.probes import default_probes  # noqa: E402
from darwin_core.testing.shapes import SHAPES, random_qwen3  # noqa: E402


def write_random_model(shape: str, out: Path, device: str) -> int:
    """A random-weight Qwen3 model of `shape` saved to `out` (bf16 off the CPU); returns its parameter count."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model, tokenizer = random_qwen3(shape, device, dtype)
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    del model
    tokenizer.save_pretrained(out)  # characters: real probe texts, ids the model's embedding covers
    return params


def bench(shape: str, device: str, probes: dict[str, list[str]]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mri-bench-{shape}-") as tmp:
        folder = Path(tmp) / "model"
        start = time.perf_counter()
        params = write_random_model(shape, folder, device)
        write_s = time.perf_counter() - start

        reader = mri.open_reader(folder, device)
        start = time.perf_counter()
        mri.tensor_pass([reader], None)
        static_s = time.perf_counter() - start

        start = time.perf_counter()
        model, tokenizer = mri.load_model(folder, device)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        probe = mri.run_probes(model, tokenizer, probes)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        probe_s = time.perf_counter() - start
        layers = len(probe["importance"][next(iter(probes))])
        del model
        return {
            "shape": shape, "device": device, "params_m": params / 1e6, "layers": layers,
            "bytes_gb": reader.total_bytes / 1e9, "write_s": write_s, "static_s": static_s, "load_s": load_s,
            "probe_s": probe_s, "total_s": static_s + load_s + probe_s,
            "probe_tokens": probe["tokens"] + sum(len(t) for t in probes.values()),
            "passes": layers + 2,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append", help="model shape(s) to time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shape, one probe text per category")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the table readable
    if args.threads:
        torch.set_num_threads(args.threads)
    probes = default_probes()
    shapes = args.shape or ["100m"]
    if args.quick:
        shapes, probes = ["tiny"], {c: texts[:1] for c, texts in probes.items()}
    rows = [bench(shape, args.device, probes) for shape in shapes]
    header = ("shape", "device", "params (M)", "layers", "GB", "static s", "load s", "probe s", "scan s", "passes", "tok/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        tok_s = r["probe_tokens"] * r["passes"] / r["probe_s"] if r["probe_s"] > 0 else float("nan")
        print(
            f"| {r['shape']} | {r['device']} | {r['params_m']:.1f} | {r['layers']} | {r['bytes_gb']:.2f} | "
            f"{r['static_s']:.2f} | {r['load_s']:.2f} | {r['probe_s']:.2f} | {r['total_s']:.2f} | {r['passes']} | {tok_s:.0f} |"
        )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, probes: {sum(map(len, probes.values()))} texts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
