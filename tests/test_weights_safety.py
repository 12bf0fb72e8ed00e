"""A parent's weights and config cannot be turned against the process that reads them (security issue 10, point 7).

Three claims: the weights Darwin reads are the weights transformers loads (safetensors, never a pickle slipped in
beside them); a safetensors header that lies about sizes or offsets is refused before anything is allocated;
a config.json whose sizes the weights do not hold is refused before a model is built from it. Lying files are
written by hand here (8-byte little-endian header length + JSON), as an attacker would.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from darwin_core.errors import DarwinError
from darwin_core.parents.hub import resolve_model
from darwin_core.io.tensors import TensorReader, read_safetensors_header, write_safetensors
from darwin_core.testing.fixtures import place_in_hf_cache


def _copy(fixture_model, tmp_path: Path, arch: str = "llama", **kwargs) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(fixture_model(arch, **kwargs), folder)
    return folder


def _zeros_like(folder: Path) -> list[tuple[str, torch.Tensor]]:
    with TensorReader(folder) as reader:
        return [(name, torch.zeros(reader.shape(name), dtype=reader.dtype(name))) for name in reader.names]


def _raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _embed_sum_as_transformers_loads_it(folder: Path) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return float(model.get_input_embeddings().weight.detach().abs().sum())


# -- 1. the weights read are the weights transformers loads -------------------------------------------------
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_unindexed_safetensors_shards_beside_a_bin_are_refused_because_transformers_would_load_the_bin(
        fixture_model, tmp_path, allow_pickle):
    folder = _copy(fixture_model, tmp_path, shards=2)
    (folder / "model.safetensors.index.json").rename(tmp_path / "index.json")
    torch.save(dict(_zeros_like(folder)), folder / "pytorch_model.bin")  # the zero .bin: a 0.0 father baseline
    with pytest.raises(DarwinError, match=r"m .*pytorch_model\.bin.*model\.safetensors\.index\.json"):
        TensorReader(folder, allow_pickle=allow_pickle)
    with pytest.raises(DarwinError, match=r"pytorch_model\.bin"):
        resolve_model(str(folder), local_mode=True, allow_pickle=allow_pickle)
    # With the index back, transformers and the reader both take the safetensors, and the .bin is ignored.
    (tmp_path / "index.json").rename(folder / "model.safetensors.index.json")
    reader = TensorReader(folder, allow_pickle=allow_pickle)
    assert reader.format == "safetensors" and all(f.endswith(".safetensors") for f in reader.files)
    embed = float(reader.get("model.embed_tokens.weight").abs().sum())
    assert embed > 0 and embed == pytest.approx(_embed_sum_as_transformers_loads_it(folder))


def test_the_reader_reads_model_safetensors_as_transformers_does_when_an_index_is_there_too(fixture_model,
                                                                                              tmp_path):
    folder = _copy(fixture_model, tmp_path, shards=2)
    write_safetensors(folder / "model.safetensors", _zeros_like(folder))
    reader = TensorReader(folder)
    assert reader.files == ["model.safetensors"]
    assert float(reader.get("model.embed_tokens.weight").abs().sum()) == _embed_sum_as_transformers_loads_it(folder)


def test_a_config_pointing_transformers_at_other_weights_is_refused(fixture_model, tmp_path):
    folder = _copy(fixture_model, tmp_path)
    write_safetensors(folder / "zeros.safetensors", [("model.norm.weight", torch.zeros(32))])
    _edit_config(folder, transformers_weights="zeros.safetensors")
    with pytest.raises(DarwinError, match=r"transformers_weights.*zeros\.safetensors"):
        resolve_model(str(folder), local_mode=True)


@pytest.mark.parametrize("shard", ["../other/model.safetensors", "/etc/model.safetensors", "sub/../../x.safetensors"])
def test_an_index_naming_a_shard_outside_the_model_folder_is_refused(fixture_model, tmp_path, shard):
    # In a shared Hub cache, "../" from one snapshot reaches another repo's (maybe gated) snapshot.
    other = _copy(fixture_model, tmp_path / "elsewhere")
    (tmp_path / "other").symlink_to(other)
    folder = tmp_path / "liar"
    folder.mkdir()
    with TensorReader(other) as reader:
        weight_map = {name: shard for name in reader.names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(DarwinError, match=r"model\.safetensors\.index\.json .*outside"):
        TensorReader(folder)


# -- 2. a lying safetensors header ---------------------------------------------------------------------------
_LIES = {
    # A [200000, 200000] F32 tensor (160 GB) in a file of a few hundred bytes.
    "huge shape": ({"w": {"dtype": "F32", "shape": [200000, 200000], "data_offsets": [0, 16]}}, r"\bw\b.*16 bytes"),
    "offsets overlap": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                         "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, r"\bb\b.*overlap"),
    "offsets backwards": ({"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, r"\bw\b.*offsets"),
    "negative offset": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-8, 8]}}, r"\bw\b.*offsets"),
    "negative dimension": ({"w": {"dtype": "F32", "shape": [-4, -1], "data_offsets": [0, 16]}}, r"\bw\b.*shape"),
    "unknown dtype": ({"w": {"dtype": "X99", "shape": [4], "data_offsets": [0, 16]}}, r"\bw\b.*X99"),
    "metadata not an object": ({"__metadata__": [1], "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                               r"__metadata__"),
}


@pytest.mark.parametrize("lie", list(_LIES))
def test_a_lying_safetensors_header_is_refused_in_one_sentence_before_any_tensor_is_allocated(tmp_path, lie):
    header, names = _LIES[lie]
    path = _raw_safetensors(tmp_path / "model.safetensors", header, bytes(1000))
    for read in (read_safetensors_header, TensorReader):
        with pytest.raises(DarwinError, match=r"^model\.safetensors .*" + names) as error:
            read(path)
        assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")


# -- 3. a config whose sizes the weights do not hold ---------------------------------------------------------
def _resolve(folder: Path, where: str, tmp_path: Path):
    if where == "local folder":
        return resolve_model(str(folder), local_mode=True)
    place_in_hf_cache(folder, "darwin-test/liar", tmp_path / "hub")
    return resolve_model("darwin-test/liar", local_mode=False, cache_dir=tmp_path / "hub")


@pytest.mark.parametrize("where", ["local folder", "cached snapshot"])
@pytest.mark.parametrize("key, value, says", [
    ("num_hidden_layers", 10**9, r"1000000000 layers.*4"),
    ("hidden_size", 10**6, r"hidden_size 1000000.*\[64, 32\]"),
    ("vocab_size", 10**9, r"vocab_size 1000000000.*\[64, 32\]"),
])
def test_a_config_claiming_sizes_the_weights_do_not_hold_is_refused(fixture_model, tmp_path, where, key, value,
                                                                     says):
    folder = _copy(fixture_model, tmp_path)
    assert _resolve(folder, where, tmp_path / "honest").num_layers == 4  # the honest config resolves
    _edit_config(folder, **{key: value})
    with pytest.raises(DarwinError, match=f"config.json.*{says}"):
        _resolve(folder, where, tmp_path)


def test_a_config_claiming_layers_beside_weights_without_layer_names_is_bounded_by_the_tensor_count(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", [("model.embed_tokens.weight", torch.zeros(8, 4))])
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4, "vocab_size": 8,
                                                    "num_hidden_layers": 10**9}))
    with pytest.raises(DarwinError, match=r"1000000000 layers"):
        resolve_model(str(folder), local_mode=True)


def test_an_oversized_config_json_is_refused_without_being_parsed(fixture_model, tmp_path):
    folder = _copy(fixture_model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["padding"] = "x" * (17 * 2**20)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DarwinError, match=r"config\.json .*too large"):
        resolve_model(str(folder), local_mode=True)


def test_a_hub_config_claiming_layers_its_weights_do_not_hold_is_refused_online_before_download(read_hub, fixture_model, tmp_path):
    import json
    import shutil

    from darwin_core.parents.hub import resolve_model

    folder = tmp_path / "liar"
    shutil.copytree(fixture_model("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 10**9
    (folder / "config.json").write_text(json.dumps(config))
    read_hub.add("darwin-test/liar", folder)
    with pytest.raises(DarwinError) as refused:
        resolve_model("darwin-test/liar", local_mode=False, token=None, cache_dir=tmp_path / "cache")
    assert "\n" not in str(refused.value) and "layer" in str(refused.value)
    assert not any(p.suffix == ".safetensors" for p in (tmp_path / "cache").rglob("*"))  # no weight was fetched
