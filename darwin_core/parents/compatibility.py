"""Whether two parents can be bred, and how: a verdict given only for what Darwin's one merge path implements.

The merge path (`darwin_core.merge.methods.apply.merge_tensors`, fed by `merge_to_disk` and by the resident child
of an evolution) blends each of the father's tensors with the mother's tensor a *pairing* names
(`darwin_core.merge.pairing`, built from the verdict): the same name, the same canonical name, or — for two
families that share only their feed-forward shapes — the FFN tensor of the mother's layer at the same relative
depth; a tensor paired with nothing is the father's. Everything no pairing covers is refused up front, with the
sentence the page shows, by `check_breedable` (the CLI `merge` and `evolve`, a queued run) before a run folder
exists and before a weight is downloaded. Never "breedable" and then a failure in the worker.

Verdicts:
- ``full``: same family, same tensors by name and shape; every tensor can be blended;
- ``wrapper``: a multimodal checkpoint and its text-only sibling, whose language tensors match by canonical name
  (`anatomy.pair_names`); the child is written in the father's naming, his vision/audio towers untouched;
- ``ffn_only``: two families (or depths) with the same hidden size whose feed-forward weights line up on at
  least one layer (the seeds' cross-architecture breeding): only those FFNs are bred, attention, norms and
  embeddings stay the father's, and the reason names the layers kept as the father's;
- ``incompatible``: refused, in one sentence.

Parents of one family whose only difference is the number of rows of their vocabulary tensors (a fine-tune that
added chat tokens or padded its embedding) are ``full`` (or ``wrapper``) with `vocab_sizes` set: their rows are
aligned by token (`darwin_core.merge.vocabulary`, mergekit's ``tokenizer_source``), and the reason says which
tokenizer the child gets by default and how to pick another. Different hidden sizes are still refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from darwin_core.errors import DarwinError
from darwin_core.parents import anatomy

if TYPE_CHECKING:
    from darwin_core.parents.hub import ModelRef

# Roles that make up a block's feed-forward part (what "ffn_only" breeding would touch).
FFN_ROLES = frozenset({"ffn", "experts", "shared_expert"})
_MAX_DIFFERING = 50
REFUSAL_PREFIX = "These parents cannot be bred: "


class NotBreedable(DarwinError):
    """The refusal of a pair the merge path cannot breed (the page's sentence), told apart from the parents'
    own resolution errors (not found, gated, offline), which callers may leave to the run to report."""


class Verdict(StrEnum):
    """What the merge path can do with a pair. The values are the strings the page has always read."""

    BREEDABLE = "full"  # every tensor, by name, through the one merge path
    WRAPPER = "wrapper"  # language tensors paired by canonical name (multimodal wrapper vs text-only sibling)
    FFN_ONLY = "ffn_only"  # only the feed-forward weights line up: those are bred, the rest is the father's
    INCOMPATIBLE = "incompatible"


class PairingMode(StrEnum):
    """How the merge path pairs the father's tensors with the mother's (`darwin_core.merge.pairing`), one mode
    per breedable verdict; kept beside the verdicts so the genome spaces (a layer above the merge) can name it."""

    NAMES = "names"  # every tensor by its own name
    CANONICAL = "canonical"  # language tensors by canonical name (a wrapper and its text-only sibling)
    FFN_ONLY = "ffn_only"  # feed-forward tensors through the layer map, the rest the father's


@dataclass(frozen=True)
class Compatibility:
    """A verdict (`Verdict`, equal to its string: "full", "wrapper", "ffn_only", "incompatible"), the reason in
    one sentence, the original names of the differing tensors (at most 50), and for ``ffn_only`` the father's
    layers whose FFN stays his (their shapes do not line up with the mapped mother layer)."""

    verdict: Verdict
    reason: str
    differing: list[str] = field(default_factory=list)
    kept_layers: list[int] = field(default_factory=list)
    vocab_sizes: tuple[int, int] | None = None  # (father's, mother's) rows when only the vocabularies differ

    @property
    def breedable(self) -> bool:
        return self.verdict is not Verdict.INCOMPATIBLE

    @property
    def refusal(self) -> str | None:
        """The sentence a refused pair gets (page, CLI, queue); None when the pair is breedable."""
        return None if self.breedable else REFUSAL_PREFIX + self.reason


def check_breedable(father: ModelRef, mother: ModelRef) -> None:
    """Raise the refusal sentence (NotBreedable, a DarwinError) unless the merge path can breed father and mother."""
    refusal = compatibility(father, mother).refusal
    if refusal is not None:
        raise NotBreedable(refusal)


def check_named_pair(father: str, mother: str, *, local_mode: bool, runs_dir: str | Path | None = None,
                     token: str | None = None, check_access: bool = True) -> tuple[ModelRef, ModelRef]:
    """Resolve two parent names (demo:, run:, a Hub id, a folder) from their config and headers only, no weight
    downloaded, and refuse the pair unless it is breedable; the two ModelRefs when it is."""
    from darwin_core.parents.names import resolve_parent_name

    father_ref, mother_ref = (resolve_parent_name(name, local_mode=local_mode, token=token, runs_dir=runs_dir,
                                                  check_access=check_access) for name in (father, mother))
    check_breedable(father_ref, mother_ref)
    return father_ref, mother_ref


def _language_shapes(ref: ModelRef) -> dict[str, tuple[tuple[int, ...], str]]:
    """canonical name → (shape, original name) for the language-model tensors (towers are copied, not bred)."""
    out = {}
    for name, (shape, _) in ref.tensors.items():
        parts = anatomy.split_name(name)
        if parts.tower == "language":
            out[parts.canonical] = (tuple(shape), name)
    return out


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def compatibility(a: ModelRef, b: ModelRef) -> Compatibility:
    """Can father ``a`` and mother ``b`` be bred, and how?

    - ``full`` (BREEDABLE): the same language-model family (``text_model_type``) and the same tensors, by name
      and shape. Every tensor can be blended.
    - ``wrapper`` (WRAPPER): the same, except that the names differ by the multimodal wrapper prefix: paired by
      canonical name, the child in the father's naming, towers the father's.
    - ``ffn_only`` (FFN_ONLY): different families or layer counts, but the same hidden size and at least one
      father layer whose feed-forward tensors have the shapes of the mother's layer at the same relative depth
      (`anatomy.ffn_layer_pairs`; the seeds' cross-architecture FFN breeding: attention stays the father's).
      Two families with the same shapes (Qwen3 vs Llama, Mistral vs Llama) are ``ffn_only`` too, never ``full``:
      equal shapes do not make their attention blocks compute the same thing (Qwen3 adds q/k norms).
    - ``incompatible`` otherwise, with the reason naming the first differing tensor (or the vocabulary sizes).
    Vision/audio towers do not decide the family: the child always keeps the father's.
    """
    if not a.tensors or not b.tensors:
        missing = a if not a.tensors else b
        raise DarwinError(f"The tensor shapes of {missing.label} are unknown until its weights are downloaded.")
    shapes_a, shapes_b = _language_shapes(a), _language_shapes(b)
    same_family = a.text_model_type == b.text_model_type
    layers_a, layers_b = a.num_layers, b.num_layers
    differing = _differing(shapes_a, shapes_b)

    if same_family and not differing:
        return _same_language_model(a, b, shapes_a, shapes_b)
    if same_family and layers_a == layers_b and _only_vocabulary(differing, shapes_a, shapes_b):
        return _vocabulary_only(a, b, shapes_a, shapes_b, differing)

    hidden_a, hidden_b = a.hidden_size, b.hidden_size
    first = differing[0] if differing else None
    if hidden_a is not None and hidden_a == hidden_b and (not same_family or layers_a != layers_b):
        return _ffn_only(a, b, shapes_a, shapes_b, differing)

    names = [_original(name, shapes_a, shapes_b) for name in differing[:_MAX_DIFFERING]]
    if hidden_a != hidden_b:
        why = f"The hidden sizes differ ({hidden_a} vs {hidden_b}), so no weight can be blended"
        if first:
            why += f"; {_difference_clause(first, shapes_a, shapes_b, a, b)}"
        return Compatibility(Verdict.INCOMPATIBLE, why + ".", names)
    vocab_names = [n for n in differing if anatomy.classify(n).role in ("embed", "lm_head")]
    if a.vocab_size != b.vocab_size or (vocab_names and _vocab_dims(vocab_names[0], shapes_a, shapes_b)):
        va, vb = a.vocab_size, b.vocab_size
        if va == vb and vocab_names:
            va, vb = _vocab_dims(vocab_names[0], shapes_a, shapes_b)
        return Compatibility(Verdict.INCOMPATIBLE, f"The vocabularies differ in size ({va} vs {vb} tokens), so the "
                             "embeddings and the output head cannot be blended.", names)
    assert first is not None
    return Compatibility(Verdict.INCOMPATIBLE,
                         _difference_clause(first, shapes_a, shapes_b, a, b, capital=True) + ".", names)


def _same_language_model(a: ModelRef, b: ModelRef, shapes_a: dict, shapes_b: dict) -> Compatibility:
    """Same family, language tensors equal by canonical name and shape: by name when the names are the same
    (and so are the towers), by canonical name when they differ by the wrapper prefix."""
    renamed = [(name_a, shapes_b[canonical][1]) for canonical, (_, name_a) in shapes_a.items()
               if shapes_b[canonical][1] != name_a]
    if renamed:
        name_a, name_b = renamed[0]
        return Compatibility(Verdict.WRAPPER, f"Same architecture ({a.text_model_type}) and all {len(shapes_a)} "
                             f"language-model tensors match in shape, their names differing by the multimodal "
                             f"wrapper prefix ({name_a} in {a.label}, {name_b} in {b.label}): they are paired by "
                             "canonical name, the child keeps the father's naming and his vision and audio towers.", [])
    only_one = [name for name in a.tensors if name not in b.tensors] + [name for name in b.tensors if name not in a.tensors]
    if only_one:
        owner, other = (a, b) if only_one[0] in a.tensors else (b, a)
        return Compatibility(Verdict.INCOMPATIBLE, f"Tensor {only_one[0]} exists in {owner.label} but not in "
                             f"{other.label}, and Darwin's merge needs both parents to have the same tensors "
                             "(vision and audio towers included).", only_one[:_MAX_DIFFERING])
    return Compatibility(Verdict.BREEDABLE, f"Same architecture ({a.text_model_type}) and all {len(shapes_a)} "
                                            "language-model tensors match in name and shape.", [])


def _only_vocabulary(differing: list[str], shapes_a: dict, shapes_b: dict) -> bool:
    """Whether every differing tensor is a vocabulary tensor present in both whose shapes differ only in rows."""
    from darwin_core.parents.tokenizers import is_vocabulary_tensor

    return bool(differing) and all(is_vocabulary_tensor(name) and _vocab_dims(name, shapes_a, shapes_b)
                                   for name in differing)


def _vocabulary_only(a: ModelRef, b: ModelRef, shapes_a: dict, shapes_b: dict, differing: list[str]) -> Compatibility:
    """Same language model but for the vocabulary's size: breedable with a tokenizer source (rows by token)."""
    rows_a, rows_b = _vocab_dims(differing[0], shapes_a, shapes_b) or (a.vocab_size, b.vocab_size)
    same = _same_language_model(a, b, {k: v for k, v in shapes_a.items() if k not in differing},
                                {k: v for k, v in shapes_b.items() if k not in differing})
    if not same.breedable:
        return same
    names = [_original(name, shapes_a, shapes_b) for name in differing]
    return Compatibility(same.verdict, f"Same architecture ({a.text_model_type}) and every language-model tensor "
                         f"matches but the embeddings and the output head, whose vocabularies differ in size "
                         f"({rows_a} vs {rows_b} rows): their rows are aligned by token, and the child gets the "
                         "father's tokenizer unless the recipe sets tokenizer_source: mother or union.",
                         names, vocab_sizes=(rows_a, rows_b))


def _differing(shapes_a: dict, shapes_b: dict) -> list[str]:
    """Canonical names whose presence or shape differs, in a's order then b's extras."""
    out = [name for name, (shape, _) in shapes_a.items() if name not in shapes_b or shapes_b[name][0] != shape]
    out += [name for name in shapes_b if name not in shapes_a]
    return out


def _original(canonical: str, shapes_a: dict, shapes_b: dict) -> str:
    return (shapes_a.get(canonical) or shapes_b[canonical])[1]


def _difference_clause(canonical: str, shapes_a: dict, shapes_b: dict, a: ModelRef, b: ModelRef,
                       capital: bool = False) -> str:
    name = _original(canonical, shapes_a, shapes_b)
    if canonical not in shapes_b:
        text = f"tensor {name} exists in {a.label} but not in {b.label}"
    elif canonical not in shapes_a:
        text = f"tensor {name} exists in {b.label} but not in {a.label}"
    else:
        text = f"tensor {name} has shape {_fmt(shapes_a[canonical][0])} in {a.label} but {_fmt(shapes_b[canonical][0])} in {b.label}"
    return text[0].upper() + text[1:] if capital else text


def _vocab_dims(canonical: str, shapes_a: dict, shapes_b: dict) -> tuple[int, int] | None:
    from darwin_core.parents.tokenizers import vocabulary_rows

    if canonical in shapes_a and canonical in shapes_b:
        return vocabulary_rows(shapes_a[canonical][0], shapes_b[canonical][0])
    return None


def _ffn_only(a: ModelRef, b: ModelRef, shapes_a: dict, shapes_b: dict, differing: list[str]) -> Compatibility:
    """Same hidden size, different family or depth: the FFNs of the layers whose shapes line up with the mother's
    layer at the same relative depth are bred (`anatomy.ffn_layer_pairs`); nothing lining up is refused."""
    language_a = {name: shape for _, (shape, name) in shapes_a.items()}
    language_b = {name: shape for _, (shape, name) in shapes_b.items()}
    rows = anatomy.ffn_layer_pairs(language_a, language_b)
    bred = [row for row in rows if row.bred]
    names = [_original(n, shapes_a, shapes_b) for n in differing[:_MAX_DIFFERING]]
    families = (f"different architectures ({a.text_model_type} vs {b.text_model_type})"
                if a.text_model_type != b.text_model_type
                else f"different layer counts ({a.num_layers} vs {b.num_layers})")
    if not bred:
        detail = rows[0].why if rows else "the father has no decoder layer"
        return Compatibility(Verdict.INCOMPATIBLE, f"Same hidden size ({a.hidden_size}) but {families}, and not "
                             f"even the feed-forward weights line up: on father layer 0, {detail}.", names)
    shared = sorted({anatomy.split_name(father_name).local for row in bred for father_name, _ in row.tensors})
    kept = [row.father_layer for row in rows if not row.bred]
    kept_clause = (f"; father layers {_layer_list(kept)} stay the father's, their feed-forward weights not lining "
                   "up with the mother's" if kept else "")
    return Compatibility(Verdict.FFN_ONLY, f"Same hidden size ({a.hidden_size}) but {families} "
                         f"({a.num_layers} vs {b.num_layers} layers): only the feed-forward weights "
                         f"({', '.join(shared)}) of {len(bred)} of {len(rows)} father layers are bred, each with the "
                         "mother's layer at the same relative depth, and attention stays the father's, as do norms "
                         f"and embeddings{kept_clause}.", names, kept)


def _layer_list(layers: list[int]) -> str:
    """"3, 5 and 7" (at most 12 named, then how many more)."""
    shown = [str(layer) for layer in layers[:12]]
    if len(layers) > 12:
        return ", ".join(shown) + f" and {len(layers) - 12} more"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
