"""The card carries both parents, the relation, the license decision and only the numbers it is given."""

from __future__ import annotations

from huggingface_hub import ModelCard

from darwin_core.publishing.card import CardInputs, HeldoutRow, build_card, resolve_license


def _inputs(**overrides) -> CardInputs:
    values = dict(
        father="org/father", mother="org/mother", recipe_yaml="method: linear\n", recipe_hash="abc123",
        method="linear", father_license="apache-2.0", mother_license="apache-2.0", repo_id="me/child",
        heldout=[HeldoutRow("reverse", 200, 0.815, 0.6, 0.42, (0.14, 0.29), (0.31, 0.48), 0.00012, 1.5e-9)],
        health_verdict="healthy", genome=[("global_ratio", 0.4989)], genome_space="darwin-v6",
    )
    values.update(overrides)
    return CardInputs(**values)


def test_card_metadata_names_both_parents_as_a_merge() -> None:
    card, warnings = build_card(_inputs())
    parsed = ModelCard(str(card))
    meta = parsed.data.to_dict()
    assert meta["base_model"] == ["org/father", "org/mother"]
    assert meta["base_model_relation"] == "merge"
    assert meta["license"] == "apache-2.0"
    assert {"merge", "evolutionary-merge", "darwin"} <= set(meta["tags"])
    assert meta["library_name"] == "transformers"
    assert warnings == []


def test_card_shows_the_measured_numbers_it_was_given_and_no_others() -> None:
    text = str(build_card(_inputs())[0])
    assert "| reverse | 200 | 81.5 | 60.0 | 42.0 | 21.5 [14.0, 29.0] | 0.00012 |" in text
    assert "0.4989" in text and "healthy" in text and "abc123" in text
    empty = str(build_card(_inputs(heldout=[], health_verdict=None, genome=[]))[0])
    assert "No held-out evaluation was recorded" in empty and "No health check was run" in empty
    assert "81.5" not in empty


def test_differing_licenses_give_other_and_a_warning() -> None:
    license_id, warnings = resolve_license("apache-2.0", "llama3")
    assert license_id == "other" and "differ" in warnings[0]
    card, card_warnings = build_card(_inputs(mother_license="llama3"))
    assert card.data.to_dict()["license"] == "other"
    assert "differ" in str(card) and card_warnings


def test_parents_that_are_not_hub_repos_stay_out_of_base_model() -> None:
    card, _ = build_card(_inputs(father="demo:father", mother="org/mother"))
    assert card.data.to_dict()["base_model"] == ["org/mother"]
    assert "`demo:father`" in str(card)


def test_a_child_that_is_a_reference_recipe_says_so() -> None:
    text = str(build_card(_inputs(search_best=0.915, reference_child="mri"))[0])
    assert "No candidate of the search beat the `mri` reference recipe on the search split" in text
    assert "reference recipe" not in str(build_card(_inputs(search_best=0.915))[0])


def test_genome_dimensions_without_effect_are_counted_not_named() -> None:
    text = str(build_card(_inputs(genome=[("global_ratio", 0.4989)], genome_hidden=2))[0])
    assert "| global_ratio | 0.4989 |" in text
    assert "2 more dimensions of this genome have no effect on this child's weights" in text
    assert "more dimensions" not in str(build_card(_inputs())[0])
