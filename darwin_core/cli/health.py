"""`python -m darwin_core health`: the command line of `darwin_core.health.checkup`."""

from __future__ import annotations

import argparse

from darwin_core.health.checkup import check_health
from darwin_core.mri import scan as mri


def _run_health(args: argparse.Namespace) -> int:
    folders = [mri.model_folder(ref) for ref in (args.child, args.father, args.mother)]
    report = check_health(*folders, probes=args.probes, device=args.device, batch_size=args.batch_size)
    if args.out:
        mri.save_json(report, args.out)
    print(f"verdict: {report['verdict']}")
    for finding in report["findings"]:
        print(f"- [{finding['severity']}] {finding['message']}")
    if args.out:
        print(f"wrote {args.out}")
    return 0 if report["verdict"] != "broken" else 1


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("health", help="Health check of a child model against both parents.")
    parser.add_argument("child", help="the child model's folder (or Hub id)")
    parser.add_argument("--father", required=True, help="the father's folder (or Hub id)")
    parser.add_argument("--mother", required=True, help="the mother's folder (or Hub id)")
    parser.add_argument("--out", help="write the report JSON here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--probes", help="YAML file of probe texts, or 'demo' for the demo tasks' probes; default: the built-in five")
    parser.add_argument("--batch-size", type=int, default=mri.PROBE_BATCH, help="probe texts per forward pass")
    parser.set_defaults(func=_run_health)
