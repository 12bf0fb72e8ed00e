"""Run by tests/test_triton_interpreter.py in a process of its own: the fused kernels under Triton's CPU
interpreter (TRITON_INTERPRET must be set before Triton is imported), against the CPU reference merge.

Only the plumbing around the kernels is changed for the CPU: no CUDA device context, tables uploaded as CPU
tensors, and the fused path's CUDA-only gates opened. Prints one JSON object."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.cuda.device = lambda device: contextlib.nullcontext()  # the interpreter's programs run on the CPU

from darwin_core.merge.methods import _dare_triton, _fused_triton, fused  # noqa: E402
from darwin_core.merge.methods.apply import StateDictSource, merge_tensors  # noqa: E402


def _cpu_upload(buffer, device):
    return torch.from_numpy(np.asarray(buffer).copy())


_fused_triton._upload = _dare_triton._upload = _cpu_upload
fused.fusable = lambda recipe, device: recipe.method in ("linear", "dare_ties") and recipe.base == "father"
fused._fits = lambda f, m, target: (f.shape == m.shape and f.is_contiguous() and m.is_contiguous()
                                    and f.dtype in fused._DTYPES and m.dtype in fused._DTYPES)


def _parents(seed: int = 0) -> tuple[StateDictSource, StateDictSource]:
    shapes = {"model.embed_tokens.weight": (300, 16)}
    for layer in range(4):
        shapes |= {f"model.layers.{layer}.mlp.up_proj.weight": (300, 250),  # three chunks and a tail
                   f"model.layers.{layer}.self_attn.q_proj.weight": (33,),
                   f"model.layers.{layer}.input_layernorm.weight": (2049,),
                   f"model.layers.{layer}.mlp.down_proj.weight": (70, 40)}
    generator = torch.Generator().manual_seed(seed)
    father = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    mother = {name: father[name] + torch.randn(shape, generator=generator) * 0.01 for name, shape in shapes.items()}
    return StateDictSource(father), StateDictSource(mother)


def _recipes(count: int):
    """(label, recipe) pairs: darwin-v6 DARE-TIES recipes without a method-weight blend (whose lerp a CPU rounds
    otherwise than the kernels, as a GPU does), rescaled and not."""
    from darwin_core.genome.spaces import get_space

    space = get_space("darwin-v6")
    rng = np.random.default_rng(1)
    for trial in range(count):
        genes = [float(rng.uniform(low, high)) for low, high in zip(*space.bounds)]
        recipe = space.to_recipe(genes, father="a/b", mother="c/d", layer_count=4, method="dare_ties",
                                 frozen_layers=(1,), dtype="float32")
        yield f"rescaled {trial}", replace(recipe, method_weight=1.0)
        yield f"not rescaled {trial}", replace(recipe, method_weight=1.0, rescale=False)


def _differing(got: dict, reference: dict) -> list[str]:
    return [name for name in reference if not torch.equal(got[name].view(torch.uint8), reference[name].view(torch.uint8))]


def batches(father, mother) -> dict[str, list[str]]:
    """`fused_merge_tensors` in batches (`dare_ties_multi_cuda`): the names whose bytes differ from the reference's."""
    differing = {}
    for label, recipe in _recipes(3):
        reference = dict(merge_tensors(recipe, father, mother, device="cpu"))
        outputs = {name: torch.full_like(tensor, float("nan")) for name, tensor in reference.items()}
        differing[label] = _differing(dict(fused.fused_merge_tensors(recipe, father, mother, device="cpu",
                                                                     outputs=outputs)), reference)
    return differing


def layout(father, mother) -> dict[str, list[str]]:
    """Candidates through one `ResidentLayout` (`layout_launch`), each naming every other tensor or all of them, as a
    resident child's change check does: the names whose bytes differ from the reference's."""
    from darwin_core.merge.methods.fused_layout import ResidentLayout
    from darwin_core.recipe.columns import TensorIndex, plan_columns

    index = TensorIndex.of(father.names)
    outputs = {name: torch.full(father.get(name).shape, float("nan")) for name in father.names}
    resident = ResidentLayout(father, mother, outputs, None, torch.float32, torch.device("cpu"))
    differing = {}
    for number, (label, recipe) in enumerate(_recipes(3)):
        columns = plan_columns(recipe, index)
        wanted = np.arange(len(index.names)) % 2 == number % 2 if number % 3 else np.ones(len(index.names), bool)
        done = resident.merge(columns, wanted, True, None, _dare_triton.layout_launch)
        rest = dict(fused.fused_merge_tensors(recipe, father, mother, columns.names(wanted & ~done), device="cpu"))
        reference = dict(merge_tensors(recipe, father, mother, columns.names(wanted), device="cpu"))
        differing[label] = _differing({**rest, **{name: outputs[name] for name in columns.names(done)}}, reference)
        differing[label] += [f"{name}: not merged by the layout" for name in columns.names(wanted & ~done)]
    return differing


def factors() -> dict[str, bool]:
    """The factor kernel over tensors of up to 11,873 chunk sums (more than one of its groups, as a 4B embedding has)
    against `delta._pairwise_levels` over the same sums: equal bits per tensor."""
    from darwin_core.merge.methods.delta import RESCALE_EPS, _pairwise_levels
    from darwin_core.merge.methods.fused_tables import INT_ROW, MULTI_CHUNK, DareFlag

    counts = [1, 2, 1023, 1025, 2049, 11873]
    starts = np.concatenate([[0], np.cumsum(counts)])
    ints = np.zeros((len(counts), INT_ROW), np.int64)
    ints[:, 3], ints[:, 4], ints[:, 8] = np.asarray(counts) * MULTI_CHUNK - 5, starts[:-1], int(DareFlag.RESCALE)
    sums = np.random.default_rng(2).random(2 * starts[-1], dtype=np.float32)
    got = torch.zeros(len(counts), dtype=torch.float32)
    _dare_triton.launch_factors(torch.from_numpy(ints.reshape(-1).copy()), len(counts),
                                torch.from_numpy(sums.copy()), int(starts[-1]), got)
    results = {}
    for k, count in enumerate(counts):
        before = _pairwise_levels(torch.from_numpy(sums[starts[k]:starts[k + 1]]))
        after = _pairwise_levels(torch.from_numpy(sums[starts[-1] + starts[k]:starts[-1] + starts[k + 1]]))
        expected = 1.0 if min(before.item(), after.item()) < RESCALE_EPS else (before / after).item()
        results[str(count)] = bool(np.float32(expected).view(np.uint32) == got[k:k + 1].numpy().view(np.uint32)[0])
    return results


def main() -> None:
    father, mother = _parents()
    print(json.dumps({"batches": batches(father, mother), "layout": layout(father, mother), "factors": factors()}))


if __name__ == "__main__":
    main()
