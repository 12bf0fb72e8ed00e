"""Tiny, seeded parent models of every supported architecture, written in the Hub's on-disk layout.

Darwin works on checkpoint files, so its tests need real checkpoints: config.json, safetensors weights (single
file or shards + index), tokenizer files and generation_config.json, exactly as `save_pretrained` lays them out
for the Hub. Each model here is built by transformers itself (`AutoModelForCausalLM.from_config`) so the tensor
names, shapes and reverse weight conversions (e.g. MoE experts fused in memory but stored per expert on disk)
are the library's own, and every fixture loads back with `from_pretrained` without missing or unexpected keys.

This module deliberately does not use the tensor reader or writer (`darwin_core.io`): the fixtures are what they are tested on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from darwin_core.parents.chartok import build_char_tokenizer
from darwin_core.errors import DarwinError
from darwin_core.io.hashes import sha256_file

ARCHITECTURES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "gemma3_text",
    "gemma4_text",
    "phi3",
    "mixtral",
)

# Characters the fixture tokenizer knows; ids 0-3 are <pad>, <bos>, <eos>, <unk>.
FIXTURE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,:;?!'+-*/=()\n"
VOCAB_SIZE = 64  # covers the 4 special tokens + the alphabet, rounded up as real vocabularies are

_COMMON: dict = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

_MOE = {"moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2}
_GATED_DELTA_NET = {
    # 3 linear-attention (GatedDeltaNet) layers then 1 full-attention layer, the real models' 3:1 pattern.
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
}
_SLIDING = {
    "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    "sliding_window": 16,
}

# Per-architecture departures from _COMMON: the table, not code branches, says what each one needs.
_ARCH_CONFIG: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {},
    "qwen3_moe": {**_MOE, "decoder_sparse_step": 1, "mlp_only_layers": []},
    "qwen3_5_text": {**_GATED_DELTA_NET},
    "qwen3_5_moe_text": {**_GATED_DELTA_NET, **_MOE, "shared_expert_intermediate_size": 16},
    "gemma3_text": {**_SLIDING},
    # Gemma 4: full-attention layers use global_head_dim (default 512, far too big) and the E2B/E4B-style
    # per-layer input embeddings (PLE) are kept, small, so their tensors are covered too.
    "gemma4_text": {
        **_SLIDING,
        "global_head_dim": 16,
        "vocab_size_per_layer_input": VOCAB_SIZE,
        "hidden_size_per_layer_input": 8,
    },
    "phi3": {"head_dim": None},  # Phi-3 derives head_dim from hidden_size / heads and has no such field
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
}

# Fresh norms are all ones (or all zeros where the model adds 1, as Gemma 3 does) and biases all zeros: two
# seeds would then give identical tensors, and merges of constant tensors test nothing. Such tensors get
# seeded noise of this standard deviation.
_CONSTANT_TENSOR_NOISE = 0.1

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def tiny_config(arch: str, overrides: dict | None = None):
    """The transformers config of the tiny `arch` model (vocabulary sized for the fixture tokenizer).

    `overrides` replace config fields (e.g. ``num_hidden_layers``: the architecture's ``layer_types`` pattern is
    then repeated to that depth, keeping its last layer full attention, unless the overrides give their own).
    """
    from transformers import AutoConfig

    _check_arch(arch)
    kwargs = {**_COMMON, **_ARCH_CONFIG[arch], **(overrides or {})}
    kwargs = {k: v for k, v in kwargs.items() if not (k == "head_dim" and v is None)}
    pattern = _ARCH_CONFIG[arch].get("layer_types")
    layers = kwargs["num_hidden_layers"]
    if pattern and "layer_types" not in (overrides or {}) and layers != len(pattern):
        kwargs["layer_types"] = [pattern[i % (len(pattern) - 1)] for i in range(layers - 1)] + [pattern[-1]]
    return AutoConfig.for_model(arch, **kwargs)


def write_tiny_model(
    arch: str,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    shards: int = 1,
    dtype: torch.dtype = torch.float32,
    base_dir: str | os.PathLike | None = None,
    delta_scale: float = 0.02,
    overrides: dict | None = None,
) -> Path:
    """Write a tiny `arch` model to `out_dir` and return it; identical bytes for identical arguments.

    Without `base_dir` the weights are the library's random init under `seed` (constant tensors get seeded
    noise). With `base_dir` (a model written by this function) the result is a "fine-tune" of it: every
    tensor becomes base + delta_scale * rms(base tensor) * N(0, 1), so the relative change is about
    `delta_scale`; the noise is drawn from `seed`. Values are computed in float32 and stored as `dtype`.
    `shards` > 1 writes that many `model-0000i-of-0000n.safetensors` files plus the index. `overrides` change
    the config (`tiny_config`; ignored with `base_dir`, whose config is the base's).
    The folder appears only when complete (written beside it, then renamed).
    """
    _check_arch(arch)
    if shards < 1:
        raise DarwinError(f"A model needs at least one shard, got shards={shards}.")
    if not (dtype.is_floating_point):
        raise DarwinError(f"Fixture weights must use a floating dtype, got {dtype}.")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DarwinError(f"The fixture folder {out} already exists and is not empty.")

    model = (_build_model(tiny_config(arch, overrides), seed) if base_dir is None
             else _fine_tune(arch, Path(base_dir), seed, delta_scale))
    with _staging_dir(out) as tmp:
        model.to(dtype).save_pretrained(tmp)  # transformers writes the Hub layout (reverse conversions applied)
        if shards > 1:
            _reshard(tmp, shards)
        build_char_tokenizer(FIXTURE_ALPHABET).save_pretrained(tmp)
    return out


def write_pair(
    arch: str, root: str | os.PathLike, *, related: bool = False, shards: int = 1
) -> tuple[Path, Path]:
    """Write `root/father` and `root/mother`: the same architecture and shapes, different weights.

    Unrelated parents are independent inits (seeds 0 and 1); a related mother is the father plus a small
    seeded delta (`write_tiny_model(..., base_dir=father)`), as a fine-tune of a shared base would be.
    """
    root = Path(root)
    father = write_tiny_model(arch, root / "father", seed=0, shards=shards)
    if related:
        mother = write_tiny_model(arch, root / "mother", seed=1, shards=shards, base_dir=father)
    else:
        mother = write_tiny_model(arch, root / "mother", seed=1, shards=shards)
    return father, mother


def write_tiny_multimodal(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny Gemma 3 multimodal checkpoint (``Gemma3ForConditionalGeneration``: a SigLIP vision tower, its
    projector and the ``gemma3_text`` language model of `tiny_config`), in the Hub's layout.

    Its language tensors are named ``language_model.model.…`` where the text-only sibling
    (`write_tiny_model("gemma3_text", …)`) has ``model.…``: the wrapper pair Darwin breeds by canonical name.
    """
    from transformers import AutoConfig

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DarwinError(f"The fixture folder {out} already exists and is not empty.")
    text = tiny_config("gemma3_text").to_dict()
    for key in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 4}
    config = AutoConfig.for_model("gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                  image_token_index=5, boi_token_index=6, eoi_token_index=7)
    model = _build_model(config, seed)
    with _staging_dir(out) as tmp:
        model.save_pretrained(tmp)
        build_char_tokenizer(FIXTURE_ALPHABET).save_pretrained(tmp)
    return out


def place_in_hf_cache(
    model_dir: str | os.PathLike,
    repo_id: str,
    cache_dir: str | os.PathLike,
    *,
    revision: str = "main",
) -> Path:
    """Copy `model_dir` into a Hugging Face hub cache as `repo_id` and return the snapshot folder.

    The layout is the hub library's own (`models--org--name/{blobs,refs,snapshots}`), so with
    `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE=cache_dir`, `snapshot_download(repo_id)` and `hf_hub_download`
    resolve to it without a network. The commit id is a hash of the files, so it is stable for the same
    content; a 40-hex `revision` is used as the commit itself (no ref written).
    """
    src = Path(model_dir)
    if not src.is_dir():
        raise DarwinError(f"The model folder {src} does not exist.")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise DarwinError(f"A repo id looks like 'org/name', got '{repo_id}'.")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise DarwinError(f"The model folder {src} has no files.")

    digests = {p.relative_to(src).as_posix(): sha256_file(p) for p in files}
    if _HEX40.match(revision):
        commit = revision
    else:
        listing = "".join(f"{name}\0{digest}\n" for name, digest in digests.items())
        commit = hashlib.sha1(listing.encode()).hexdigest()

    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for p in files:
        rel = p.relative_to(src).as_posix()
        blob = repo / "blobs" / digests[rel]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(p, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:  # the hub's own cache links snapshot files to blobs; copy where links are not allowed
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            shutil.copyfile(blob, link)
    if not _HEX40.match(revision):
        ref = repo / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise DarwinError(f"No tiny fixture for architecture '{arch}'; known: {', '.join(ARCHITECTURES)}.")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator (which weight init uses) without disturbing the caller's stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build_model(config, seed: int):
    from transformers import AutoModelForCausalLM

    with _seeded(seed):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in _stored_tensors(model):
            flat = tensor.reshape(-1)
            if bool((flat == flat[0]).all()):
                tensor.add_(torch.randn(tensor.shape, generator=gen) * _CONSTANT_TENSOR_NOISE)
    return model.eval()


def _fine_tune(arch: str, base_dir: Path, seed: int, delta_scale: float):
    """Load the base with transformers and add a relative, seeded delta to every parameter."""
    from transformers import AutoModelForCausalLM

    config_path = base_dir / "config.json"
    if not config_path.is_file():
        raise DarwinError(f"The base folder {base_dir} has no config.json.")
    base_type = json.loads(config_path.read_text()).get("model_type")
    if base_type != arch:
        raise DarwinError(f"The base model is '{base_type}', not '{arch}'.")
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in _stored_tensors(model):
            rms = float(tensor.pow(2).mean().sqrt()) or 1.0
            tensor.add_(torch.randn(tensor.shape, generator=gen) * (delta_scale * rms))
    return model.eval()


def _stored_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """Every float tensor the checkpoint stores, once each, sorted by in-memory name.

    Persistent buffers count too (Gemma 4's per-layer `layer_scalar` is one); tied weights appear once.
    """
    stored = set(model.state_dict())
    tensors = dict(model.named_parameters())
    tensors.update((n, b) for n, b in model.named_buffers() if n in stored and b.is_floating_point())
    return sorted(tensors.items())


@contextmanager
def _staging_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` that becomes `out` on success and disappears on error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # checked empty by the caller
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _reshard(folder: Path, shards: int) -> None:
    """Split `folder/model.safetensors` into exactly `shards` Hub-named files plus the index.

    `save_pretrained(max_shard_size=...)` cannot promise a shard count, and tests want an exact one; byte
    sizes are balanced greedily over the sorted tensor names.
    """
    single = folder / "model.safetensors"
    with safe_open(single, "pt") as f:
        tensors = {name: f.get_tensor(name) for name in sorted(f.keys())}
    if shards > len(tensors):
        raise DarwinError(f"Cannot split {len(tensors)} tensors into {shards} shards.")
    sizes = {n: t.numel() * t.element_size() for n, t in tensors.items()}
    total = sum(sizes.values())
    names = list(tensors)
    groups: list[list[str]] = [[] for _ in range(shards)]
    done, prev = 0, 0
    for i, name in enumerate(names):
        k = min(shards - 1, done * shards // total, prev + 1)  # by bytes so far, never skipping a shard
        k = max(k, prev, shards - (len(names) - i))  # monotone, and enough tensors left for later shards
        groups[k].append(name)
        done += sizes[name]
        prev = k
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, fname))
    index = {
        "metadata": {"total_parameters": sum(t.numel() for t in tensors.values()), "total_size": total},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    single.unlink()
