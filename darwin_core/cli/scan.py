"""`python -m darwin_core scan`: the command line of `darwin_core.mri.scan`."""

from __future__ import annotations

import argparse
import sys

from darwin_core.fitness.probes import resolve_probes
from darwin_core.parents.tokenizers import check_tokenizer, check_tokenizers
from darwin_core.mri.scan import PROBE_BATCH, model_folder, save_scan, scan_json, scan_model, scan_pair, scan_summary

def _run_scan(args: argparse.Namespace) -> int:
    probes = resolve_probes(args.probes)
    model = model_folder(args.model)
    if args.mother:  # a broken tokenizer is one sentence here, not a reshape traceback from the probes
        mother = model_folder(args.mother)
        for note in check_tokenizers(model, mother).differences:
            print(f"note: {note}", file=sys.stderr)
        scan = scan_pair(model, mother, probes=probes, device=args.device, batch_size=args.batch_size)
    else:
        check_tokenizer(model)
        scan = scan_model(model, probes=probes, device=args.device, batch_size=args.batch_size)
    if args.out:
        save_scan(scan, args.out)
        print(scan_summary(scan))
        print(f"wrote {args.out}")
    else:
        print(scan_json(scan), end="")
    return 0

def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("scan", help="MRI scan of a model (or of two parents with --mother).")
    parser.add_argument("model", help="model folder or Hub id (the father when --mother is given)")
    parser.add_argument("--mother", help="second parent (folder or Hub id): adds divergence and the prescription")
    parser.add_argument("--out", help="write the scan JSON here (default: print it)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--probes", help="YAML file of probe texts (category: [texts]), or 'demo' for the demo tasks' probes; default: the built-in five")
    parser.add_argument("--batch-size", type=int, default=PROBE_BATCH, help="probe texts per forward pass")
    parser.set_defaults(func=_run_scan)
