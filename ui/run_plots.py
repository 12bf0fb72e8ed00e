"""Pure functions from a run's measurements to plotly figures for the Evolve, Runs and Health tabs.

Data in (the `curves` dict of `darwin_core.runs.queue.curves`, a genome, a report), figure out; no Gradio and no
reading of files, so tests check a figure's data without a browser. Colours follow ui/plots.py: father blue,
mother red, child green. The card's PNG of the curve is drawn by `darwin_core.publishing.cardgen.curve_png`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import plotly.graph_objects as go

from ui.plots import COLORS

BASELINE_COLORS = {"father": COLORS["father"], "mother": COLORS["mother"], "uniform-50": "#7f7f7f", "mri": "#9467bd"}
BEST_COLOR = COLORS["child"]


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.2},
    )
    return fig


def fitness_figure(curves: Mapping, title: str = "Fitness per candidate (search split)") -> go.Figure:
    """Every measured candidate (proxy: hollow, full search set: filled), the best-so-far line per generation,
    and the parents and baselines as horizontal reference lines."""
    fig = go.Figure()
    points = list(curves.get("points") or [])
    for phase, symbol, label in (("proxy", "circle-open", "candidate (proxy items)"), ("full", "circle", "candidate (full search set)")):
        chosen = [p for p in points if p.get("phase") == phase]
        if chosen:
            fig.add_trace(go.Scatter(
                x=[p["generation"] for p in chosen], y=[p["fitness"] for p in chosen], mode="markers", name=label,
                marker={"symbol": symbol, "size": 9, "color": "#17becf" if phase == "proxy" else "#1a9850"},
                text=[p["name"] for p in chosen], hovertemplate="%{text}: %{y:.4f}<extra></extra>",
            ))
    generations = list(curves.get("generations") or [])
    best = list(curves.get("best_so_far") or [])
    shown = [(g, b) for g, b in zip(generations, best) if b is not None]
    if shown:
        fig.add_trace(go.Scatter(
            x=[g for g, _ in shown], y=[b for _, b in shown], mode="lines+markers", name="best so far",
            line={"color": BEST_COLOR, "width": 3}, hovertemplate="generation %{x}: best %{y:.4f}<extra></extra>",
        ))
    # Reference lines, labelled at the left; lines closer than a label's height take turns left and right.
    baselines = sorted(((v, k) for k, v in (curves.get("baselines") or {}).items() if v is not None))
    span = (baselines[-1][0] - baselines[0][0]) if baselines else 0.0
    side, previous = "left", None
    for value, name in baselines:
        crowded = previous is not None and value - previous < 0.04 * max(span, 1e-9)
        side = ("right" if side == "left" else "left") if crowded else "left"
        fig.add_hline(
            y=value, line={"color": BASELINE_COLORS.get(name, "#bcbd22"), "dash": "dash", "width": 1.5},
            annotation_text=f"{name} {value:.3f}", annotation_position=f"top {side}",
        )
        previous = value
    last = max([p["generation"] for p in points] + generations + [1])
    fig.update_xaxes(dtick=max(1, -(-last // 10)), rangemode="tozero")  # whole generations, about ten labels
    return _layout(fig, title, "generation", "fitness (weighted composite)")


def genome_figure(names: Sequence[str], values: Sequence[float], title: str = "Best genome") -> go.Figure:
    """A genome as one heatmap row (0 = father, 1 = mother, the colours of the two parents)."""
    values = [float(v) for v in values]
    fig = go.Figure(go.Heatmap(
        z=[values], x=list(names), y=["genome"], zmin=0.0, zmax=1.0,
        colorscale=[[0.0, COLORS["father"]], [0.5, "#f7f7f7"], [1.0, COLORS["mother"]]],
        colorbar={"title": "share of mother"}, text=[[f"{v:.2f}" for v in values]], texttemplate="%{text}",
        hovertemplate="%{x}: %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(height=260)
    return _layout(fig, title, "dimension", "")


def heldout_figure(heldout: Mapping, title: str = "Held-out accuracy (never seen by the search)") -> go.Figure:
    """Grouped bars per task (and the composite) for every model the report measured."""
    models = heldout.get("models") or {}
    tasks = list(next(iter(models.values()))["scores"]) if models else []
    order = [m for m in ("father", "mother", "uniform-50", "mri", "child") if m in models] + sorted(set(models) - {"father", "mother", "uniform-50", "mri", "child"})
    fig = go.Figure()
    for name in order:
        entry = models[name]
        y = [entry["scores"].get(t) for t in tasks] + [entry.get("composite")]
        fig.add_trace(go.Bar(
            x=tasks + ["composite"], y=y, name=name,
            marker={"color": BASELINE_COLORS.get(name, COLORS["child"] if name == "child" else "#bcbd22")},
            hovertemplate=f"{name} · %{{x}}: %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "task", "accuracy")
