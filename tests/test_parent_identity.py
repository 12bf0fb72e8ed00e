"""Parents identified by content (issue 12, part 4): a local folder enters the recipe hash, hence the DARE masks,
by the sha256 of its weight files, never by its name or place; Hub parents by commit; demo:/run: by name."""

from __future__ import annotations

import shutil

import pytest

from darwin_core.errors import DarwinError
from darwin_core.io.hashes import sha256_file
from darwin_core.merge.disk import merge_to_disk
from darwin_core.recipe import ParentRef, Recipe
from darwin_core.recipe.refs import weights_sha256

DARE = dict(method="dare_linear", ratios=0.5, densities=(0.5, 0.5), seed=7)


def test_renaming_and_moving_a_parent_folder_leaves_a_dare_childs_sha256_unchanged(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama", related=True)
    here = [shutil.copytree(p, tmp_path / "first" / name) for p, name in ((father, "father"), (mother, "mother"))]
    moved = [shutil.copytree(p, tmp_path / "elsewhere" / "deeper" / name)
             for p, name in ((father, "papa-renamed"), (mother, "mama-renamed"))]
    recipes = [Recipe(father=pair[0], mother=pair[1], **DARE) for pair in (here, moved)]
    assert recipes[0].recipe_hash == recipes[1].recipe_hash
    assert recipes[0].mask_seed("model.layers.0.mlp.up_proj.weight", "mother") == \
        recipes[1].mask_seed("model.layers.0.mlp.up_proj.weight", "mother")
    children = [merge_to_disk(recipe, tmp_path / f"child-{i}") for i, recipe in enumerate(recipes)]
    assert sha256_file(children[0] / "model.safetensors") == sha256_file(children[1] / "model.safetensors")


def test_a_local_parent_is_named_in_the_hash_by_its_weights_not_its_folder(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama")
    ref = ParentRef.of(father)
    assert ref.sha256 == weights_sha256(father) and ref.identity() == {"sha256": ref.sha256}
    other = Recipe(father=ParentRef.of(mother), mother=mother, **DARE)
    assert other.recipe_hash != Recipe(father=father, mother=mother, **DARE).recipe_hash  # other weights, other hash
    assert Recipe.from_yaml(Recipe(father=father, mother=mother, **DARE).public().to_yaml()).recipe_hash == \
        Recipe(father=father, mother=mother, **DARE).recipe_hash  # the published recipe keeps the digest


def test_hub_and_demo_and_run_parents_keep_their_names_in_the_hash():
    assert ParentRef("org/a", "1" * 40).identity() == {"id": "org/a", "revision": "1" * 40}
    assert ParentRef("demo:father", None, "/zoo/father", "ab" * 32).identity() == {"id": "demo:father", "revision": None}
    assert ParentRef("run:20260101-x").identity() == {"id": "run:20260101-x", "revision": None}


def test_a_folder_whose_weights_changed_is_refused_before_merging(fixture_pair, tmp_path):
    father, mother = fixture_pair("llama")
    copy = shutil.copytree(father, tmp_path / "father")
    recipe = Recipe(father=copy, mother=mother, ratios=0.5)
    shutil.copyfile(mother / "model.safetensors", copy / "model.safetensors")
    with pytest.raises(DarwinError, match="holds other weights than the recipe names"):
        merge_to_disk(recipe, tmp_path / "child")
    assert not (tmp_path / "child").exists()
