"""ModelRef resolution (local, offline cache, a Hub over HTTP), bad-input sentences, and parent compatibility."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from darwin_core.errors import DarwinError
from darwin_core.parents.hub import (
    LOCAL_REFUSED,
    ModelRef,
    compatibility,
    download,
    download_patterns,
    parse_ref,
    resolve_model,
)
from darwin_core.io.tensors import TensorReader
from darwin_core.testing.fixtures import place_in_hf_cache


def _pickle_only_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                    "hidden_size": 4, "num_hidden_layers": 1}))
    torch.save({"model.embed_tokens.weight": torch.zeros(8, 4)}, folder / "pytorch_model.bin")
    return folder


# -- what a user may type ------------------------------------------------------------------------------------
def test_hub_ids_and_revisions_are_parsed():
    assert parse_ref("Qwen/Qwen3.5-27B", local_mode=False) == ("hub", "Qwen/Qwen3.5-27B", None)
    assert parse_ref(" google/gemma-4-E4B-it@main ", local_mode=False) == ("hub", "google/gemma-4-E4B-it", "main")
    assert parse_ref("gpt2@refs/pr/1", local_mode=False) == ("hub", "gpt2", "refs/pr/1")


@pytest.mark.parametrize("ref", ["/models/child", "./child", "../child", "~/child", "runs/abc/child", "C:\\m"])
def test_local_paths_are_refused_unless_darwin_runs_locally(ref):
    with pytest.raises(DarwinError) as error:
        resolve_model(ref, local_mode=False)
    assert str(error.value) == LOCAL_REFUSED == "Local paths are only accepted when Darwin runs locally."


@pytest.mark.parametrize("ref", ["", "org/na me", "org/name@", "org/..", "-org/name"])
def test_malformed_refs_get_one_sentence(ref):
    with pytest.raises(DarwinError, match=r"^(Give a model|.* is not a Hub model id)"):
        parse_ref(ref, local_mode=False)


# -- local folders ---------------------------------------------------------------------------------------------
def test_a_local_fixture_resolves_with_shapes_and_sizes_from_headers(fixture_model):
    folder = fixture_model("qwen3_5_text", shards=2)
    ref = resolve_model(str(folder), local_mode=True)
    reader = TensorReader(folder)
    assert ref.local and ref.folder == folder.resolve()
    assert ref.tensors == {n: (reader.shape(n), reader.info(n).dtype) for n in reader.names}
    assert ref.parameters == reader.parameter_count and ref.bytes == reader.total_bytes
    assert ref.architecture == "Qwen3_5ForCausalLM" and ref.text_model_type == "qwen3_5_text"
    assert ref.hidden_size == 32 and ref.num_layers == 4 and ref.weight_files == reader.files


def test_a_local_folder_without_config_or_with_pickle_weights_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DarwinError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"), local_mode=True)
    with pytest.raises(DarwinError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), local_mode=True)
    pickled = _pickle_only_model(tmp_path / "pickled")
    with pytest.raises(DarwinError, match=r"only pickle weights \(\.bin\)"):
        resolve_model(str(pickled), local_mode=True)
    ref = resolve_model(str(pickled), local_mode=True, allow_pickle=True)
    assert ref.weights_format == "pickle" and ref.tensors == {"model.embed_tokens.weight": ((8, 4), "F32")}


def test_a_local_model_card_license_is_read(fixture_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_model("llama"), folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [merge]\n---\n# A child\n")
    assert resolve_model(str(folder), local_mode=True).license == "apache-2.0"


# -- the offline Hub cache -----------------------------------------------------------------------------------
def test_a_cached_repo_resolves_offline(fixture_model, tmp_path):
    cache = tmp_path / "hub"
    snapshot = place_in_hf_cache(fixture_model("gemma4_text", shards=3), "darwin-test/tiny-gemma4", cache)
    ref = resolve_model("darwin-test/tiny-gemma4", local_mode=False, cache_dir=cache)
    assert not ref.local and ref.commit == snapshot.name and ref.folder == snapshot
    assert ref.tensors == resolve_model(str(snapshot), local_mode=True).tensors
    assert len(ref.weight_files) == 3
    pinned = resolve_model(f"darwin-test/tiny-gemma4@{snapshot.name}", local_mode=False, cache_dir=cache)
    assert pinned.revision == snapshot.name and pinned.tensors == ref.tensors
    downloaded = download(ref, cache_dir=cache)  # offline: the cached snapshot is the download
    assert downloaded.folder == snapshot and downloaded.tensors == ref.tensors


def test_an_unknown_repo_offline_gets_one_sentence(tmp_path):
    with pytest.raises(DarwinError) as error:
        resolve_model("darwin-test/never-cached", local_mode=False, cache_dir=tmp_path)
    assert str(error.value) == "darwin-test/never-cached is not in the local cache and the Hub cannot be reached (offline)."


def test_a_cached_repo_with_a_missing_shard_names_it(fixture_model, tmp_path):
    cache = tmp_path / "hub"
    snapshot = place_in_hf_cache(fixture_model("llama", shards=3), "darwin-test/tiny-llama", cache)
    (snapshot / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(DarwinError, match="model-00003-of-00003.safetensors"):
        resolve_model("darwin-test/tiny-llama", local_mode=False, cache_dir=cache)


def test_a_cached_pickle_only_repo_is_refused(tmp_path):
    cache = tmp_path / "hub"
    place_in_hf_cache(_pickle_only_model(tmp_path / "pickled"), "darwin-test/pickled", cache)
    with pytest.raises(DarwinError, match="darwin-test/pickled has only pickle weights"):
        resolve_model("darwin-test/pickled", local_mode=False, cache_dir=cache)


# -- a Hub over HTTP (tests/readhub.py; the `read_hub` fixture is in conftest.py) ----------------------------
def test_online_resolution_reads_shapes_from_shard_headers_without_downloading_weights(read_hub, fixture_model,
                                                                                        tmp_path):
    folder = fixture_model("qwen3_moe", shards=2)
    sha = read_hub.add("darwin-test/moe", folder)
    ref = resolve_model("darwin-test/moe", local_mode=False, cache_dir=tmp_path / "cache")
    local = resolve_model(str(folder), local_mode=True)
    assert ref.tensors == local.tensors and ref.parameters == local.parameters and ref.bytes == local.bytes
    assert ref.commit == sha and ref.license == "apache-2.0" and ref.gated is False
    assert sorted(ref.weight_files) == sorted(local.weight_files)
    cached = list((tmp_path / "cache").rglob("*.safetensors")) + list((tmp_path / "default-cache").rglob("*.safetensors"))
    assert cached == []  # only headers were read (range requests), no weight file was downloaded
    assert set(read_hub.auth_seen) == {None}  # anonymous: the server's own HF_TOKEN was not used


def test_download_fetches_only_what_breeding_needs(read_hub, fixture_model, tmp_path):
    folder = fixture_model("llama")
    read_hub.add("darwin-test/llama", folder, extra={"consolidated.safetensors": b"x" * 64,
                                                     "training_args.bin": b"pickle", "README.md": b"# card"})
    ref = resolve_model("darwin-test/llama", local_mode=False, token="hf_visitor", cache_dir=tmp_path / "cache")
    assert "consolidated.safetensors" not in download_patterns(ref)
    got = download(ref, token="hf_visitor", cache_dir=tmp_path / "cache")
    names = sorted(p.name for p in got.folder.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert "consolidated.safetensors" not in names and "training_args.bin" not in names
    assert got.tensors == ref.tensors
    assert set(read_hub.auth_seen) == {"Bearer hf_visitor"}  # the visitor's token, explicitly, every time


def test_a_gated_parent_downloaded_with_a_token_is_read_later_without_one_when_pinned(read_hub, fixture_model, tmp_path):
    """The page downloads a gated parent with the visitor's token; the run's worker (no token) reads it pinned."""
    read_hub.add("darwin-test/gated-llama", fixture_model("llama"), gated=True)
    cache = tmp_path / "cache"
    ref = resolve_model("darwin-test/gated-llama", local_mode=False, token="hf_granted", cache_dir=cache)
    assert ref.gated == "manual"
    got = download(ref, token="hf_granted", cache_dir=cache)
    read_hub.auth_seen.clear()
    pinned = resolve_model(f"darwin-test/gated-llama@{got.commit}", local_mode=False, cache_dir=cache, check_access=False)
    assert pinned.folder == got.folder and pinned.tensors == got.tensors and pinned.commit == got.commit
    assert read_hub.auth_seen == []  # the worker's cached commit needs no Hub call at all
    with pytest.raises(DarwinError, match="is gated"):  # anyone else asking for the cached commit is checked first
        resolve_model(f"darwin-test/gated-llama@{got.commit}", local_mode=False, cache_dir=cache)
    granted = resolve_model(f"darwin-test/gated-llama@{got.commit}", local_mode=False, cache_dir=cache, token="hf_granted")
    assert granted.folder == got.folder
    with pytest.raises(DarwinError, match="is gated"):  # unpinned, it still asks the Hub, which refuses
        download(resolve_model("darwin-test/gated-llama", local_mode=False, cache_dir=tmp_path / "other"),
                 cache_dir=tmp_path / "other")


def test_hub_failures_become_one_sentence_each(read_hub, tmp_path):
    read_hub.add("darwin-test/gated", extra={"config.json": b"{}", "model.safetensors": b""}, gated=True)
    read_hub.add("darwin-test/pickled", extra={"config.json": b"{}", "pytorch_model.bin": b"pickle"})
    read_hub.add("darwin-test/no-weights", extra={"config.json": b"{}", "README.md": b"hi"})
    read_hub.add("darwin-test/no-config", extra={"model.safetensors": b""})
    cache = tmp_path / "cache"
    cases = {
        "darwin-test/missing": "darwin-test/missing was not found on the Hub (if it is private, sign in or set HF_TOKEN).",
        "darwin-test/gated": "darwin-test/gated is gated: accept its conditions on huggingface.co/darwin-test/gated "
                             "and sign in with an account that has access.",
        "darwin-test/pickled@v9": "Revision v9 does not exist in darwin-test/pickled.",
        "darwin-test/pickled": "darwin-test/pickled has only pickle weights (.bin), which can run code when loaded; "
                               "use a safetensors version or explicitly allow pickle weights.",
        "darwin-test/no-weights": "darwin-test/no-weights has no safetensors weights (model.safetensors or an index) "
                                  "at its root.",
        "darwin-test/no-config": "darwin-test/no-config has no config.json, so it is not a transformers model.",
    }
    for ref, sentence in cases.items():
        with pytest.raises(DarwinError) as error:
            resolve_model(ref, local_mode=False, cache_dir=cache)
        assert str(error.value) == sentence
    with pytest.raises(DarwinError) as error:
        resolve_model("darwin-test/missing", local_mode=False, token="hf_visitor_secret", cache_dir=cache)
    assert str(error.value) == "darwin-test/missing was not found on the Hub, or your token has no access to it."
    assert "hf_visitor_secret" not in str(error.value)


# -- compatibility ---------------------------------------------------------------------------------------------
def _ref(fixture_model, arch: str, **kwargs) -> ModelRef:
    return resolve_model(str(fixture_model(arch, **kwargs)), local_mode=True)


def _reshaped(ref: ModelRef, name_filter, new_shape) -> ModelRef:
    tensors = {n: (new_shape(s) if name_filter(n) else s, d) for n, (s, d) in ref.tensors.items()}
    return dataclasses.replace(ref, id=ref.id + "-variant", tensors=tensors)


def test_two_parents_of_the_same_architecture_are_fully_compatible(fixture_pair, fixture_model):
    father, mother = (resolve_model(str(p), local_mode=True) for p in fixture_pair("qwen3_5_moe_text"))
    result = compatibility(father, mother)
    assert result.verdict == "full" and result.differing == []
    assert "qwen3_5_moe_text" in result.reason
    sharded = _ref(fixture_model, "qwen3_5_moe_text", shards=3)  # sharding does not matter
    assert compatibility(father, sharded).verdict == "full"


def test_a_multimodal_checkpoint_and_its_text_only_sibling_pair_by_canonical_name(fixture_model):
    """Their language tensors match only once the wrapper prefix is stripped: the verdict says so and breeds them."""
    text = _ref(fixture_model, "gemma4_text")
    wrapped = {("lm_head.weight" if n == "lm_head.weight" else "model.language_model." + n.removeprefix("model.")): v
               for n, v in text.tensors.items()}
    wrapped["model.vision_tower.encoder.layers.0.mlp.fc1.weight"] = ((8, 8), "BF16")
    config = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
              "text_config": text.config, "vision_config": {"hidden_size": 8}}
    multimodal = dataclasses.replace(text, id="mm", tensors=wrapped, config=config)
    result = compatibility(multimodal, text)
    assert result.verdict == "wrapper" and result.breedable and result.refusal is None
    assert "(model.language_model.embed_tokens.weight in mm" in result.reason
    assert "the child keeps the father's naming" in result.reason
    assert compatibility(multimodal, multimodal).verdict == "full"  # the same wrapper on both sides is bred


def test_qwen3_and_llama_with_the_same_hidden_size_breed_their_ffns_only(fixture_model):
    """Decision: equal shapes across families are not 'full' (Qwen3's attention has q/k norms): only the FFNs are
    bred and the attention stays the father's, which the reason says."""
    result = compatibility(_ref(fixture_model, "qwen3"), _ref(fixture_model, "llama"))
    assert result.verdict == "ffn_only" and result.breedable and result.refusal is None
    assert "mlp.down_proj.weight" in result.reason and "qwen3 vs llama" in result.reason
    assert "attention stays the father's" in result.reason
    assert any("q_norm" in name for name in result.differing)


def test_the_seeds_cross_architecture_pair_gemma4_and_qwen3_5_is_ffn_only(fixture_model):
    result = compatibility(_ref(fixture_model, "gemma4_text"), _ref(fixture_model, "qwen3_5_text"))
    assert result.verdict == "ffn_only" and "attention stays the father's" in result.reason


def test_a_different_hidden_size_is_incompatible_and_names_a_tensor(fixture_model):
    llama = _ref(fixture_model, "llama")
    wider = _reshaped(llama, lambda n: True, lambda s: tuple(48 if d == 32 else d for d in s))
    wider.config = {**llama.config, "hidden_size": 48}
    result = compatibility(llama, wider)
    assert result.verdict == "incompatible"
    assert result.reason.startswith("The hidden sizes differ (32 vs 48), so no weight can be blended; tensor ")
    assert re.search(r"tensor \S+ has shape \[\d+, 32\] in .* but \[\d+, 48\] in ", result.reason)
    assert "model.embed_tokens.weight" in result.differing


def test_a_vocabulary_mismatch_is_breedable_with_a_tokenizer_source(fixture_model):
    llama = _ref(fixture_model, "llama")
    bigger = _reshaped(llama, lambda n: n in ("model.embed_tokens.weight", "lm_head.weight"),
                       lambda s: (80, *s[1:]))
    bigger.config = {**llama.config, "vocab_size": 80}
    result = compatibility(llama, bigger)
    assert result.verdict == "full" and result.vocab_sizes == (64, 80)
    assert result.reason.endswith("whose vocabularies differ in size (64 vs 80 rows): their rows are aligned by "
                                  "token, and the child gets the father's tokenizer unless the recipe sets "
                                  "tokenizer_source: mother or union.")
    assert set(result.differing) == {"model.embed_tokens.weight", "lm_head.weight"}


def test_a_vocabulary_mismatch_with_another_hidden_size_is_still_refused(fixture_model):
    llama = _ref(fixture_model, "llama")
    other = _reshaped(llama, lambda n: True, lambda s: tuple(48 if d == 32 else 80 if d == 64 else d for d in s))
    other.config = {**llama.config, "vocab_size": 80, "hidden_size": 48}
    result = compatibility(llama, other)
    assert result.verdict == "incompatible" and result.reason.startswith("The hidden sizes differ (32 vs 48)")


def test_a_shape_mismatch_names_the_tensor(fixture_model):
    llama = _ref(fixture_model, "llama")
    odd = _reshaped(llama, lambda n: n == "model.layers.2.mlp.up_proj.weight", lambda s: (96, s[1]))
    result = compatibility(llama, odd)
    assert result.verdict == "incompatible"
    assert result.reason.startswith("Tensor model.layers.2.mlp.up_proj.weight has shape [64, 32] in ")
    assert result.differing == ["model.layers.2.mlp.up_proj.weight"]


def test_families_without_a_shared_ffn_tensor_are_incompatible(fixture_model):
    result = compatibility(_ref(fixture_model, "mixtral"), _ref(fixture_model, "phi3"))
    assert result.verdict == "incompatible" and "feed-forward" in result.reason


def test_search_suggests_matching_repo_ids_online_and_nothing_offline(read_hub, fixture_model, monkeypatch):
    from huggingface_hub import constants

    from darwin_core.parents.hub import search_models

    for name in ("darwin-test/tiny-llama", "darwin-test/llama-chat", "darwin-test/qwen"):
        read_hub.add(name, extra={"config.json": b"{}"})
    assert search_models("llama") == ["darwin-test/llama-chat", "darwin-test/tiny-llama"]
    assert search_models("llama", limit=1) == ["darwin-test/llama-chat"]
    assert search_models("l") == [] and search_models("./llama") == []  # too short, or a local path
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert search_models("qwen") == []  # the Hub does not answer: no suggestions, no error
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert search_models("qwen") == []
