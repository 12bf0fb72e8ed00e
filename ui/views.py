"""What several tabs show about a run: its header, progress, failure sentence, curves and held-out report.

Pure functions of what `darwin_core` read from the run folder (plus the visitor's ownership), shared by the
Evolve, Health and Runs tabs, so that no tab imports another.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from darwin_core import api
from darwin_core.api import DarwinError
from darwin_core.api import parse_candidate_name
from darwin_core.api import CANCELLED, FAILED, FINAL_STATES, FINISHED, INTERRUPTED, RunFolder
from darwin_core.api import parent_label
from ui import run_plots, session
from ui.common import percent

STATE_TEXT = {
    "queued": "⏳ queued", "starting": "⏳ starting", "running": "🧬 running", FINISHED: "✅ finished",
    FAILED: "❌ failed", CANCELLED: "⏹ cancelled", INTERRUPTED: "⚠ interrupted",
}

HELDOUT_HEADERS = ["task", "items", "child", "father", "mother", "child − father [95% CI]", "p vs father",
                   "child − mother [95% CI]", "p vs mother"]


HIDDEN_PARENT = "a gated or private Hub model"


def public_parent_name(ref: Any, run: Mapping | None = None) -> str:
    """A parent as everyone may see it: a gated or private parent's pinned id only in its owner's Evolve tab."""
    if run is not None and run.get("parents_restricted"):
        return HIDDEN_PARENT
    return parent_label(str(ref)) if ref else "—"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def heldout_table(report: Mapping | None) -> pd.DataFrame:
    """The held-out comparison of report.json: scores, the paired-bootstrap interval of the difference, McNemar p."""
    from darwin_core.api import heldout_rows

    rows = []
    for r in heldout_rows((report or {}).get("heldout")):
        rows.append([
            r.task, r.n_items, percent(r.child), percent(r.father), percent(r.mother),
            f"{_points(r.child - r.father)} [{_points(r.ci_vs_father[0])}, {_points(r.ci_vs_father[1])}]", f"{r.p_vs_father:.3g}",
            f"{_points(r.child - r.mother)} [{_points(r.ci_vs_mother[0])}, {_points(r.ci_vs_mother[1])}]", f"{r.p_vs_mother:.3g}",
        ])
    return pd.DataFrame(rows, columns=HELDOUT_HEADERS)


def report_markdown(run: Mapping) -> str:
    """What the run concluded, in words, from report.json (only measured numbers)."""
    report = run.get("report")
    if not report:
        if run.get("state") == "finished":
            return "The run finished without a report."
        return "The report appears when the run has finished: the best child is merged to disk and measured on the held-out split."
    lines = []
    best = report.get("best") or {}
    if best.get("kind") == "baseline":
        candidate = report.get("best_candidate") or {}
        lines.append(f"No candidate beat the **{best.get('name')}** reference on the full search split (search fitness "
                     f"**{best.get('fitness', 0):.4f}** against the best candidate {candidate.get('name')}'s "
                     f"{candidate.get('fitness', 0):.4f}), so the child is that recipe.")
    elif best:
        lines.append(f"Best candidate **{best.get('name')}** (generation {best.get('generation')}), search fitness **{best.get('fitness', 0):.4f}**.")
    heldout = report.get("heldout")
    if heldout:
        verdict = "beats both parents" if heldout.get("beats_both_parents") else (
            "beats the father" if heldout.get("beats_father") else "beats the mother" if heldout.get("beats_mother") else
            "does not beat either parent")
        composite = heldout["models"]["child"]["composite"]
        lines.append(
            f"On the held-out split the child scores **{percent(composite)}** (weighted composite) and {verdict} at "
            f"p < {heldout.get('significance', 0.05)} (exact McNemar on paired items)."
        )
    else:
        lines.append("This run did not measure a held-out split.")
    return "\n\n".join(lines)


def _rss_bytes(pid: Any) -> int | None:
    """Resident memory of the run's process (Linux /proc), or None when it is not running here."""
    if not isinstance(pid, int):
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _planned_per_generation(events: Sequence[Mapping], config: Mapping, measured: Sequence[Mapping], population: int) -> int:
    """Evaluations one generation plans: the population on the proxy, then the top-k on the rest of the search
    split, or (successive halving) each rung's climbers, as the search recorded them in `search_started`."""
    started = [e for e in events if e.get("event") == "search_started"]
    if started and started[-1].get("selection") == "halving" and isinstance(started[-1].get("rungs"), list):
        return population + sum(int(rung.get("keep") or 0) for rung in started[-1]["rungs"] if isinstance(rung, Mapping))
    proxy_is_full = all(e.get("phase") == "full" for e in measured) and bool(measured)
    return population + (0 if proxy_is_full else int(config.get("topk_full") or 0))


def progress_facts(run: Mapping, events: Sequence[Mapping], config: Mapping, *, now: float | None = None) -> dict[str, Any]:
    """Candidates measured / planned, candidates per minute, ETA of the search (seconds), from the event log."""
    now = time.time() if now is None else now
    measured = [e for e in events if e.get("event") == "evaluated" and parse_candidate_name(str(e.get("name", ""))) is not None]
    population = int(config.get("population") or 0)
    generations = int(run.get("generations") or config.get("generations") or 0)
    planned = _planned_per_generation(events, config, measured, population) * generations
    recent = measured[-20:]
    rate = None
    if len(recent) >= 2 and recent[-1]["t"] > recent[0]["t"]:
        rate = 60.0 * (len(recent) - 1) / (recent[-1]["t"] - recent[0]["t"])
    elif len(recent) == 1 and recent[0].get("seconds"):
        rate = 60.0 / max(recent[0]["seconds"], 1e-6)
    eta = None
    if rate and planned and run.get("state") == "running" and run.get("phase") == "search":
        eta = max(planned - len(measured), 0) * 60.0 / rate
    return {"measured": len(measured), "planned": planned, "per_minute": rate, "eta_seconds": eta}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def genome_names(space: str | None, count: int) -> list[str]:
    """Dimension names of a genome of `count` values in `space` (generic names when the space is unknown)."""
    try:
        from darwin_core.api import get_space

        names = get_space(space or "", layer_count=count).names
        if len(names) == count:
            return names
    except (DarwinError, TypeError, ValueError):
        pass
    return [f"x{i}" for i in range(count)]


def run_header(run: Mapping, *, owner: bool) -> str:
    state = run.get("state", "queued")
    parts = [f"**Run `{run['run_id']}`** — {STATE_TEXT.get(state, state)}"]
    if run.get("parents_restricted") and not owner:
        parts.append("parents: gated or private Hub models (shown to the run's owner only)")
    elif run.get("father") and run.get("mother"):
        parts.append(f"father `{parent_label(str(run['father']))}` × mother `{parent_label(str(run['mother']))}`")
    parts.append(f"generation {run.get('generation') or 0}/{run.get('generations') or '?'}")
    if isinstance(run.get("best_fitness"), (int, float)):
        parts.append(f"best candidate fitness {run['best_fitness']:.4f}")
    line = " · ".join(parts)
    published = ((run.get("report") or {}).get("best") or {})
    if published.get("kind") == "baseline":
        line += (f"\n\nNo candidate beat the `{published['name']}` reference line on the full search set "
                 f"({published['fitness']:.4f}): the child is that recipe.")
    if run.get("phase") == "final" and state == "running":
        line += "\n\nThe search is done: merging the best child to disk and measuring it on the held-out split."
    if state == INTERRUPTED:
        line += "\n\nNo process is executing this run any more (the server restarted?): its owner can resume it from the last checkpoint."
    line += "\n\n" + ("You started this run: you can cancel, resume and publish it." if owner
                      else "You are watching a run started by someone else: its owner can cancel or publish it.")
    return line


def run_error(run: Mapping) -> str:
    """The failure sentence the run folder recorded (never a traceback)."""
    if run.get("state") == FAILED and run.get("error"):
        return f"**⚠ The run failed: {run['error']}**"
    return ""


def stats_markdown(run: Mapping, facts: Mapping, memory: int | None) -> str:
    from ui.common import human_bytes

    rate = facts.get("per_minute")
    lines = [
        f"Candidates measured: **{facts['measured']}**" + (f" of {facts['planned']} planned" if facts.get("planned") else ""),
        f"Candidates per minute: **{rate:.1f}**" if rate else "Candidates per minute: —",
        f"Search ETA: **{_duration(facts.get('eta_seconds'))}**" + (" (then the final merge and held-out evaluation)" if facts.get("eta_seconds") is not None else ""),
        f"Memory of the run's process: **{human_bytes(memory)}**" if memory else "Memory of the run's process: — (not running on this machine)",
    ]
    if isinstance(run.get("device_memory_bytes"), (int, float)):
        lines.append(f"Peak accelerator memory: **{human_bytes(int(run['device_memory_bytes']))}**")
    return "  \n".join(lines)


def render_run(run_id: str, *, runs_dir: Path, who: session.Visitor, local_mode: bool) -> dict[str, Any]:
    """Everything the live view shows about one run, read from its folder."""
    import yaml

    run = api.read_run(run_id, runs_dir)
    folder = RunFolder(runs_dir / run_id)
    owner = session.is_owner(folder.path, who, session.app_secret(runs_dir), local_mode=local_mode)
    config = yaml.safe_load(run.get("config_yaml") or "") or {}
    status = folder.read_status()
    run = {**run, "device_memory_bytes": status.get("device_memory_bytes")}
    facts = progress_facts(run, folder.events(), config)
    memory = _rss_bytes(status.get("pid")) if run["state"] == "running" else None
    best = run.get("best")
    space = status.get("genome_space") or config.get("genome")  # the one the search runs (an FFN-only pair's differs)
    genome = run_plots.genome_figure(genome_names(space, len(best["genome"])), best["genome"],
                                     title=f"Best genome so far ({best['name']}, fitness {best['fitness']:.4f})") if best and best.get("genome") else None
    return {
        "run": run,
        "owner": owner,
        "header": run_header(run, owner=owner),
        "error": run_error(run),
        "curve": run_plots.fitness_figure(run["curves"]),
        "genome": genome,
        "stats": stats_markdown(run, facts, memory),
        "final": run["state"] in FINAL_STATES or run["state"] == INTERRUPTED,
    }


def signature(run_id: str | None, runs_dir: Path) -> list[Any]:
    """What changes when a run makes progress: a tick with the same signature re-renders nothing."""
    if not run_id:
        return [None]
    folder = runs_dir / run_id
    out: list[Any] = [run_id]
    for name in ("status.json", "evaluations.jsonl", "events.jsonl", "report.json", "owner.json"):
        try:
            stat = (folder / name).stat()
            out.append([stat.st_size, stat.st_mtime_ns])
        except FileNotFoundError:
            out.append(None)
    return out
