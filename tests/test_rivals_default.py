"""The rivals' default breeding: the shipped config (per-layer genome) is what `evolve` and the app use for them,
its genome expresses the recipe that keeps both skills, and the pre-launch output says what the run will cost."""

from __future__ import annotations

from darwin_core.evolution.config import EvolutionConfig
from darwin_core.parents.demo import DEFAULT_RIVALS_DIR
from darwin_core.zoo.rivals import BREED_CONFIG, DEFAULT_RIVALS_SPEC, breed_config_text, family_breed_settings

SHIPPED = DEFAULT_RIVALS_DIR / BREED_CONFIG


def test_the_shipped_rivals_config_is_the_builds_and_breeds_them_in_the_per_layer_genome():
    assert SHIPPED.read_text(encoding="utf-8") == breed_config_text(DEFAULT_RIVALS_SPEC)
    config = EvolutionConfig.load(SHIPPED)
    assert (config.father, config.mother) == ("demo:rivals_father", "demo:rivals_mother")
    assert (config.genome, config.method, config.mri) == ("per-layer", "linear", "auto")
    assert [t.ref for t in config.tasks] == list(DEFAULT_RIVALS_SPEC.skills)
    assert config.start == "neutral" and config.selection == "topk"  # the A/B rows change one setting each


def test_the_app_takes_the_family_settings_only_for_the_rivals_pair():
    settings = family_breed_settings("demo:rivals_mother", "demo:rivals_father")
    assert settings == {"genome": "per-layer", "method": "linear", "tasks": ["double", "shift"], "mri": "auto"}
    assert family_breed_settings("demo:father", "demo:mother") is None
    assert family_breed_settings("demo:rivals_father", "demo:mother") is None


def test_the_per_layer_genome_expresses_the_recipe_that_keeps_both_skills():
    """Genes (0, 0, 1, 1): the father's layers 0-1 (where he learnt `double`), the mother's 2-3 (`shift`)."""
    from darwin_core.genome.spaces import get_space
    from darwin_core.recipe import ParentRef

    father_dir, mother_dir = DEFAULT_RIVALS_DIR / "father", DEFAULT_RIVALS_DIR / "mother"
    space = get_space("per-layer", layer_count=4)
    recipe = space.to_recipe([0.0, 0.0, 1.0, 1.0], father=ParentRef.of(father_dir), mother=ParentRef.of(mother_dir),
                             layer_count=4, method="linear")
    for layer, share in ((0, 0.0), (1, 0.0), (2, 1.0), (3, 1.0)):
        for part in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            assert recipe.ratio_for(f"model.layers.{layer}.{part}") == share


def test_evolve_prints_the_cost_estimate_before_launch(tmp_path, capsys):
    from darwin_core.cli.main import main

    config = tmp_path / "breed.yaml"
    config.write_text(EvolutionConfig(father="demo:father", mother="demo:mother", device="cpu", population=4,
                                      generations=2, selection="halving").to_yaml())
    assert main(["evolve", str(config), "--runs-dir", str(tmp_path / "runs"), "--queue"]) == 0
    out = capsys.readouterr().out
    assert "queued run" in out and "Cost estimate: 8 candidates" in out


def test_progress_counts_the_evaluations_successive_halving_plans(tmp_path):
    """The page's planned count is the cost estimate's: population + each rung's climbers, per generation."""
    from darwin_core.evolution.cost import plan_counts
    from darwin_core.evolution.halving import halving_rungs
    from darwin_core.evolution.search import proxy_split
    from darwin_core.evolution.tasks import load_tasks
    from ui.views import progress_facts

    config = EvolutionConfig(father="demo:father", mother="demo:mother", population=8, generations=3, proxy_items=8,
                             selection="halving", halving_rate=2)
    tasks, _ = load_tasks(config)
    proxy, _ = proxy_split(tasks, config.proxy_items, config.seed)
    rungs = halving_rungs(tasks, proxy, population=8, proxy_items=8, rate=2, seed=config.seed)
    assert len(rungs) >= 2
    _, evaluations, _ = plan_counts(config, tasks, baselines=0)
    events = [{"event": "search_started", "selection": "halving",
               "rungs": [{"keep": r.keep, "items": sum(len(t.search) for t in r.cumulative)} for r in rungs]}]
    events += [{"event": "evaluated", "name": f"g1c{i}", "phase": "proxy", "t": float(i)} for i in range(8)]
    facts = progress_facts({"state": "running", "phase": "search", "generations": 3}, events, config.to_dict())
    assert facts["planned"] == evaluations == 3 * (8 + sum(r.keep for r in rungs))
    topk = progress_facts({"state": "running", "phase": "search", "generations": 3}, events[1:],
                          {"population": 8, "topk_full": 2})
    assert topk["planned"] == 3 * 10


def test_picking_the_rivals_in_the_page_sets_the_evolve_form_to_their_shipped_config():
    from ui.tabs.evolve import family_defaults

    rows, genome, method, use_mri = family_defaults("demo:rivals_father", "", "demo:rivals_mother", "")
    assert (genome, method, use_mri) == ("per-layer", "linear", True)
    used = rows[rows["weight"] > 0]["task"].tolist()
    assert sorted(used) == ["double", "shift"]
    untouched = family_defaults("demo:father", "", "demo:mother", "")
    assert all(type(value).__name__ == "skip" or value == {"__type__": "update"} for value in untouched), untouched
