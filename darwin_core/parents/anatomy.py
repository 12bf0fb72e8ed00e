"""What each tensor is: ``classify(name) -> TensorRole(layer, role, tower)``.

The genome speaks in layers and roles ("attention of block 3 at 20 % mother"), checkpoints speak in tensor
names. This module is the translation, driven by the pattern tables in `anatomy_tables` (architectures are
data) with a keyword fallback for families no table row knows. It is a pure function of the name: the same
name always gets the same role, whichever model it comes from, so the father's and the mother's tensors line up.

Roles: ``embed`` (token/position embeddings, Gemma per-layer-input embeddings), ``lm_head``, ``final_norm``,
``attn`` (q/k/v/o, fused qkv, q/k norms), ``linear_attn`` (GatedDeltaNet / Mamba mixers), ``ffn``
(gate/up/down, fused gate_up), ``router``, ``experts``, ``shared_expert``, ``norm`` (block norms), ``other``.
Towers: ``language`` (bred), ``vision`` / ``audio`` (encoders and projectors of multimodal checkpoints, copied
from the father; always role ``other``, layer ``None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from darwin_core.parents import anatomy_tables as tables
from darwin_core.errors import DarwinError

ROLES = tables.ROLES
TOWERS = tables.TOWERS

_TOWERS = tuple((re.compile(pattern), tower) for pattern, tower in tables.TOWER_PATTERNS)
_PREFIXES = tuple(re.compile(pattern) for pattern in tables.LANGUAGE_PREFIXES)
_AUX = tuple(re.compile(pattern) for pattern in tables.AUX_HEADS)
_LAYER = re.compile(tables.LAYER_RE)
_LAYER_ROLES = tuple((re.compile(pattern), role) for pattern, role in tables.LAYER_ROLES)
_MODEL_ROLES = tuple((re.compile(pattern), role) for pattern, role in tables.MODEL_ROLES)
_KEYWORDS = tuple((re.compile(pattern), role) for pattern, role in tables.KEYWORD_ROLES)
_EMBEDDINGS = tuple(re.compile(pattern) for pattern in tables.TOKEN_EMBEDDINGS)
_HEADS = tuple(re.compile(pattern) for pattern in tables.OUTPUT_HEADS)


class TensorRole(NamedTuple):
    """Where a tensor sits: decoder layer index (None outside the block stack), role, tower."""

    layer: int | None
    role: str
    tower: str


class NameParts(NamedTuple):
    """A tensor name taken apart: ``prefix + canonical`` is the name; ``local`` is the part inside its block.

    ``canonical`` drops the wrapper prefix (``model.language_model.layers.3.mlp.up_proj.weight`` and
    ``model.layers.3.mlp.up_proj.weight`` both → ``layers.3.mlp.up_proj.weight``), which is how the same
    tensor is matched between a multimodal checkpoint and a text-only one. ``local`` (``mlp.up_proj.weight``)
    matches tensors across layers and across architectures (cross-architecture FFN breeding).
    """

    tower: str
    prefix: str
    canonical: str
    layer: int | None
    local: str
    aux: bool  # inside an auxiliary head (e.g. Qwen3.5 multi-token prediction, ``mtp.*``)


@lru_cache(maxsize=65536)
def split_name(name: str) -> NameParts:
    """Take a tensor name apart into tower, wrapper prefix, canonical name, layer index and in-block name."""
    for pattern, tower in _TOWERS:
        if pattern.search(name):
            return NameParts(tower, "", name, None, name, False)
    for pattern in _AUX:
        match = pattern.match(name)
        if match:
            return NameParts("language", "", name, None, match["rest"], True)
    prefix, canonical = "", name
    for pattern in _PREFIXES:
        match = pattern.match(name)
        if match:
            prefix, canonical = name[: match.end()], name[match.end():]
            break
    layer_match = _LAYER.match(canonical)
    if layer_match:
        return NameParts("language", prefix, canonical, int(layer_match["layer"]), layer_match["rest"], False)
    # Generic fallback: a block index somewhere deeper (an unknown wrapper we did not strip).
    deep = re.search(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.(.+)$", canonical)
    if deep:
        return NameParts("language", prefix, canonical, int(deep[1]), deep[2], False)
    return NameParts("language", prefix, canonical, None, canonical, False)


def _in_block_role(local: str) -> str:
    for pattern, role in _LAYER_ROLES:
        if pattern.search(local):
            return role
    for pattern, role in _KEYWORDS:
        if pattern.search(local):
            return role
    return "other"


@lru_cache(maxsize=65536)
def classify(name: str) -> TensorRole:
    """The (layer, role, tower) of a tensor name; see the module docstring for the roles."""
    parts = split_name(name)
    if parts.tower != "language":
        return TensorRole(None, "other", parts.tower)
    if parts.aux:
        return TensorRole(None, _in_block_role(parts.local), "language")
    if parts.layer is not None:
        return TensorRole(parts.layer, _in_block_role(parts.local), "language")
    for pattern, role in _MODEL_ROLES:
        if pattern.search(parts.canonical):
            return TensorRole(None, role, "language")
    return TensorRole(None, "other", "language")


def canonical_name(name: str) -> str:
    """The name without its wrapper prefix (see `NameParts`)."""
    return split_name(name).canonical


def pair_names(father_names: Iterable[str], mother_names: Iterable[str]) -> dict[str, str | None]:
    """For each of the father's tensors, the mother's tensor with the same canonical name (None if she lacks it).

    The name mapping a multimodal checkpoint (``model.language_model.layers.…``) and its text-only sibling
    (``model.layers.…``) need to be bred; `darwin_core.merge.pairing` hands it to the merge path, which writes
    the child in the father's naming.
    """
    by_canonical = {split_name(name).canonical: name for name in mother_names}
    return {name: by_canonical.get(split_name(name).canonical) for name in father_names}


def summarize(names: Iterable[str]) -> dict[str, int]:
    """Number of tensors per role, every role present (zeros included), in `ROLES` order (for the UI)."""
    counts = dict.fromkeys(ROLES, 0)
    for name in names:
        counts[classify(name).role] += 1
    return counts


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config: ``text_config`` of a multimodal config, else the config itself."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = config.get(key)
        if isinstance(sub, dict) and sub:
            return sub
    return config


def layer_count(config: dict[str, Any]) -> int:
    """Number of decoder layers of the language model (``text_config`` for multimodal checkpoints)."""
    text = text_config(config)
    for key in tables.LAYER_COUNT_KEYS:
        value = text.get(key)
        if isinstance(value, int) and value > 0:
            return value
    raise DarwinError("The model's config.json does not say how many layers it has (no num_hidden_layers).")


def check_config_against_weights(config: dict[str, Any], shapes: Mapping[str, Sequence[int]], label: str) -> None:
    """Refuse a config.json whose sizes the weights do not hold, before anything is built from it.

    Everything downstream trusts the config: the genome makes one gene per layer, ``from_pretrained`` allocates
    every layer and the embedding at the config's sizes (initialising what the files lack). A config claiming
    10^9 layers or a 10^6-wide hidden state beside a tiny checkpoint would hang or exhaust memory, so each size
    is held against the weights' own shapes: the layer count against the layers the tensor names index (or,
    where no name carries a layer index, against the number of tensors: a layer is at least one tensor), the
    vocabulary and hidden size against the token embedding (the output head where there is none). Every key a
    size may go by is checked, not just the first, since transformers' attribute maps may read any of them.
    ``shapes`` maps tensor names to shapes, from the headers; empty (pickle weights not downloaded) checks nothing.
    """
    if not shapes:
        return
    text = text_config(config)
    layers = [value for _, value in _config_sizes(text, tables.LAYER_COUNT_KEYS)]
    if layers:
        found = 1 + max((split_name(n).layer for n in shapes if _in_stack(n)), default=-1)
        held = found or len(shapes)
        if max(layers) > held:
            what = f"{found} layers" if found else f"{held} tensors and no layer"
            raise DarwinError(f"The config.json of {label} says the model has {max(layers)} layers but its "
                              f"weights hold {what}, so it is refused.")
    table = _token_table(shapes)
    if table is None:
        raise DarwinError(f"The weights of {label} have no token embedding or output head to check its "
                          "config.json against, so it is refused.")
    name, (vocab, width) = table
    vocab_claims = _config_sizes(text, tables.VOCAB_SIZE_KEYS) or _config_sizes(config, tables.VOCAB_SIZE_KEYS)
    width_claims = _config_sizes(text, tables.EMBEDDING_WIDTH_KEYS)
    hidden_claims = _config_sizes(text, tables.HIDDEN_SIZE_KEYS)
    if width_claims:  # a narrower embedding: the hidden size must still be a width the block stack has
        stack_dims = {int(d) for n, shape in shapes.items() if _in_stack(n) for d in shape}
        hidden_claims = [(k, v) for k, v in hidden_claims if v not in stack_dims]
    else:
        width_claims = hidden_claims
        hidden_claims = []
    wrong = [(k, v) for k, v in vocab_claims if v != vocab] + [(k, v) for k, v in width_claims if v != width]
    if wrong:
        raise DarwinError(f"The config.json of {label} says {wrong[0][0]} {wrong[0][1]} but its {name} is "
                          f"[{vocab}, {width}], so it is refused.")
    if hidden_claims:
        raise DarwinError(f"The config.json of {label} says {hidden_claims[0][0]} {hidden_claims[0][1]}, a width "
                          "no tensor of its decoder layers has, so it is refused.")


def _config_sizes(config: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, int]]:
    """(key, value) for each of ``keys`` the config sets to an integer (bools are not sizes)."""
    return [(key, config[key]) for key in keys
            if isinstance(config.get(key), int) and not isinstance(config.get(key), bool)]


def _in_stack(name: str) -> bool:
    """A language-model tensor inside the decoder block stack (not a tower, not an auxiliary head's layer)."""
    parts = split_name(name)
    return parts.tower == "language" and not parts.aux and parts.layer is not None


def _token_table(shapes: Mapping[str, Sequence[int]]) -> tuple[str, tuple[int, int]] | None:
    """(name, [vocab, width]) of the 2-D token embedding, else of the output head, else None."""
    for patterns in (_EMBEDDINGS, _HEADS):
        for name, shape in shapes.items():
            parts = split_name(name)
            if (len(shape) == 2 and parts.tower == "language" and parts.layer is None and not parts.aux
                    and any(p.search(parts.canonical) for p in patterns)):
                return name, (int(shape[0]), int(shape[1]))
    return None


# -- cross-architecture FFN pairing (`darwin_core.merge.pairing` builds the merge's name map from it) ----------
# Roles bred when only the feed-forward weights of two families line up; everything else stays the father's.
FFN_PAIR_ROLES = frozenset({"ffn", "experts", "shared_expert", "router"})


class LayerPair(NamedTuple):
    """One father layer of an FFN-only pair: the mother layer it reads, whether its FFN is bred, and why.

    ``tensors`` are the (father name, mother name) pairs blended; empty when the layer stays the father's.
    """

    father_layer: int
    mother_layer: int
    bred: bool
    tensors: tuple[tuple[str, str], ...]
    why: str


def stack_depth(names: Iterable[str]) -> int:
    """Decoder layers the names index (highest layer of the block stack + 1; towers and aux heads not counted)."""
    return 1 + max((split_name(n).layer for n in names if _in_stack(n)), default=-1)


def depth_layer_map(father_layers: int, mother_layers: int) -> dict[int, int]:
    """Father layer i → the mother layer at the same relative depth: ⌊i·(M−1)/(F−1) + ½⌋ (F = 1 → layer 0).

    The first layers meet, the last layers meet, and the ones between are spread evenly; integer arithmetic,
    so the map never depends on float rounding.
    """
    if father_layers < 1 or mother_layers < 1:
        raise DarwinError("Both parents need at least one decoder layer to map layers by depth.")
    if father_layers == 1:
        return {0: 0}
    span_f, span_m = father_layers - 1, mother_layers - 1
    return {i: (2 * i * span_m + span_f) // (2 * span_f) for i in range(father_layers)}


def resolved_layer_map(father_layers: int, mother_layers: int,
                       override: Mapping[int, int] | None = None) -> dict[int, int]:
    """The depth map with a recipe's ``layer_map`` entries put over it, each checked against both depths."""
    mapping = depth_layer_map(father_layers, mother_layers)
    for father_layer, mother_layer in (override or {}).items():
        if not 0 <= father_layer < father_layers:
            raise DarwinError(f"The recipe's layer_map names father layer {father_layer}, but the father has "
                              f"{father_layers} layers.")
        if not 0 <= mother_layer < mother_layers:
            raise DarwinError(f"The recipe's layer_map sends father layer {father_layer} to mother layer "
                              f"{mother_layer}, but the mother has {mother_layers} layers.")
        mapping[father_layer] = mother_layer
    return mapping


def _ffn_by_layer(shapes: Mapping[str, Sequence[int]]) -> dict[int, dict[str, str]]:
    """layer → {in-block name: tensor name} of the feed-forward tensors of the language block stack."""
    out: dict[int, dict[str, str]] = {}
    for name in shapes:
        if _in_stack(name) and classify(name).role in FFN_PAIR_ROLES:
            parts = split_name(name)
            out.setdefault(parts.layer, {})[parts.local] = name
    return out


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def ffn_layer_pairs(father_shapes: Mapping[str, Sequence[int]], mother_shapes: Mapping[str, Sequence[int]],
                    layer_map: Mapping[int, int] | None = None) -> list[LayerPair]:
    """For each father layer, its FFN tensors paired with the mapped mother layer's by in-block name and shape.

    A layer is bred when every FFN tensor name the two layers share has the same shape in both (gate, up and
    down together: blending a gate but not its down projection would be meaningless); its father-only FFN
    tensors (Gemma 4's per-layer-input gate) stay his. Otherwise the whole layer stays the father's, and
    ``why`` names the first shape that differs. ``layer_map`` overrides the depth map (`resolved_layer_map`).
    """
    father_ffn, mother_ffn = _ffn_by_layer(father_shapes), _ffn_by_layer(mother_shapes)
    mapping = resolved_layer_map(stack_depth(father_shapes), stack_depth(mother_shapes), layer_map)
    rows = []
    for father_layer, mother_layer in sorted(mapping.items()):
        mine, hers = father_ffn.get(father_layer, {}), mother_ffn.get(mother_layer, {})
        common = [local for local in mine if local in hers]
        differing = [local for local in common
                     if tuple(father_shapes[mine[local]]) != tuple(mother_shapes[hers[local]])]
        if not common:
            why = f"mother layer {mother_layer} has no feed-forward tensor of the same name"
            rows.append(LayerPair(father_layer, mother_layer, False, (), why))
        elif differing:
            local = differing[0]
            why = (f"feed-forward shapes differ: {local} is {_fmt_shape(father_shapes[mine[local]])} in the father "
                   f"but {_fmt_shape(mother_shapes[hers[local]])} in mother layer {mother_layer}")
            rows.append(LayerPair(father_layer, mother_layer, False, (), why))
        else:
            extra = len(mine) - len(common)
            why = f"{len(common)} feed-forward tensors blended with mother layer {mother_layer}" + (
                f"; {extra} the mother lacks stay the father's" if extra else "")
            rows.append(LayerPair(father_layer, mother_layer, True, tuple((mine[k], hers[k]) for k in common), why))
    return rows
