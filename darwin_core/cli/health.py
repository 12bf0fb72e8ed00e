"""`python -m darwin_core health`: the check-up of a run's child (`health RUN`), or of any child folder against
two parent folders (`health CHILD --father F --mother M`)."""

from __future__ import annotations

import argparse

from darwin_core.errors import DarwinError
from darwin_core.health.checkup import check_health
from darwin_core.health.run import HEALTH, check_run
from darwin_core.io.runfolder import check_run_id, runs_dir_default
from darwin_core.mri import scan as mri


def _report(args: argparse.Namespace) -> tuple[dict, str | None]:
    """(the report, where it was written): a run's own check-up when only the run is named."""
    if args.father is None and args.mother is None:
        run_dir = runs_dir_default(args.runs_dir) / check_run_id(args.child)
        if not run_dir.is_dir():
            raise DarwinError(f"There is no run {args.child!r} in {runs_dir_default(args.runs_dir)}; give a run id, "
                              "or a child folder with --father and --mother.")
        report = check_run(run_dir, device=args.device)
        if args.out:
            mri.save_json(report, args.out)
        return report, args.out or str(run_dir / HEALTH)
    if args.father is None or args.mother is None:
        raise DarwinError("A child folder is checked against both parents: give --father and --mother.")
    folders = [mri.model_folder(ref) for ref in (args.child, args.father, args.mother)]
    report = check_health(*folders, probes=args.probes, device=args.device, batch_size=args.batch_size)
    if args.out:
        mri.save_json(report, args.out)
    return report, args.out


def _run_health(args: argparse.Namespace) -> int:
    report, written = _report(args)
    print(f"verdict: {report['verdict']}")
    for finding in report["findings"]:
        print(f"- [{finding['severity']}] {finding['message']}")
    skills = report.get("skills")
    if skills:  # retention on the held-out split: the child against each task's better parent
        print("skills (child − better parent, held-out): " + ", ".join(
            f"{task} {100 * row['vs_better']['diff']:+.1f} vs {row['better_parent']} (p {row['vs_better']['p_value']:.2g})"
            for task, row in skills["tasks"].items()))
    if written:
        print(f"wrote {written}")
    return 0 if report["verdict"] != "broken" else 1


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("health", help="Health check of a child against both parents.",
                                   description="`health RUN` checks a run's child with the run's own parents and "
                                   "probes and writes health.json into the run, where `card RUN` reads it.")
    parser.add_argument("child", help="a run id, or a child model's folder (or Hub id) with --father and --mother")
    parser.add_argument("--father", help="the father's folder (or Hub id), for a child folder")
    parser.add_argument("--mother", help="the mother's folder (or Hub id), for a child folder")
    parser.add_argument("--runs-dir", default=None, help="runs folder (default: $DARWIN_RUNS_DIR or ./runs)")
    parser.add_argument("--out", help="also write the report JSON here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--probes", help="YAML file of probe texts, or 'demo' for the demo tasks' probes; default: "
                        "the built-in five (a run uses its MRI's probes, and its held-out results for the skills)")
    parser.add_argument("--batch-size", type=int, default=mri.PROBE_BATCH, help="probe texts per forward pass")
    parser.set_defaults(func=_run_health)
