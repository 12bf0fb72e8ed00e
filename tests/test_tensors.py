"""Lazy reading and crash-safe writing of model weights (darwin_core.io.tensors)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from darwin_core.errors import DarwinError
from darwin_core.io.tensors import (
    ShardedWriter,
    TensorReader,
    clean_stale_partials,
    read_safetensors_header,
    sha256_of_files,
    write_safetensors,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(16, 8, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "model.layers.0.mlp.up_proj.weight": torch.randn(12, 8, generator=g).to(torch.float16),
        "model.layers.0.layer_scalar": torch.tensor(0.5),
        "model.layers.0.mask": torch.tensor([True, False, True]),
        "model.layers.0.positions": torch.arange(5, dtype=torch.int64),
        "model.empty": torch.zeros(0, 4),
    }


def _names_per_file(folder: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            out[path.name] = sorted(handle.keys())
    return out


# -- writer ----------------------------------------------------------------------------------------------------
def test_a_single_shard_model_is_written_as_model_safetensors_and_reads_back_bit_exact(tmp_path):
    tensors = _tensors()
    out = tmp_path / "child"
    with ShardedWriter(out) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor)
        writer.write_text("recipe.yaml", "method: linear\n")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "recipe.yaml"]
    loaded = load_file(out / "model.safetensors")  # the reference library reads it
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    assert [p.name for p in tmp_path.iterdir()] == ["child"]  # no temp folder left beside it


def test_our_safetensors_bytes_equal_the_safetensors_library_for_the_same_order(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "theirs.safetensors", metadata={"format": "pt"})
    order = list(read_safetensors_header(tmp_path / "theirs.safetensors")[0])  # the library's storage order
    write_safetensors(tmp_path / "ours.safetensors", [(n, tensors[n]) for n in order], {"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()


def test_shards_follow_the_add_order_and_the_index_has_total_size_and_weight_map(tmp_path):
    tensors = {f"layers.{i}.w": torch.full((10, 10), float(i)) for i in range(7)}  # 400 bytes each
    out = tmp_path / "child"
    with ShardedWriter(out, max_shard_bytes=1000) as writer:  # 2 tensors per shard
        for name, tensor in tensors.items():
            writer.add(name, tensor)
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert files == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 7 * 400
    assert index["weight_map"] == {
        f"layers.{i}.w": f"model-0000{i // 2 + 1}-of-00004.safetensors" for i in range(7)
    }
    assert _names_per_file(out)["model-00001-of-00004.safetensors"] == ["layers.0.w", "layers.1.w"]
    for path in out.glob("*.safetensors"):
        assert path.stat().st_size <= 1000 + 200  # one shard's worth of data plus its header
    reader = TensorReader(out)
    assert reader.names == list(tensors)
    assert all(torch.equal(reader.get(n), t) for n, t in tensors.items())


def test_a_tensor_larger_than_the_shard_limit_gets_a_shard_of_its_own(tmp_path):
    out = tmp_path / "child"
    with ShardedWriter(out, max_shard_bytes=100) as writer:
        writer.add("small", torch.zeros(4))
        writer.add("big", torch.zeros(1000))
        writer.add("small2", torch.zeros(4))
    assert _names_per_file(out) == {
        "model-00001-of-00003.safetensors": ["small"],
        "model-00002-of-00003.safetensors": ["big"],
        "model-00003-of-00003.safetensors": ["small2"],
    }


def test_a_full_shard_is_flushed_to_disk_before_the_next_tensor_is_buffered(tmp_path):
    """Peak memory: the writer never holds more than one shard's worth of tensors."""
    out = tmp_path / "child"
    with ShardedWriter(out, max_shard_bytes=1000) as writer:
        shard_files = []
        for i in range(6):
            writer.add(f"w{i}", torch.zeros(100))  # 400 bytes
            shard_files.append(len(list(writer.temp_dir.glob("*.safetensors"))))
            assert writer._buffer_bytes <= 1000
    assert shard_files == [0, 0, 1, 1, 2, 2]


def test_the_same_tensors_give_byte_identical_files(tmp_path):
    digests = []
    for run in ("a", "b"):
        with ShardedWriter(tmp_path / run, max_shard_bytes=300) as writer:
            for name, tensor in _tensors(seed=3).items():
                writer.add(name, tensor)
            writer.write_text("config.json", "{}\n")
        digests.append(sha256_of_files(tmp_path / run))
    assert digests[0] == digests[1]
    assert len(digests[0]) > 3


def test_side_files_are_copied_and_paths_outside_the_folder_are_refused(tmp_path):
    src = tmp_path / "tokenizer.json"
    src.write_text('{"x": 1}')
    out = tmp_path / "child"
    with ShardedWriter(out) as writer:
        writer.add("w", torch.ones(2))
        writer.copy_file(src)
        writer.copy_file(src, "tokenizer_copy.json")
        writer.write_text("sub/notes.txt", "hello")
        with pytest.raises(ValueError):
            writer.write_text("../escape.txt", "no")
        with pytest.raises(ValueError):
            writer.write_text("model.safetensors", "no")
        with pytest.raises(DarwinError, match="does not exist"):
            writer.copy_file(tmp_path / "missing.json")
    assert (out / "tokenizer.json").read_text() == '{"x": 1}'
    assert (out / "tokenizer_copy.json").exists() and (out / "sub" / "notes.txt").read_text() == "hello"
    assert not (tmp_path / "escape.txt").exists()


def test_an_existing_output_folder_is_refused(tmp_path):
    out = tmp_path / "child"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DarwinError, match="already exists"):
        with ShardedWriter(out):
            pass
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]


def test_overwrite_replaces_the_old_folder_only_at_the_end(tmp_path):
    out = tmp_path / "child"
    with ShardedWriter(out) as writer:
        writer.add("old", torch.zeros(2))
    with ShardedWriter(out, overwrite=True) as writer:
        writer.add("new", torch.ones(2))
        assert TensorReader(out).names == ["old"]  # still the old model while writing
    assert TensorReader(out).names == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]


def test_an_exception_inside_the_block_leaves_nothing_and_keeps_the_old_model(tmp_path):
    out = tmp_path / "child"
    with pytest.raises(RuntimeError, match="boom"):
        with ShardedWriter(out, max_shard_bytes=100) as writer:
            for i in range(5):
                writer.add(f"w{i}", torch.zeros(20))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with ShardedWriter(out) as writer:
        writer.add("old", torch.zeros(2))
    with pytest.raises(RuntimeError, match="boom"):
        with ShardedWriter(out, overwrite=True) as writer:
            writer.add("new", torch.ones(2))
            raise RuntimeError("boom")
    assert TensorReader(out).names == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]


def _run_python(code: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, **popen)


def test_a_real_write_failure_leaves_no_complete_looking_output(tmp_path):
    """A file-size limit makes the OS fail the shard write itself (EFBIG), as a full disk fails it (ENOSPC)."""
    code = """
        import resource, signal, sys, torch
        from darwin_core.errors import DarwinError
        from darwin_core.io.tensors import ShardedWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        try:
            with ShardedWriter(sys.argv[1], max_shard_bytes=10**9) as writer:
                for i in range(4):
                    writer.add(f"w{i}", torch.zeros(10_000))  # 40 kB each, one 160 kB shard
        except DarwinError as error:
            print("DarwinError:", error)
            sys.exit(3)
    """
    out = tmp_path / "child"
    proc = _run_python(code, str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "Cannot write child" in stdout
    assert list(tmp_path.iterdir()) == []
    with ShardedWriter(out) as writer:  # and the next write works
        writer.add("w", torch.zeros(3))
    assert TensorReader(out).names == ["w"]


def test_a_killed_writer_leaves_only_a_partial_folder_that_the_next_write_cleans(tmp_path):
    code = """
        import sys, time, torch
        from pathlib import Path
        from darwin_core.io.tensors import ShardedWriter
        with ShardedWriter(sys.argv[1], max_shard_bytes=1000) as writer:
            for i in range(4):
                writer.add(f"w{i}", torch.zeros(100))
            Path(sys.argv[2]).write_text("first shards flushed")
            time.sleep(600)
    """
    out = tmp_path / "child"
    ready = tmp_path / "ready"
    proc = _run_python(code, str(out), str(ready))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "writer died before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ready.unlink()
    leftovers = list(tmp_path.iterdir())
    assert [p.name for p in leftovers] == [f".child.partial-{proc.pid}"]
    assert list(leftovers[0].glob("*.safetensors"))  # shards were on disk, under a hidden name
    assert not out.exists()
    with pytest.raises(DarwinError, match="unfinished write"):
        TensorReader(leftovers[0])

    with ShardedWriter(out) as writer:
        writer.add("w", torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["child"]


def test_a_writer_killed_between_its_renames_gets_the_previous_model_back(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "child"
    with ShardedWriter(tmp_path / "prev") as writer:
        writer.add("old", torch.zeros(2))
    os.replace(tmp_path / "prev", tmp_path / f".child.old-{dead.pid}")  # the state such a kill leaves
    (tmp_path / f".child.partial-{dead.pid}").mkdir()
    clean_stale_partials(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]
    assert TensorReader(out).names == ["old"]


# -- reader ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 3])
def test_the_reader_agrees_with_safetensors_on_a_fixture_model(fixture_model, shards):
    folder = fixture_model("qwen3", shards=shards)
    expected: dict[str, torch.Tensor] = {}
    for path in folder.glob("*.safetensors"):
        expected.update(load_file(path))
    reader = TensorReader(folder)
    assert sorted(reader.names) == sorted(expected)
    assert len(reader.files) == shards
    assert reader.total_bytes == sum(t.numel() * t.element_size() for t in expected.values())
    assert reader.parameter_count == sum(t.numel() for t in expected.values())
    for name, tensor in expected.items():
        assert reader.shape(name) == tuple(tensor.shape)
        assert reader.dtype(name) == tensor.dtype
        assert torch.equal(reader.get(name, "cpu"), tensor)


def test_reading_touches_only_headers_until_a_tensor_is_asked_for(tmp_path):
    out = tmp_path / "m"
    with ShardedWriter(out) as writer:
        writer.add("a", torch.arange(6, dtype=torch.float32).reshape(2, 3))
    infos, metadata = read_safetensors_header(out / "model.safetensors")
    assert infos["a"].shape == (2, 3) and infos["a"].dtype == "F32" and infos["a"].nbytes == 24
    assert metadata == {"format": "pt"}
    reader = TensorReader(out)
    assert reader._handles == {}
    assert reader.get("a")[1, 2].item() == 5.0
    assert len(reader._handles) == 1


def test_a_missing_shard_is_named(fixture_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_model("llama", shards=3), folder)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(DarwinError, match="model-00002-of-00003.safetensors"):
        TensorReader(folder)


def test_a_truncated_shard_is_refused(fixture_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_model("llama"), folder)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DarwinError, match="truncated"):
        TensorReader(folder)


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    state = {"w": torch.randn(3, 2), "b": torch.zeros(2, dtype=torch.bfloat16)}
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(DarwinError, match="pickle"):
        TensorReader(folder)
    reader = TensorReader(folder, allow_pickle=True)
    assert reader.format == "pickle"
    assert sorted(reader.names) == ["b", "w"] and reader.dtype("b") == torch.bfloat16
    assert torch.equal(reader.get("w"), state["w"])


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DarwinError, match="No model weights"):
        TensorReader(tmp_path)
    with pytest.raises(DarwinError, match="does not exist"):
        TensorReader(tmp_path / "nope")


def test_sha256_of_files_lists_every_file_by_relative_path(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    digests = sha256_of_files(tmp_path)
    assert list(digests) == ["a.txt", "sub/b.txt"]
    assert digests["a.txt"] == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


@pytest.mark.gpu
def test_tensors_load_straight_onto_the_gpu_and_gpu_tensors_are_written_like_cpu_ones(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tensors = _tensors(seed=5)
    with ShardedWriter(tmp_path / "from_gpu", max_shard_bytes=300) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor.to("cuda"))
    with ShardedWriter(tmp_path / "from_cpu", max_shard_bytes=300) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor)
    assert sha256_of_files(tmp_path / "from_gpu") == sha256_of_files(tmp_path / "from_cpu")
    reader = TensorReader(tmp_path / "from_gpu", device="cuda")
    for name, tensor in tensors.items():
        loaded = reader.get(name)
        assert loaded.device.type == "cuda"
        assert torch.equal(loaded.cpu(), tensor)
    assert reader.get("model.embed_tokens.weight", device="cpu").device.type == "cpu"
