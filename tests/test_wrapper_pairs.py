"""A multimodal checkpoint and its text-only sibling (issue 12, part 2): language tensors paired by canonical name,
the child in the father's naming, his vision tower untouched, loading with his model class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from darwin_core.merge.disk import merge_to_disk
from darwin_core.merge.pairing import pairing_for_folders
from darwin_core.parents.anatomy import canonical_name, classify
from darwin_core.parents.compatibility import Verdict, check_breedable, compatibility
from darwin_core.parents.hub import resolve_model
from darwin_core.recipe import Recipe
from darwin_core.testing.fixtures import write_tiny_model, write_tiny_multimodal


@pytest.fixture(scope="module")
def wrapper_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wrapper")
    return write_tiny_multimodal(root / "multimodal", seed=0), write_tiny_model("gemma3_text", root / "text", seed=1)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_a_multimodal_checkpoint_and_its_text_only_sibling_are_breedable_by_canonical_name(wrapper_pair):
    father, mother = (resolve_model(str(p), local_mode=True) for p in wrapper_pair)
    result = compatibility(father, mother)
    assert result.verdict is Verdict.WRAPPER and result.breedable
    assert "multimodal wrapper prefix" in result.reason and "vision and audio towers" in result.reason
    check_breedable(father, mother)
    pairing = pairing_for_folders(*wrapper_pair)
    assert pairing.mode == "canonical"
    assert pairing.mother_name("language_model.model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert pairing.mother_name("vision_tower.embeddings.patch_embedding.weight") is None


@pytest.mark.parametrize("direction", ["multimodal-father", "text-father"])
def test_the_wrapper_child_is_written_in_the_fathers_naming_with_his_vision_tower_untouched(
        direction, wrapper_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    father_dir, mother_dir = wrapper_pair if direction == "multimodal-father" else wrapper_pair[::-1]
    child_dir = merge_to_disk(Recipe(father=father_dir, mother=mother_dir, ratios=0.25), tmp_path / "child")
    father, mother, child = _tensors(father_dir), _tensors(mother_dir), _tensors(child_dir)
    assert list(child) == list(father)
    by_canonical = {canonical_name(name): tensor for name, tensor in mother.items()}
    for name, tensor in child.items():
        if classify(name).tower != "language":
            assert torch.equal(tensor, father[name]), name  # the vision tower and projector: the father's bytes
        else:
            torch.testing.assert_close(tensor, 0.75 * father[name] + 0.25 * by_canonical[canonical_name(name)],
                                       rtol=0, atol=1e-6)
    model = AutoModelForCausalLM.from_pretrained(child_dir)
    expected = "Gemma3ForConditionalGeneration" if direction == "multimodal-father" else "Gemma3ForCausalLM"
    assert type(model).__name__ == expected
    assert model.generate(torch.tensor([[1, 8, 9]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_the_resident_child_writes_the_text_only_mother_into_the_multimodal_father(wrapper_pair):
    from darwin_core.evolution.child import ResidentChild

    child = ResidentChild(*wrapper_pair, device="cpu")
    child.load_parent("mother")
    mother = {canonical_name(n): t for n, t in _tensors(wrapper_pair[1]).items()}
    father = _tensors(wrapper_pair[0])
    state = child.model.state_dict()
    written = dict(zip(child.plan.direct.keys(), child.plan.direct.values()))
    for name in child.names:
        target = state[written.get(name, name)]
        expected = father[name] if classify(name).tower != "language" else mother[canonical_name(name)]
        assert torch.equal(target, expected), name
