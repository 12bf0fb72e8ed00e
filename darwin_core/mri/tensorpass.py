"""Reading a model folder for the scan: its reader and config, and the one pass over its tensors.

`tensor_pass` reads every tensor once (once per parent for a pair), layer by layer, and feeds the static
profile, the divergence sums and the expert-similarity collector from the same read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.io.tensors import TensorReader
from darwin_core.mri.moe import ExpertVectors
from darwin_core.mri.static import finite_moments, pair_sums, tensor_profile
from darwin_core.parents.anatomy import TensorRole, classify


def open_reader(model_dir: str | Path, device: str = "cpu") -> TensorReader:
    """The tensor reader of a model folder, with a one-sentence error when the folder is missing."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise DarwinError(f"The model folder {folder} does not exist.")
    return TensorReader(folder, device=device)


def read_config(model_dir: str | Path) -> dict:
    """The folder's config.json as a dict; a missing or broken file is a DarwinError, not a traceback."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DarwinError(f"The model folder {Path(model_dir)} has no config.json.") from None
    except json.JSONDecodeError:
        raise DarwinError(f"The config.json in {Path(model_dir)} is not valid JSON.") from None


def nonfinite_tensors(model_dir: str | Path, *, device: str = "cpu") -> dict[str, int]:
    """Tensor name → count of NaN/Inf values, for the tensors that have any (one tensor in memory at a time)."""
    reader = open_reader(model_dir, device)
    bad: dict[str, int] = {}
    for name in reader.names:
        count = finite_moments(reader.get(name).reshape(-1))[3]
        if count:
            bad[name] = count
    return bad


def layer_order(names: Iterable[str]) -> list[tuple[str, TensorRole]]:
    """Names with their roles, grouped by layer (non-layer tensors first), then by name."""
    roles = [(name, classify(name)) for name in names]
    return sorted(roles, key=lambda nr: (-1 if nr[1].layer is None else nr[1].layer, nr[0]))


def check_same_tensors(a: TensorReader, b: TensorReader) -> dict[str, str]:
    """The parents' tensors compared for the MRI: names must match, and shapes too, except the vocabulary tensors
    (embedding, output head) of parents whose vocabularies differ in size, which Darwin breeds row by token:
    their rows are no common coordinates, so they are left out of the divergence. Returns name → why left out."""
    from darwin_core.parents.tokenizers import is_vocabulary_tensor, vocabulary_rows

    names_a, names_b = set(a.names), set(b.names)
    if names_a != names_b:
        only = sorted(names_a ^ names_b)
        raise DarwinError(
            f"The parents do not have the same tensors ({len(only)} differ, e.g. {only[0]}), so they cannot be compared."
        )
    skipped: dict[str, str] = {}
    for name in sorted(names_a):
        shape_a, shape_b = tuple(a.shape(name)), tuple(b.shape(name))
        if shape_a == shape_b:
            continue
        rows = vocabulary_rows(shape_a, shape_b) if is_vocabulary_tensor(name) else None
        if rows:
            skipped[name] = (f"the vocabularies differ ({rows[0]} rows in the father, {rows[1]} in the mother), "
                             "so its rows are not compared")
            continue
        raise DarwinError(f"Tensor {name} has shape {shape_a} in the father and {shape_b} in the mother.")
    return skipped


def tensor_pass(readers: list[TensorReader], n_experts: int | None, uncompared: Iterable[str] = ()) -> dict:
    """One read of every tensor of one model (or of two parents side by side, each tensor once per parent):
    static profiles per reader, divergence sums (two readers; none for the `uncompared` names), expert
    similarity per MoE layer per reader. Tensors are visited layer by layer so each layer's expert vectors can be
    compared and dropped."""
    uncompared = frozenset(uncompared)
    ordered = layer_order(readers[0].names)
    profiles: list[dict[str, dict]] = [{} for _ in readers]
    sums: dict[str, dict] = {}
    similarity: list[dict[int, float | None]] = [{} for _ in readers]
    experts = [ExpertVectors(n_experts) for _ in readers] if n_experts else None
    current_layer: int | None = None

    def close_layer() -> None:
        if experts and current_layer is not None:
            for k, collector in enumerate(experts):
                if collector.parts:
                    similarity[k][current_layer] = collector.finish()

    for name, role in ordered:
        if role.layer != current_layer:
            close_layer()
            current_layer = role.layer
        tensors = [reader.get(name) for reader in readers]
        for k, tensor in enumerate(tensors):
            profiles[k][name] = {"layer": role.layer, "role": role.role, "tower": role.tower, **tensor_profile(tensor)}
            if experts and role.role == "experts" and role.layer is not None and role.tower == "language":
                experts[k].add(name, tensor)
        if len(tensors) == 2 and name not in uncompared:
            sums[name] = pair_sums(tensors[0], tensors[1])
        del tensors
    close_layer()
    return {"profiles": profiles, "sums": sums, "similarity": similarity, "roles": dict(ordered)}
