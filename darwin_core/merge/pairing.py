"""Which of the mother's tensors each of the father's tensors is bred with: the merge path's one name map.

The merge path (`merge_tensors`) walks the father's tensors; a `Pairing` tells it, for each one, the mother's
tensor to blend it with, or None to keep the father's as it is. It is built from the two parents' anatomies
(`darwin_core.parents.anatomy`) in the mode the compatibility verdict names, so the CLI merge, the evolution's
resident child and the page all breed a pair the same way:

- ``names`` (verdict ``full``): the same names; `names` is None and the merge path runs exactly as it did before
  pairings existed, byte for byte;
- ``canonical`` (verdict ``wrapper``): a multimodal checkpoint and its text-only sibling; language tensors paired
  by canonical name (`anatomy.pair_names`), the child written in the father's naming, his vision/audio towers
  untouched (towers are never bred: `Recipe.plan_for`);
- ``ffn_only`` (verdict ``ffn_only``): two families with the same hidden size. Father layer i reads mother layer
  ⌊i·(M−1)/(F−1) + ½⌋ (the same relative depth, `anatomy.depth_layer_map`; F, M the layer counts), which a
  recipe's ``layer_map: {father_layer: mother_layer}`` overrides entry by entry. Per layer, the FFN tensors
  (gate/up/down, MoE experts and router) are paired by in-block name when every shared name has the same
  shape, else the layer stays the father's and `layer_rows` says why. The mother's attention, linear-attention,
  norm and embedding tensors are never read.

The child keeps the father's architecture, config and tokenizer, so it loads with the father's model class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darwin_core.parents import anatomy
from darwin_core.parents.compatibility import NotBreedable, Verdict, compatibility

MODES = {Verdict.BREEDABLE: "names", Verdict.WRAPPER: "canonical", Verdict.FFN_ONLY: "ffn_only"}


@dataclass(frozen=True)
class Pairing:
    """How the father's tensors meet the mother's: `names` maps each father tensor to the mother's tensor it is
    bred with (None: the father's as is); None for the ``names`` mode (every tensor by its own name)."""

    mode: str
    names: dict[str, str | None] | None
    layers: tuple[anatomy.LayerPair, ...] = ()

    def mother_name(self, name: str) -> str | None:
        """The mother's tensor bred with the father's `name` (None: keep the father's)."""
        return name if self.names is None else self.names.get(name)

    @property
    def kept_layers(self) -> list[int]:
        """Father layers whose FFN stays his (``ffn_only``): their shapes do not line up with the mother's."""
        return [row.father_layer for row in self.layers if not row.bred]


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, (shape, _) in model.tensors.items()}


def pairing_for(father: Any, mother: Any, layer_map: Mapping[int, int] | None = None) -> Pairing:
    """The pairing of two resolved parents (`hub.ModelRef`: config and safetensors headers, no weight read).

    Raises `NotBreedable` with the page's sentence when no pairing breeds them. `layer_map` (a recipe's) only
    matters for ``ffn_only`` pairs.
    """
    verdict = compatibility(father, mother)
    if not verdict.breedable:
        raise NotBreedable(verdict.refusal)
    mode = MODES[verdict.verdict]
    if mode == "names":
        return Pairing(mode, None)
    father_names, mother_names = list(father.tensors), list(mother.tensors)
    if mode == "canonical":
        paired = anatomy.pair_names(father_names, mother_names)
        return Pairing(mode, {name: (other if anatomy.classify(name).tower == "language" else None)
                              for name, other in paired.items()})
    language = lambda shapes: {n: s for n, s in shapes.items() if anatomy.classify(n).tower == "language"}  # noqa: E731
    rows = anatomy.ffn_layer_pairs(language(_shapes(father)), language(_shapes(mother)), layer_map)
    if not any(row.bred for row in rows):
        raise NotBreedable(f"These parents cannot be bred: with this layer_map no father layer's feed-forward "
                           f"weights line up with the mother's ({rows[0].why} on father layer 0).")
    names: dict[str, str | None] = dict.fromkeys(father_names)
    for row in rows:
        names.update(row.tensors)
    return Pairing(mode, names, tuple(rows))


def pairing_for_folders(father_dir: str | Path, mother_dir: str | Path,
                        layer_map: Mapping[int, int] | None = None) -> Pairing:
    """The pairing of two model folders on this machine (their config and headers only)."""
    father, mother = resolved_folders(father_dir, mother_dir)
    return pairing_for(father, mother, layer_map)


def resolved_folders(*folders: str | Path) -> list[Any]:
    """`hub.ModelRef` of each local folder (config and safetensors headers)."""
    from darwin_core.parents.hub import resolve_model

    return [resolve_model(str(folder), local_mode=True) for folder in folders]


def layer_rows(pairing: Pairing, frozen_layers: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The layer map as data, one row per father layer, for the card, the report and the Parents tab picture:
    ``{"father_layer", "mother_layer", "bred", "why"}``; a frozen layer is kept and says so. Empty unless the
    pair is ``ffn_only`` (other pairings breed every layer with its own)."""
    frozen = set(frozen_layers)
    rows = []
    for row in pairing.layers:
        bred = row.bred and row.father_layer not in frozen
        why = "frozen: the recipe keeps this layer the father's" if row.bred and not bred else row.why
        rows.append({"father_layer": row.father_layer, "mother_layer": row.mother_layer, "bred": bred, "why": why})
    return rows


def layer_map_rows(father: Any, mother: Any, layer_map: Mapping[int, int] | None = None,
                   frozen_layers: Sequence[int] = ()) -> list[dict[str, Any]]:
    """`layer_rows` of two resolved parents; empty when they are not an ``ffn_only`` pair (or not breedable)."""
    try:
        pairing = pairing_for(father, mother, layer_map)
    except NotBreedable:
        return []
    return layer_rows(pairing, frozen_layers)
