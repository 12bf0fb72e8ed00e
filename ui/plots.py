"""Pure functions from MRI scans and health reports to plotly figures (data in, figure out).

No Gradio, no I/O: the MRI and Health tabs, `scripts/mri_pictures.py` and the model card all draw the same
pictures from the same JSON, and tests check a figure's data without a browser. Rows are layers (layer 0 at
the top, as the seeds' MRI pictures read), columns are probe categories, roles or experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

ROLE_ORDER: tuple[str, ...] = (
    "embed", "attn", "linear_attn", "ffn", "router", "experts", "shared_expert", "norm", "final_norm", "lm_head", "other",
)
STATIC_METRICS = ("entropy", "std", "norm")
COLORS = {"father": "#1f77b4", "mother": "#d62728", "child": "#2ca02c"}
FLAG_COLOR = "#ff7f0e"


def _layer_labels(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _heatmap_layout(fig: go.Figure, title: str, x_title: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title="layer",
        yaxis={"autorange": "reversed"},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
    )
    return fig


def importance_heatmap(scan: Mapping, title: str | None = None) -> go.Figure:
    """Probe importance (1 − cos when the layer is skipped): layers × probe categories."""
    probes = scan["probes"]
    categories = list(probes["categories"])
    n = len(probes["importance"][categories[0]]) if categories else 0
    z = [[probes["importance"][c][i] for c in categories] for i in range(n)]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=categories, y=_layer_labels(n), colorscale="Inferno", zmin=0,
            colorbar={"title": "1 − cos"},
            hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>",
        )
    )
    name = scan.get("model", {}).get("path", "model")
    return _heatmap_layout(fig, title or f"Probe importance per layer — {name}", "probe category")


def advantage_heatmap(pair: Mapping, title: str | None = None) -> go.Figure:
    """Layer advantage map: mother − father probe importance (red: the mother relies on it more)."""
    advantage = pair["advantage"]
    categories = list(advantage)
    n = len(advantage[categories[0]]) if categories else 0
    z = [[advantage[c][i] for c in categories] for i in range(n)]
    bound = max((abs(v) for row in z for v in row), default=0.0) or 1e-9
    fig = go.Figure(
        go.Heatmap(
            z=z, x=categories, y=_layer_labels(n), colorscale="RdBu", reversescale=True, zmin=-bound, zmax=bound,
            colorbar={"title": "mother − father"},
            hovertemplate="%{y} · %{x}: %{z:+.4f}<extra></extra>",
        )
    )
    return _heatmap_layout(fig, title or "Layer advantage (mother − father importance)", "probe category")


def _ordered_roles(rows: Sequence[Mapping]) -> list[str]:
    present = {role for row in rows for role in row}
    return [r for r in ROLE_ORDER if r in present] + sorted(present - set(ROLE_ORDER))


def divergence_map(pair: Mapping, metric: str = "rel_delta", title: str | None = None) -> go.Figure:
    """Where the parents differ: relative delta norm ‖b−a‖/‖a‖ (or cosine) per layer × role."""
    if metric not in ("rel_delta", "cosine"):
        raise ValueError("metric must be 'rel_delta' or 'cosine'")
    rows = pair["divergence"]["layers"]
    roles = _ordered_roles(rows)
    z = [[(row.get(role) or {}).get(metric) for role in roles] for row in rows]
    label = "‖b−a‖/‖a‖" if metric == "rel_delta" else "cosine"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=roles, y=_layer_labels(len(rows)), colorscale="Viridis", colorbar={"title": label},
            hovertemplate="%{y} · %{x}: %{z:.4g}<extra></extra>",
        )
    )
    return _heatmap_layout(fig, title or f"Parent divergence per layer and role ({label})", "role")


def static_profile_lines(scan: Mapping, metric: str = "entropy", title: str | None = None) -> go.Figure:
    """One line per role across layers for a static metric (entropy in bits, std, or combined L2 norm)."""
    if metric not in STATIC_METRICS:
        raise ValueError(f"metric must be one of {', '.join(STATIC_METRICS)}")
    rows = scan["static"]["layers"]
    x = list(range(len(rows)))
    fig = go.Figure()
    for role in _ordered_roles(rows):
        y = [(row.get(role) or {}).get(metric) for row in rows]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=role))
    fig.update_layout(
        title=title or f"Static profile per layer: {metric}",
        xaxis_title="layer", yaxis_title=metric, template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def moe_utilisation_heatmap(scan: Mapping, title: str | None = None) -> go.Figure | None:
    """Expert utilisation (share of top-k slots per expert) per MoE layer; None for dense models."""
    moe = scan.get("moe")
    if not moe:
        return None
    n_experts = moe["num_experts"]
    fig = go.Figure(
        go.Heatmap(
            z=moe["utilisation"], x=[f"E{e}" for e in range(n_experts)], y=[f"L{i}" for i in moe["layers"]],
            colorscale="Magma", zmin=0, colorbar={"title": "share"},
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    return _heatmap_layout(fig, title or "Expert utilisation over the probe tokens", "expert")


def health_chart(report: Mapping, title: str | None = None) -> go.Figure:
    """Per-layer importance of father, mother and child; flagged layers marked on the child's line."""
    models = report["models"]
    n = len(models["child"]["importance"])
    x = list(range(n))
    fig = go.Figure()
    for label in ("father", "mother", "child"):
        fig.add_trace(
            go.Scatter(
                x=x, y=models[label]["importance"], mode="lines+markers", name=label,
                line={"color": COLORS[label], "width": 3 if label == "child" else 2},
            )
        )
    flagged = list(report.get("layers_flagged", []))
    if flagged:
        kinds = {i: [f["kind"] for f in report["findings"] if i in f["layers"]] for i in flagged}
        fig.add_trace(
            go.Scatter(
                x=flagged, y=[models["child"]["importance"][i] for i in flagged], mode="markers", name="flagged",
                marker={"symbol": "x", "size": 14, "color": FLAG_COLOR, "line": {"width": 2}},
                text=[", ".join(kinds[i]) for i in flagged], hovertemplate="L%{x}: %{text}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"Health check — verdict: {report['verdict']}",
        xaxis_title="layer", yaxis_title="importance (1 − cos when skipped)", template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def layer_map_figure(rows: Sequence[Mapping], title: str | None = None) -> go.Figure:
    """The layer map of a cross-architecture FFN pair: each father layer (x) joined to the mother layer (y) its
    FFN is bred with (green); layers kept as the father's in grey, their reason on hover."""
    fig = go.Figure()
    for bred, color, name in ((True, COLORS["child"], "FFN bred with this mother layer"),
                              (False, "#9e9e9e", "kept as the father's")):
        chosen = [row for row in rows if bool(row["bred"]) is bred]
        fig.add_trace(go.Scatter(
            x=[row["father_layer"] for row in chosen], y=[row["mother_layer"] for row in chosen], mode="markers+lines"
            if bred else "markers", name=name, marker={"color": color, "size": 9, "symbol": "circle" if bred else "x"},
            line={"color": color, "width": 1}, text=[row["why"] for row in chosen],
            hovertemplate="father L%{x} → mother L%{y}<br>%{text}<extra></extra>",
        ))
    fig.update_layout(
        title=title or "Layer map: father layer → mother layer (relative depth)", xaxis_title="father layer",
        yaxis_title="mother layer", template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig
