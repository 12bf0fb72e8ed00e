"""Parents whose vocabularies differ breed as mergekit 0.1.5 breeds them with `tokenizer_source`.

The pair: a tiny Llama father (56 tokens, 64 embedding rows) and a fine-tune that added two chat tokens and
resized its embedding and head to 58 rows. A linear 50/50 merge of the aligned tensors (Darwin's vocabulary plan,
then Darwin's linear kernel) must equal mergekit's output (`run_merge`, the function behind `mergekit-yaml`) for
the same config with `tokenizer_source: base`, `union` and the mother's path.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from darwin_core.merge.methods.linear import linear
from darwin_core.merge.methods.registry import TensorParams
from darwin_core.merge.vocabulary import (TokenizerSource, is_vocabulary_tensor, plan_vocabulary,
                                          write_child_tokenizer)
from darwin_core.io.tensors import TensorReader
from darwin_core.testing.fixtures import write_tiny_model
from darwin_core.testing.tokenizer_fixtures import CHAT_TOKENS, write_chat_mother, write_padded_mother

pytest.importorskip("mergekit")

VOCABULARY_NAMES = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def chat_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-pair")
    father = write_tiny_model("llama", root / "father", seed=0)
    return father, write_chat_mother(father, root / "mother")


def mergekit_child(father, mother, source: str, out_dir) -> TensorReader:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    # base_model names the father: without it mergekit's "base" is the first of a set of models, in hash order
    config = {"merge_method": "linear", "dtype": "float32", "tokenizer_source": source, "base_model": str(father),
              "models": [{"model": str(father), "parameters": {"weight": 0.5}},
                         {"model": str(mother), "parameters": {"weight": 0.5}}]}
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(config))), str(out_dir),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    return TensorReader(out_dir)


def darwin_aligned_merge(plan, father, mother, name: str) -> torch.Tensor:
    father_aligned, mother_aligned = plan.align(TensorReader(father).get(name), TensorReader(mother).get(name))
    return linear(father_aligned, mother_aligned, None, TensorParams(ratio=0.5))


@pytest.mark.parametrize("source", list(TokenizerSource))
def test_aligned_embedding_and_head_equal_mergekits_tokenizer_source_merge(chat_pair, tmp_path, source):
    father, mother = chat_pair
    plan = plan_vocabulary(father, mother, source)
    theirs = mergekit_child(father, mother, source.mergekit_value(str(mother)), tmp_path / "mk")
    for name in VOCABULARY_NAMES:
        ours = darwin_aligned_merge(plan, father, mother, name)
        assert ours.shape == theirs.get(name).shape, name
        assert torch.equal(ours, theirs.get(name)), name
    config = json.loads((tmp_path / "mk" / "config.json").read_text())
    assert config["vocab_size"] == plan.child_vocab_size
    assert plan.child_config(json.loads((father / "config.json").read_text()))["vocab_size"] == config["vocab_size"]
    mergekit_vocab = json.loads((tmp_path / "mk" / "tokenizer.json").read_text())
    write_child_tokenizer(plan, tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"] == mergekit_vocab["added_tokens"]


def test_a_token_only_the_mother_has_keeps_her_row_in_the_union_child(chat_pair):
    father, mother = chat_pair
    plan = plan_vocabulary(father, mother, TokenizerSource.UNION)
    assert plan.tokens[-2:] == CHAT_TOKENS and plan.child_vocab_size == 58
    merged = darwin_aligned_merge(plan, father, mother, "model.embed_tokens.weight")
    mother_rows = TensorReader(mother).get("model.embed_tokens.weight")
    assert torch.equal(merged[-2:], mother_rows[-2:])


def test_the_mother_source_breeds_in_her_vocabulary_with_her_chat_template(chat_pair, tmp_path):
    from transformers import AutoTokenizer

    father, mother = chat_pair
    plan = plan_vocabulary(father, mother, "mother")
    assert plan.tokens[-2:] == CHAT_TOKENS and plan.child_vocab_size == 58
    merged = darwin_aligned_merge(plan, father, mother, "lm_head.weight")
    father_head, mother_head = TensorReader(father).get("lm_head.weight"), TensorReader(mother).get("lm_head.weight")
    assert torch.equal(merged[:56], linear(father_head[:56], mother_head[:56], None, TensorParams(ratio=0.5)))
    assert torch.equal(merged[56:], mother_head[56:])
    write_child_tokenizer(plan, tmp_path)
    child = AutoTokenizer.from_pretrained(tmp_path)
    assert child.chat_template == AutoTokenizer.from_pretrained(mother).chat_template
    assert len(child) == 58


def test_identical_vocabularies_need_no_plan(tmp_path):
    father = write_tiny_model("llama", tmp_path / "father", seed=0)
    mother = write_tiny_model("llama", tmp_path / "mother", seed=1)
    assert all(plan_vocabulary(father, mother, source) is None for source in TokenizerSource)


def test_a_padded_mother_aligns_to_the_tokenizers_rows(tmp_path):
    father = write_tiny_model("llama", tmp_path / "father", seed=0)
    mother = write_padded_mother(father, tmp_path / "mother", vocab_size=128)
    plan = plan_vocabulary(father, mother, "father")
    assert plan.child_vocab_size == 56 and plan.father_rows == plan.mother_rows == tuple(range(56))


def test_only_embedding_and_head_tensors_are_vocabulary_tensors():
    assert all(is_vocabulary_tensor(n) for n in (*VOCABULARY_NAMES, "model.language_model.embed_tokens.weight",
                                                  "model.embed_tokens_per_layer.weight", "lm_head.bias"))
    assert not any(is_vocabulary_tensor(n) for n in ("model.norm.weight", "model.layers.0.mlp.up_proj.weight",
                                                      "model.vision_tower.embeddings.patch_embedding.weight"))


def test_the_merge_path_reading_aligned_sources_gives_mergekits_tensors(chat_pair, tmp_path):
    from darwin_core.merge.methods.apply import merge_tensors
    from darwin_core.merge.vocabulary import AlignedSources
    from darwin_core.recipe import Recipe

    father, mother = chat_pair
    plan = plan_vocabulary(father, mother, "union")
    pair = AlignedSources(plan, TensorReader(father), TensorReader(mother))
    recipe = Recipe(father=father, mother=mother, method="linear", ratios=0.5)
    child = dict(merge_tensors(recipe, pair.father, pair.mother))
    theirs = mergekit_child(father, mother, "union", tmp_path / "mk")
    assert set(child) == set(theirs.names)
    assert all(torch.equal(child[name], theirs.get(name)) for name in theirs.names)
    assert pair.father.shape("lm_head.weight") == (58, 32)


def test_the_child_config_takes_the_child_vocab_size_wherever_the_vocabulary_size_lives(chat_pair, tmp_path):
    father, mother = chat_pair
    plan = plan_vocabulary(father, mother, "mother")
    wrapper = {"model_type": "gemma3", "text_config": {"vocab_size": 64, "vocab_size_per_layer_input": 64,
                                                       "eos_token_id": 2}}
    mother_config = {"text_config": {"eos_token_id": 57}}
    child = plan.child_config(wrapper, mother_config)["text_config"]
    assert child == {"vocab_size": 58, "vocab_size_per_layer_input": 58, "eos_token_id": 57}
    written = {path.name for path in write_child_tokenizer(plan, tmp_path)}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= written
    assert (tmp_path / "generation_config.json").read_bytes() == (mother / "generation_config.json").read_bytes()
