"""Genesis in miniature: a cross-architecture pair of demo-size models for FFN-only breeding on a CPU.

Seed 000 (Darwin-4B-Genesis) bred a dense Gemma 4 father with a Qwen3.5 GatedDeltaNet mother of the same
hidden size: the father's attention kept, each layer's FFN blended with the mother's layer at the same depth.
This module builds that shape of pair at demo size, deterministically (fixed seeds, deterministic kernels, one
thread), in about a minute or two:

- **father**: the demo zoo's father as it ships (`assets/zoo/father`: a dense 4-layer Qwen3, hidden 128,
  fine-tuned on reverse and uppercase). Nothing is trained for him.
- **mother**: a 5-layer Qwen3.5 text model (hidden 128, FFN 384; layers 0, 1, 3 GatedDeltaNet linear
  attention, 2 and 4 gated full attention), another family and depth. Her token embeddings and her FFNs start
  from the zoo's *base* (mother layer j ← base layer ⌊j·3/4 + ½⌋, the same relative depth the pairing uses),
  her token mixers and norms are new. Phase 1 trains only the token mixers and norms on every demo skill (so
  the new mixers learn to drive the inherited FFNs), phase 2 fine-tunes all of her on translate and sort.

Why a shared ancestor for the FFNs: the seed's two families are unrelated, and a published negative result
found that an MLP projected into an unrelated host does worse than the host. A demo pair of unrelated random
initialisations would only restate that; a mother whose FFNs descend from the father's ancestor through a
different architecture is the case where FFN-only breeding has something to find, and the Genesis table says
what it found, measured. This choice is stated wherever the table is shown.

Training reuses `darwin_core.zoo.build` (`train`, `make_tokenizer`, `deterministic`); nothing is copied. The
mother (about 4 MB) is cached in `assets/genesis/mother` with its sha256 in `assets/genesis/genesis.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.hashes import sha256_file
from darwin_core.io.runfolder import REPO_ROOT
from darwin_core.zoo import build as zoo

GENESIS_DIR = REPO_ROOT / "assets" / "genesis"
MANIFEST = "genesis.json"
MIXER_PARTS = ("linear_attn", "self_attn", "norm")  # what phase 1 trains (names contain one of these)


@dataclass(frozen=True)
class GenesisSpec:
    """Everything that decides the mother's bytes (the father is the shipped zoo father)."""

    seed: int = 0
    threads: int = 1
    num_layers: int = 5
    layer_types: tuple[str, ...] = ("linear_attention", "linear_attention", "full_attention",
                                    "linear_attention", "full_attention")
    mixer_steps: int = 150
    mixer_lr: float = 3e-3
    specialist_steps: int = 100
    specialist_lr: float = 1e-3
    warmup_steps: int = 30
    batch_size: int = 32


DEFAULT_GENESIS = GenesisSpec()


def make_mother(spec: GenesisSpec, tokenizer, zoo_spec: zoo.ZooSpec = zoo.DEFAULT_SPEC):
    """A fresh Qwen3.5 text model of the zoo's hidden and FFN size (weights depend only on spec.seed)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3_5_text", vocab_size=len(tokenizer), hidden_size=zoo_spec.hidden_size,
        intermediate_size=zoo_spec.intermediate_size, num_hidden_layers=spec.num_layers,
        layer_types=list(spec.layer_types), num_attention_heads=zoo_spec.num_heads,
        num_key_value_heads=zoo_spec.num_kv_heads, head_dim=zoo_spec.hidden_size // zoo_spec.num_heads,
        linear_key_head_dim=32, linear_value_head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
        max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(spec.seed)
    return AutoModelForCausalLM.from_config(config).float()


def inherit_from_base(mother, base_dir: Path) -> int:
    """Copy the zoo base's token embeddings and each layer's FFN (gate/up/down) into `mother`, layer j from the
    base layer at the same relative depth; returns how many tensors were copied."""
    from safetensors.torch import load_file

    from darwin_core.parents.anatomy import depth_layer_map

    base = load_file(str(base_dir / "model.safetensors"))
    base_layers = 1 + max(int(n.split(".")[2]) for n in base if n.startswith("model.layers."))
    mapping = depth_layer_map(mother.config.num_hidden_layers, base_layers)
    copied = 0
    with torch.no_grad():
        for name, parameter in mother.named_parameters():
            source = name if name == "model.embed_tokens.weight" else None
            if ".mlp." in name:
                layer = int(name.split(".")[2])
                source = name.replace(f"layers.{layer}.", f"layers.{mapping[layer]}.", 1)
            if source is not None:
                if tuple(base[source].shape) != tuple(parameter.shape):
                    raise DarwinError(f"The zoo base's {source} has another shape than the mother's {name}.")
                parameter.copy_(base[source])
                copied += 1
    return copied


def build_mother(spec: GenesisSpec = DEFAULT_GENESIS, *, zoo_dir: Path = zoo.DEFAULT_ZOO_DIR,
                 log: Callable[[str], None] | None = None):
    """The trained mother, in memory (deterministic: one thread, deterministic kernels)."""
    tokenizer = zoo.make_tokenizer()
    common = dict(warmup=spec.warmup_steps, batch_size=spec.batch_size)
    with zoo.deterministic(spec.threads):
        mother = make_mother(spec, tokenizer)
        copied = inherit_from_base(mother, Path(zoo_dir) / "base")
        if log:
            log(f"mother: {sum(p.numel() for p in mother.parameters()):,} parameters, {copied} tensors from the base")
        zoo.train(mother, tokenizer, zoo.DEFAULT_SPEC.base_skills, steps=spec.mixer_steps, lr=spec.mixer_lr,
                  seed=spec.seed + 10, log=log, only=MIXER_PARTS, **common)
        zoo.train(mother, tokenizer, zoo.DEFAULT_SPEC.mother_skills, steps=spec.specialist_steps,
                  lr=spec.specialist_lr, seed=spec.seed + 11, log=log, **common)
    return mother, tokenizer


def genesis_pair(out_dir: Path | str = GENESIS_DIR, spec: GenesisSpec = DEFAULT_GENESIS, *,
                 zoo_dir: Path = zoo.DEFAULT_ZOO_DIR, log: Callable[[str], None] | None = print) -> tuple[Path, Path]:
    """(father folder, mother folder): the zoo father and the Genesis mother, built into `out_dir` when it has
    none for this spec yet (its manifest records the spec and the mother's sha256)."""
    out = Path(out_dir)
    mother_dir = out / "mother"
    manifest_path = out / MANIFEST
    father_dir = Path(zoo_dir) / "father"
    if manifest_path.is_file() and (mother_dir / "model.safetensors").is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("spec") == json.loads(json.dumps(asdict(spec))):
            return father_dir, mother_dir
    start = time.perf_counter()
    mother, tokenizer = build_mother(spec, zoo_dir=Path(zoo_dir), log=log)
    mother_dir.mkdir(parents=True, exist_ok=True)
    zoo.save_member(mother, tokenizer, mother_dir)
    manifest = {"spec": asdict(spec), "father": "assets/zoo/father", "build_seconds": round(time.perf_counter() - start, 1),
                "sha256": {"mother/model.safetensors": sha256_file(mother_dir / "model.safetensors")},
                "torch": torch.__version__}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return father_dir, mother_dir
