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

The child keeps the father's architecture, config and tokenizer, so it loads with the father's model class —
except where the parents' vocabularies differ: then the pairing carries a `VocabularyPlan`
(`darwin_core.merge.vocabulary`, mergekit's ``tokenizer_source``: father, mother or union), and `paired_tensors`,
the one merge call of `merge_to_disk` and of the resident child, reads both parents through `AlignedSources`, so
their embedding and head rows meet token by token and the child has the plan's vocabulary. An FFN-only pair never
reads the mother's embeddings: it keeps the father's tokenizer, and another source is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.apply import merge_tensors
from darwin_core.merge.vocabulary import AlignedSources, TokenizerSource, VocabularyPlan, plan_vocabulary
from darwin_core.parents import anatomy
from darwin_core.parents.compatibility import NotBreedable, PairingMode, Verdict, compatibility

MODES = {Verdict.BREEDABLE: PairingMode.NAMES, Verdict.WRAPPER: PairingMode.CANONICAL, Verdict.FFN_ONLY: PairingMode.FFN_ONLY}


@dataclass(frozen=True)
class Pairing:
    """How the father's tensors meet the mother's: `names` maps each father tensor to the mother's tensor it is
    bred with (None: the father's as is); None for the ``names`` mode (every tensor by its own name)."""

    mode: PairingMode
    names: dict[str, str | None] | None
    layers: tuple[anatomy.LayerPair, ...] = ()
    vocabulary: VocabularyPlan | None = None  # the parents' vocabularies differ: the child's, row by row

    def mother_name(self, name: str) -> str | None:
        """The mother's tensor bred with the father's `name` (None: keep the father's)."""
        return name if self.names is None else self.names.get(name)

    @property
    def kept_layers(self) -> list[int]:
        """Father layers whose FFN stays his (``ffn_only``): their shapes do not line up with the mother's."""
        return [row.father_layer for row in self.layers if not row.bred]


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, (shape, _) in model.tensors.items()}


def pairing_for(father: Any, mother: Any, layer_map: Mapping[int, int] | None = None,
                tokenizer_source: TokenizerSource | str | None = None) -> Pairing:
    """The pairing of two resolved parents (`hub.ModelRef`: config and safetensors headers, no weight read).

    Raises `NotBreedable` with the page's sentence when no pairing breeds them. `layer_map` (a recipe's) only
    matters for ``ffn_only`` pairs. With a `tokenizer_source` (a recipe's) the parents' tokenizers are read too
    (their folders must be on this machine) and the pairing carries the vocabulary plan (`with_vocabulary`);
    without one it is the tensors' pairing alone, as before any download.
    """
    pairing = _tensor_pairing(father, mother, layer_map)
    if tokenizer_source is None:
        return pairing
    folders = [getattr(model, "folder", None) for model in (father, mother)]
    if None in folders:
        raise DarwinError("The parents' tokenizers are read from their folders, so both must be downloaded first.")
    return with_vocabulary(pairing, folders[0], folders[1], tokenizer_source)


def with_vocabulary(pairing: Pairing, father_dir: str | Path, mother_dir: str | Path,
                    tokenizer_source: TokenizerSource | str = TokenizerSource.FATHER) -> Pairing:
    """`pairing` with the vocabulary plan of two parent folders (None when their vocabularies are the same).

    A broken tokenizer is refused in one sentence (`check_tokenizers`). An FFN-only pair keeps the father's
    embeddings and tokenizer, so it takes no plan, and a mother's or union tokenizer is refused for it.
    """
    source = TokenizerSource(getattr(tokenizer_source, "value", tokenizer_source))
    if pairing.mode == PairingMode.FFN_ONLY:
        from darwin_core.parents.tokenizers import check_tokenizers

        check_tokenizers(father_dir, mother_dir)
        if source is not TokenizerSource.FATHER:
            raise DarwinError(f"An FFN-only pair keeps the father's embeddings and tokenizer, so its tokenizer_source "
                              f"must be father, not {source.value}.")
        return pairing
    return replace(pairing, vocabulary=plan_vocabulary(father_dir, mother_dir, source))


def _tensor_pairing(father: Any, mother: Any, layer_map: Mapping[int, int] | None) -> Pairing:
    """The tensors' pairing of two resolved parents (no vocabulary plan)."""
    verdict = compatibility(father, mother)
    if not verdict.breedable:
        raise NotBreedable(verdict.refusal)
    mode = MODES[verdict.verdict]
    if mode == PairingMode.NAMES:
        return Pairing(mode, None)
    father_names, mother_names = list(father.tensors), list(mother.tensors)
    if mode == PairingMode.CANONICAL:
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
                        layer_map: Mapping[int, int] | None = None,
                        tokenizer_source: TokenizerSource | str | None = None) -> Pairing:
    """The pairing of two model folders on this machine (their config and headers; tokenizers with a source)."""
    father, mother = resolved_folders(father_dir, mother_dir)
    return pairing_for(father, mother, layer_map, tokenizer_source)


def own_vocabulary(father_dir: str | Path, mother_dir: str | Path) -> bool:
    """Whether the mother's vocabulary is not the father's (her tokens or her row count), so her own weights can
    only be scored as her own model, with her tokenizer (the resident child's reference curve)."""
    return plan_vocabulary(father_dir, mother_dir, TokenizerSource.FATHER) is not None


def aligned_sources(pairing: Pairing, father: Any, mother: Any) -> tuple[Any, Any]:
    """The father and mother as the merge path reads them: as they are, or through `AlignedSources` when the
    pairing carries a vocabulary plan (their vocabulary tensors then in the child's vocabulary)."""
    if pairing.vocabulary is None:
        return father, mother
    pair = AlignedSources(pairing.vocabulary, father, mother, mother_name=pairing.mother_name)
    return pair.father, pair.mother


def paired_tensors(recipe: Any, pairing: Pairing, father: Any, mother: Any, names: Iterable[str] | None = None, *,
                   device: str | torch.device = "cpu", base: Any = None) -> Iterator[tuple[str, torch.Tensor]]:
    """`merge_tensors` for a pair: the mother's tensors by the pairing's names, the vocabulary tensors aligned by
    token when the pairing carries a plan. `merge_to_disk` and the resident child both merge through here, so the
    child scored in memory is the child written to disk."""
    if pairing.vocabulary is not None and base is not None:
        raise DarwinError("A common ancestor as base is not supported yet for parents whose vocabularies differ; "
                          "use base: father.")
    father, mother = aligned_sources(pairing, father, mother)
    return merge_tensors(recipe, father, mother, names, device=device, base=base, pairing=pairing.names)


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
