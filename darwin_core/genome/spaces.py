"""Genome spaces: what CMA-ES searches, and the pure map from a genome vector to a Recipe.

A GenomeSpace names its dimensions and their bounds, gives a neutral default genome, and turns a genome into a
Recipe with `to_recipe` (a pure function: same genome, parents and MRI prescription → same recipe → same
bytes). Ratios are "share of the mother": 0 = father, 1 = mother.

Spaces (`get_space(name, layer_count=...)`):

Each space also names the merge method a search in it uses when the run names none (`default_method`):
dare_ties for darwin-v6 (seed 002's engine), linear for the others.

- `darwin-v6` (14 dims, seed 002): global_ratio, attn_ratio, ffn_ratio, embed_ratio, density_a, density_b,
  block_0..block_5, mri_trust, merge_method_weight. The ratio dimensions combine by multiplying the mother's
  odds (see GENOME_TABLE_MD for the exact formula and a worked example), the MRI prescription is blended in with
  `mri_trust`, and transplant thresholds (0.15, 0.85) are on.
- `per-layer` (one ratio per decoder layer, the seeds' 42-dim Genesis genome): every tensor of layer i at
  ratio g[i]; frozen layers pinned to 0 (the father's tensors as they are).
- `per-layer-ffn` (the Genesis variant): g[i] applies to the FFN/MoE tensors only; attention and norms stay
  the father's. The natural genome of a cross-architecture FFN-only pair (`darwin_core.merge.pairing`): its
  dimensions are the father's layers, and a layer whose FFN does not line up with the mother's stays his.
- `per-block-role` (blocks × {attn, ffn}, 12 dims by default): the middle ground.

Why odds and not sums: every dimension at 0.5 is neutral, a dimension alone gives exactly its value
(attn_ratio 0.18 with everything else neutral puts attention at 0.18), the result stays inside (0, 1) without
clipping, and it is smooth everywhere, which CMA-ES needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.registry import Method, get_method
from darwin_core.parents.compatibility import PairingMode
from darwin_core.recipe import DEFAULT_TRANSPLANT, GenomeRecord, Recipe, density_table, ratio_table

# Which role follows which role-ratio dimension of darwin-v6 (roles not listed get no role factor).
ATTN_ROLES = ("attn", "linear_attn")
FFN_ROLES = ("ffn", "experts", "shared_expert", "router")
EMBED_ROLES = ("embed", "lm_head")
# the genome dimension a role's tensors follow beside global_ratio and their block (`genome_ratio`)
_ROLE_DIMENSION = {**dict.fromkeys(ATTN_ROLES, "attn_ratio"), **dict.fromkeys(FFN_ROLES, "ffn_ratio"),
               **dict.fromkeys(EMBED_ROLES, "embed_ratio")}
V6_BLOCKS = 6
_EPS = 1e-6


@dataclass(frozen=True)
class Dim:
    """One genome dimension: name, bounds, neutral default, and what it does (shown in the README/card)."""

    name: str
    low: float
    high: float
    default: float
    doc: str


def odds_combine(*shares: float) -> float:
    """σ(Σ logit(share)): multiplies the mother's odds; 0.5 is neutral, a single non-neutral share is returned
    as is, and with several the shares are clamped to [1e-6, 1 − 1e-6] (so 0 and 1 are not absorbing)."""
    active = [float(s) for s in shares if float(s) != 0.5]
    if not active:
        return 0.5
    if len(active) == 1:  # exactly that value (no log/exp round trip), including 0 and 1
        return min(max(active[0], 0.0), 1.0)
    total = 0.0
    for share in active:
        p = min(max(float(share), _EPS), 1.0 - _EPS)
        total += math.log(p / (1.0 - p))
    return 1.0 / (1.0 + math.exp(-total))


def block_of(layer: int, layer_count: int, blocks: int) -> int:
    """The block of a layer: `blocks` equal spans of the layer stack, block = ⌊layer·blocks / layer_count⌋."""
    return min(blocks - 1, (layer * blocks) // layer_count)


class GenomeSpace:
    """Base class: dimensions, bounds, default, validation; subclasses implement `_tables`."""

    name: str = ""
    default_method: str = Method.LINEAR.value  # the merge method of a search that names none
    transplant: tuple[float, float] | None = None
    uses_mri = False

    def __init__(self, dims: Sequence[Dim]):
        self.dims = tuple(dims)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    @property
    def bounds(self) -> tuple[list[float], list[float]]:
        """(lower, upper) lists, the shape `cma.CMAEvolutionStrategy(..., {"bounds": ...})` takes."""
        return [d.low for d in self.dims], [d.high for d in self.dims]

    @property
    def dim(self) -> int:
        return len(self.dims)

    def default(self) -> list[float]:
        """The neutral genome (without an MRI prescription: a uniform 50/50 merge, or the father for spaces
        whose non-genome tensors stay the father's)."""
        return [d.default for d in self.dims]

    def check(self, vector: Sequence[float]) -> list[float]:
        values = [float(v) for v in vector]
        if len(values) != self.dim:
            raise DarwinError(f"The {self.name} genome has {self.dim} dimensions, got {len(values)} values.")
        for d, v in zip(self.dims, values):
            if not math.isfinite(v) or not (d.low - 1e-9 <= v <= d.high + 1e-9):
                raise DarwinError(f"Genome value {d.name}={v} is outside its bounds [{d.low}, {d.high}].")
        return [min(max(v, d.low), d.high) for d, v in zip(self.dims, values)]

    def describe(self, vector: Sequence[float]) -> list[tuple[str, float]]:
        """(dimension name, value) pairs, for cards and logs."""
        return list(zip(self.names, self.check(vector)))

    def to_recipe(
        self,
        genome_vector: Sequence[float],
        *,
        father: Any,
        mother: Any,
        layer_count: int,
        method: str,
        mri_ratios: Mapping[str, float] | None = None,
        frozen_layers: Sequence[int] = (),
        seed: int = 0,
        base: Any = "father",
        dtype: str | None = None,
    ) -> Recipe:
        """The Recipe of this genome (pure). `mri_ratios` (tensor name → MRI ratio) only matter in spaces with
        an mri_trust dimension; the others ignore them (their genome is the whole prescription)."""
        values = self.check(genome_vector)
        if not isinstance(layer_count, int) or layer_count < 1:
            raise DarwinError(f"A genome needs the parents' layer count (a positive integer), got {layer_count!r}.")
        frozen = tuple(sorted({int(x) for x in frozen_layers}))
        bad = [x for x in frozen if not 0 <= x < layer_count]
        if bad:
            raise DarwinError(f"Frozen layer {bad[0]} does not exist (the parents have {layer_count} layers).")
        ratios, densities, method_weight = self._tables(values, layer_count, frozen, mri_ratios or {})
        merge_method = get_method(method)
        return Recipe(
            father=father, mother=mother, method=method, base=base, ratios=ratios, densities=densities,
            transplant=self.transplant, frozen_layers=frozen, dtype=dtype, seed=seed,
            # e.g. TIES with normalize on ignores the ratio when only the mother has a task vector (methods/ties.py)
            normalize=merge_method.genome_normalize,
            method_weight=method_weight,
            genome=GenomeRecord(self.name, tuple(self.names), tuple(values)),
        )

    def _tables(self, values, layer_count, frozen, mri_ratios):  # pragma: no cover - abstract
        raise NotImplementedError


class DarwinV6Space(GenomeSpace):
    """The 14-dim genome of seed 002; see GENOME_TABLE_MD for how each dimension enters."""

    name = "darwin-v6"
    default_method = Method.DARE_TIES.value  # seed 002's engine
    transplant = DEFAULT_TRANSPLANT
    uses_mri = True

    def __init__(self) -> None:
        dims = [
            Dim("global_ratio", 0.0, 1.0, 0.5, "mother's share everywhere (the base odds)"),
            Dim("attn_ratio", 0.0, 1.0, 0.5, "attention and linear-attention (token mixer) tensors"),
            Dim("ffn_ratio", 0.0, 1.0, 0.5, "FFN, MoE experts, shared expert and router tensors"),
            Dim("embed_ratio", 0.0, 1.0, 0.5, "token embeddings and the LM head"),
            Dim("density_a", 0.1, 1.0, 1.0, "share of the father's task vector kept by DARE/TIES"),
            Dim("density_b", 0.1, 1.0, 1.0, "share of the mother's task vector kept by DARE/TIES"),
        ]
        dims += [Dim(f"block_{b}", 0.0, 1.0, 0.5, f"tensors of layers in block {b} of {V6_BLOCKS}")
                 for b in range(V6_BLOCKS)]
        dims += [
            Dim("mri_trust", 0.0, 1.0, 0.5, "weight of the MRI prescription against the genome's ratio"),
            Dim("merge_method_weight", 0.0, 1.0, 1.0, "share of the method's result against linear interpolation"),
        ]
        super().__init__(dims)

    def genome_ratio(self, values: Mapping[str, float], layer: int | None, role: str, layer_count: int) -> float:
        """The genome's ratio for a tensor of this layer and role (before MRI blending and thresholds)."""
        shares = [values["global_ratio"]]
        if role in _ROLE_DIMENSION:
            shares.append(values[_ROLE_DIMENSION[role]])
        if layer is not None:
            shares.append(values[f"block_{block_of(layer, layer_count, V6_BLOCKS)}"])
        return odds_combine(*shares)

    def _tables(self, vector, layer_count, frozen, mri_ratios):
        from darwin_core.parents.anatomy import classify

        values = dict(zip(self.names, vector))
        known: dict[tuple, float] = {}

        def ratio(layer: int | None, role: str) -> float:
            """`genome_ratio`, once per block and role group: a candidate asks it for every layer and tensor (a
            4B recipe ~650 times, a measurable share of a breeding's host time), and it depends on no more."""
            key = (None if layer is None else block_of(layer, layer_count, V6_BLOCKS), _ROLE_DIMENSION.get(role))
            if key not in known:
                known[key] = self.genome_ratio(values, layer, role, layer_count)
            return known[key]

        roles = {role: ratio(None, role) for role in EMBED_ROLES}
        layers = {}
        for layer in range(layer_count):
            row = {"*": ratio(layer, "norm")}
            for role in ATTN_ROLES + FFN_ROLES:
                row[role] = ratio(layer, role)
            layers[layer] = row
        tensors = {}
        trust = values["mri_trust"]
        for name, mri in sorted(mri_ratios.items()):
            role = classify(name)
            if role.tower != "language" or (role.layer is not None and role.layer in frozen):
                continue
            genome = ratio(role.layer, role.role)
            tensors[name] = min(max(float(mri) * trust + genome * (1.0 - trust), 0.0), 1.0)
        ratios = ratio_table(odds_combine(values["global_ratio"]), roles=roles, layers=layers, tensors=tensors)
        densities = density_table((values["density_a"], values["density_b"]))
        return ratios, densities, values["merge_method_weight"]


class PerLayerSpace(GenomeSpace):
    """One ratio per decoder layer (all its tensors, or only its FFN/MoE tensors); the rest is the father's."""

    def __init__(self, layer_count: int, *, ffn_only: bool = False) -> None:
        if not isinstance(layer_count, int) or layer_count < 1:
            raise DarwinError("The per-layer genome needs the parents' layer count.")
        self.layer_count = layer_count
        self.ffn_only = ffn_only
        self.name = "per-layer-ffn" if ffn_only else "per-layer"
        width = len(str(layer_count - 1))
        what = "FFN/MoE tensors" if ffn_only else "all tensors"
        super().__init__([Dim(f"layer_{i:0{width}d}", 0.0, 1.0, 0.5, f"{what} of layer {i}")
                          for i in range(layer_count)])

    def _tables(self, vector, layer_count, frozen, mri_ratios):
        if layer_count != self.layer_count:
            raise DarwinError(f"This {self.name} genome is for {self.layer_count} layers, the parents have {layer_count}.")
        layers = {}
        for layer, value in enumerate(vector):
            value = 0.0 if layer in frozen else value
            layers[layer] = {role: value for role in FFN_ROLES} if self.ffn_only else {"*": value}
        return ratio_table(0.0, layers=layers), density_table((1.0, 1.0)), 1.0


class PerBlockRoleSpace(GenomeSpace):
    """blocks × {attn, ffn}: attention-like and FFN-like tensors of each block; norms take the mean of the two."""

    name = "per-block-role"

    def __init__(self, blocks: int = V6_BLOCKS) -> None:
        if blocks < 1:
            raise DarwinError("The per-block-role genome needs at least one block.")
        self.blocks = blocks
        dims = []
        for b in range(blocks):
            dims.append(Dim(f"block_{b}_attn", 0.0, 1.0, 0.5, f"attention/linear-attention tensors of block {b}"))
            dims.append(Dim(f"block_{b}_ffn", 0.0, 1.0, 0.5, f"FFN/MoE tensors of block {b}"))
        super().__init__(dims)

    def _tables(self, vector, layer_count, frozen, mri_ratios):
        values = dict(zip(self.names, vector))
        layers = {}
        for layer in range(layer_count):
            if layer in frozen:
                layers[layer] = {"*": 0.0}
                continue
            b = block_of(layer, layer_count, self.blocks)
            attn, ffn = values[f"block_{b}_attn"], values[f"block_{b}_ffn"]
            row = {"*": (attn + ffn) / 2}
            row.update({role: attn for role in ATTN_ROLES})
            row.update({role: ffn for role in FFN_ROLES})
            layers[layer] = row
        return ratio_table(0.0, layers=layers), density_table((1.0, 1.0)), 1.0


SPACE_NAMES = ("darwin-v6", "per-layer", "per-layer-ffn", "per-block-role")
_SPACE_CLASSES: dict[str, type[GenomeSpace]] = {
    "darwin-v6": DarwinV6Space, "per-layer": PerLayerSpace, "per-layer-ffn": PerLayerSpace,
    "per-block-role": PerBlockRoleSpace,
}


def _unknown_space(name: str) -> DarwinError:
    return DarwinError(f"Unknown genome space {name!r}; known spaces are: {', '.join(SPACE_NAMES)}.")


def default_method(name: str) -> str:
    """The merge method a search in the space called `name` uses when it names none, without building the
    space (the per-layer spaces need the parents' layer count for that; their default method does not)."""
    if name not in _SPACE_CLASSES:
        raise _unknown_space(name)
    return _SPACE_CLASSES[name].default_method


# Pairings (`darwin_core.merge.pairing` modes) whose mother shares only her feed-forward weights with the father.
FFN_ONLY_PAIRING = PairingMode.FFN_ONLY
FFN_ONLY_GENOME = "per-layer-ffn"
# Spaces that give attention or norms their own ratio: on an FFN-only pair those dimensions would move nothing.
_BLENDS_MORE_THAN_FFN = ("per-layer", "per-block-role")


def genome_for_pairing(name: str, mode: str) -> str:
    """The genome space a run on a pair bred in pairing `mode` searches, for a config that asked for `name`.

    Why: an FFN-only pair (two families of one hidden size) breeds nothing but the FFNs, so a genome with
    attention dimensions would search directions that change no weight. `per-layer-ffn` is its natural genome;
    the config's default (darwin-v6, which the config cannot tell from a darwin-v6 it names) becomes it, and
    a space that blends attention or norms per layer is refused in one sentence. Other pairings keep `name`.
    """
    if mode != FFN_ONLY_PAIRING or name == FFN_ONLY_GENOME:
        return name
    if name in _BLENDS_MORE_THAN_FFN:
        raise DarwinError(f"These parents share only their feed-forward weights, so the {name} genome, which also "
                          f"blends attention and norms, cannot breed them; use genome: {FFN_ONLY_GENOME}.")
    if name not in _SPACE_CLASSES:
        raise _unknown_space(name)
    return FFN_ONLY_GENOME


def get_space(name: str, *, layer_count: int | None = None, blocks: int = V6_BLOCKS) -> GenomeSpace:
    """The genome space called `name`; per-layer spaces need `layer_count` (their dimension is the layer count)."""
    if name == "darwin-v6":
        return DarwinV6Space()
    if name in ("per-layer", "per-layer-ffn"):
        if layer_count is None:
            raise DarwinError(f"The {name} genome needs the parents' layer count.")
        return PerLayerSpace(layer_count, ffn_only=name == "per-layer-ffn")
    if name == "per-block-role":
        return PerBlockRoleSpace(blocks)
    raise _unknown_space(name)


def _v6_rows() -> str:
    space = DarwinV6Space()
    enters = {
        "global_ratio": "factor of every tensor's odds",
        "attn_ratio": "factor for roles attn, linear_attn",
        "ffn_ratio": "factor for roles ffn, experts, shared_expert, router",
        "embed_ratio": "factor for roles embed, lm_head",
        "density_a": "recipe densities (father); ignored by linear/slerp, and by every method when base = father",
        "density_b": "recipe densities (mother); ignored by linear/slerp",
        "mri_trust": "final = mri_ratio·mri_trust + genome_ratio·(1 − mri_trust) per tensor with an MRI ratio; "
                     "no effect without an MRI prescription",
        "merge_method_weight": "child = (1 − w)·linear(ratio) + w·method(ratio); no effect for linear",
    }
    rows = []
    for d in space.dims:
        how = enters.get(d.name, f"factor for tensors of layers ⌊layer·6/L⌋ = {d.name[-1]}")
        rows.append(f"| `{d.name}` | [{d.low:g}, {d.high:g}] | {d.default:g} | {d.doc} | {how} |")
    return "\n".join(rows)


GENOME_TABLE_MD = f"""\
### Genome spaces

Ratios are the **share of the mother** (0 = father, 1 = mother).

#### `darwin-v6` (14 dimensions, seed 002)

| dimension | bounds | neutral | what it controls | how it enters |
|---|---|---|---|---|
{_v6_rows()}

Per tensor with role `role` in layer `l` of `L` (block `b = ⌊l·6/L⌋`), the genome's ratio multiplies the mother's odds:

    odds(x) = x / (1 − x)
    odds(genome_ratio) = odds(global_ratio) · odds(role_ratio) · odds(block_b)

where `role_ratio` is attn_ratio, ffn_ratio or embed_ratio by the tensor's role (norms and other tensors have
no role factor) and `block_b` applies to tensors inside a layer (embeddings, LM head and the final norm have no
block factor). A dimension at 0.5 is neutral; one dimension alone gives exactly its value. Then:

1. MRI prescription (when an MRI scan gave this tensor a ratio): `final = mri_ratio·mri_trust + genome_ratio·(1 − mri_trust)`.
2. Frozen layers: ratio 0, the father's tensors as they are.
3. Transplant (on by default): `final < 0.15` → the father's tensor as is; `final > 0.85` → the mother's.
4. Otherwise the merge method at ratio `final` with densities (density_a, density_b), blended with linear
   interpolation by merge_method_weight.

Example (seed 002's genome, no MRI): attention in block 5: odds(0.4989)·odds(0.1766)·odds(0.8418) = 1.14 → 0.53;
FFN in block 5 → 0.98 (transplanted from the mother); attention in block 0 → 0.22.

#### `per-layer` / `per-layer-ffn` (one dimension per layer, the Genesis genome)

`layer_i ∈ [0, 1]`: the ratio of every tensor of layer i (`per-layer`) or of its FFN/MoE tensors only, attention
and norms staying the father's (`per-layer-ffn`). Embeddings, LM head and final norm: the father's. Frozen layers
are pinned to 0 whatever their genome value. No densities (1.0), no transplant thresholds.

#### `per-block-role` (blocks × {{attn, ffn}}, 12 dimensions)

`block_b_attn`, `block_b_ffn ∈ [0, 1]`: the ratio of the attention-like (attn, linear_attn) and FFN-like
(ffn, experts, shared_expert, router) tensors of the layers in block b; the block's norms take their mean.
Embeddings, LM head and final norm: the father's. Frozen layers pinned to 0.
"""
