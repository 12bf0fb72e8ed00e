"""The fitness curves of a run, from its evaluation records alone: what the live plot and the card draw."""

from __future__ import annotations

from typing import Any


def curves(evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-generation series for the live plot, from evaluations.jsonl alone.

    best_proxy / mean_proxy: over the generation's candidates (Phase 1; proxy = full when the proxy covers the
    search set); best_full: the generation's best full-search score (Phase 2); best_so_far: the best full score
    up to that generation; baselines: full-search fitness of father, mother, uniform-50, mri (reference lines);
    points: every measurement, for a scatter.
    """
    baselines: dict[str, float] = {}
    proxy: dict[int, list[float]] = {}
    full: dict[int, list[float]] = {}
    points = []
    for e in evaluations:
        if e.get("kind") == "baseline":
            baselines[e["name"]] = e["fitness"]
            continue
        g = int(e["generation"])
        points.append({"generation": g, "name": e["name"], "phase": e["phase"], "fitness": e["fitness"]})
        if e["phase"] == "proxy" or ("proxy_fitness" not in e and e["phase"] == "full"):
            proxy.setdefault(g, []).append(e["fitness"])
        if e["phase"] == "full":
            full.setdefault(g, []).append(e["fitness"])
    generations = sorted(set(proxy) | set(full))
    best_so_far: list[float | None] = []
    running: float | None = None
    for g in generations:
        if full.get(g):
            running = max(full[g]) if running is None else max(running, max(full[g]))
        best_so_far.append(running)
    return {
        "generations": generations,
        "best_proxy": [max(proxy[g]) if proxy.get(g) else None for g in generations],
        "mean_proxy": [sum(proxy[g]) / len(proxy[g]) if proxy.get(g) else None for g in generations],
        "best_full": [max(full[g]) if full.get(g) else None for g in generations],
        "best_so_far": best_so_far,
        "baselines": baselines,
        "points": points,
    }
