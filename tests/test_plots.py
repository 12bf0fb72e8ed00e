"""ui/plots.py: each figure is built from a small scan / report dict and carries exactly that data."""

from __future__ import annotations

import pytest

from ui import plots


def scan(importance: dict[str, list[float]], *, moe: bool = False) -> dict:
    s = {
        "model": {"path": "father"},
        "probes": {"categories": list(importance), "importance": importance},
        "static": {
            "layers": [
                {"attn": {"entropy": 6.0, "std": 0.02, "norm": 3.0}, "ffn": {"entropy": 6.5, "std": 0.03, "norm": 4.0}},
                {"attn": {"entropy": 6.1, "std": 0.02, "norm": 3.1}, "ffn": {"entropy": 6.4, "std": 0.04, "norm": 4.2}},
                {"linear_attn": {"entropy": 5.9, "std": 0.01, "norm": 2.0}, "ffn": {"entropy": 6.3, "std": 0.05, "norm": 4.4}},
            ]
        },
    }
    if moe:
        s["moe"] = {"num_experts": 3, "layers": [0, 2], "utilisation": [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]}
    return s


FATHER = scan({"REASONING": [0.1, 0.2, 0.3], "CODE": [0.0, 0.05, 0.4]})
MOTHER = scan({"REASONING": [0.1, 0.5, 0.3], "CODE": [0.2, 0.05, 0.1]})
PAIR = {
    "father": FATHER,
    "mother": MOTHER,
    "advantage": {"REASONING": [0.0, 0.3, 0.0], "CODE": [0.2, 0.0, -0.3]},
    "divergence": {
        "layers": [
            {"attn": {"rel_delta": 0.01, "cosine": 0.999}, "ffn": {"rel_delta": 0.02, "cosine": 0.998}},
            {"attn": {"rel_delta": 0.03, "cosine": 0.99}, "ffn": {"rel_delta": 0.05, "cosine": 0.98}},
            {"linear_attn": {"rel_delta": 0.04, "cosine": 0.97}, "ffn": {"rel_delta": None, "cosine": None}},
        ]
    },
}
REPORT = {
    "verdict": "warning",
    "layers_flagged": [1],
    "findings": [{"kind": "interference", "layers": [1], "severity": "warning", "message": "..."}],
    "models": {
        "father": {"importance": [0.1, 0.1, 0.2]},
        "mother": {"importance": [0.1, 0.15, 0.2]},
        "child": {"importance": [0.1, 0.6, 0.2]},
    },
}


def test_importance_heatmap_is_layers_by_categories():
    fig = plots.importance_heatmap(FATHER)
    (heat,) = fig.data
    assert list(heat.x) == ["REASONING", "CODE"]
    assert list(heat.y) == ["L0", "L1", "L2"]
    assert [list(row) for row in heat.z] == [[0.1, 0.0], [0.2, 0.05], [0.3, 0.4]]


def test_advantage_heatmap_is_symmetric_around_zero():
    (heat,) = plots.advantage_heatmap(PAIR).data
    assert [list(row) for row in heat.z] == [[0.0, 0.2], [0.3, 0.0], [0.0, -0.3]]
    assert heat.zmin == -0.3 and heat.zmax == 0.3


def test_divergence_map_is_layers_by_roles_in_anatomy_order():
    (heat,) = plots.divergence_map(PAIR).data
    assert list(heat.x) == ["attn", "linear_attn", "ffn"]
    assert [list(row) for row in heat.z] == [[0.01, None, 0.02], [0.03, None, 0.05], [None, 0.04, None]]
    (cos,) = plots.divergence_map(PAIR, metric="cosine").data
    assert cos.z[1][2] == 0.98
    with pytest.raises(ValueError):
        plots.divergence_map(PAIR, metric="l1")


def test_static_profile_lines_have_one_trace_per_role():
    fig = plots.static_profile_lines(FATHER, "std")
    by_name = {t.name: list(t.y) for t in fig.data}
    assert by_name == {"attn": [0.02, 0.02, None], "linear_attn": [None, None, 0.01], "ffn": [0.03, 0.04, 0.05]}
    assert list(fig.data[0].x) == [0, 1, 2]


def test_moe_utilisation_heatmap_only_for_moe_scans():
    assert plots.moe_utilisation_heatmap(FATHER) is None
    (heat,) = plots.moe_utilisation_heatmap(scan({"R": [0, 0, 0]}, moe=True)).data
    assert list(heat.x) == ["E0", "E1", "E2"] and list(heat.y) == ["L0", "L2"]
    assert [list(r) for r in heat.z] == [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]


def test_health_chart_draws_three_lines_and_marks_flagged_layers():
    fig = plots.health_chart(REPORT)
    names = [t.name for t in fig.data]
    assert names == ["father", "mother", "child", "flagged"]
    assert list(fig.data[2].y) == [0.1, 0.6, 0.2]
    flagged = fig.data[3]
    assert list(flagged.x) == [1] and list(flagged.y) == [0.6] and list(flagged.text) == ["interference"]
    assert "warning" in fig.layout.title.text
    healthy = dict(REPORT, verdict="healthy", layers_flagged=[], findings=[])
    assert [t.name for t in plots.health_chart(healthy).data] == ["father", "mother", "child"]
