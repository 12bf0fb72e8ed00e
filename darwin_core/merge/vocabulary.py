"""Breeding parents whose vocabularies differ: the child's vocabulary and each parent's rows in it.

mergekit 0.1.5's ``tokenizer_source`` semantics, matched function by function:

- the child's tokenizer (``mergekit/tokenizer/build.py::build_tokenizer``): ``father`` (mergekit's ``base``) is
  the father's tokenizer, ``mother`` the mother's, ``union`` the father's reloaded, then every token of either
  vocabulary it lacks added in the parents' order, then every added token (``build_union_tokenizer``);
- each parent's permutation (child id → the parent's id, -1 where it lacks the token), tokens at an id past the
  parent's config vocab_size skipped (``build_tokenizer``'s "Building permutations");
- the aligned tensors (``mergekit/tokenizer/embed.py::PermutedVocabulary.execute`` and
  ``assign_embedding_sources``): a token both parents have takes each parent's own row; a token only one parent
  has takes that parent's row in *both* aligned tensors, so any weighted merge returns it unchanged; a token
  neither has is zeros; dtypes promoted; the child has ``len(vocabulary)`` rows (no pad_to_multiple_of);
- the child config's vocab_size is ``len(child vocabulary)`` (``mergekit/merge.py::_update_config_vocab``); the
  union tokenizer is written with ``save_pretrained`` (``run_merge``), a parent's tokenizer copied as it is.

Vocabulary tensors are the token embedding and the output head (weight and bias), as mergekit's
``infer_vocabulary_axes`` finds them through the model's input/output embeddings, plus Gemma's per-layer token
table (``embed_tokens_per_layer``: token-indexed too, which mergekit does not align). Identical vocabularies give
no plan (`plan_vocabulary` returns None), so a child of such parents keeps today's bytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from darwin_core.errors import DarwinError
from darwin_core.parents.tokenizers import (VOCABULARY_TENSORS, TokenizerSource, check_tokenizers, config_vocab_size,
                                            has_tokenizer, is_vocabulary_tensor, load_tokenizer)

__all__ = ["VOCABULARY_TENSORS", "AlignedSources", "TokenizerSource", "VocabularyPlan", "is_vocabulary_tensor",
           "plan_vocabulary", "vocabulary_model", "write_child_tokenizer"]

VOCAB_SIZE_KEYS = ("vocab_size", "vocab_size_per_layer_input")
SPECIAL_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
# A tokenizer's files in a model folder (the child gets the tokenizer source's instead of the father's).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


@dataclass(frozen=True)
class VocabularyPlan:
    """The child's vocabulary and where each of its rows comes from in each parent."""

    source: TokenizerSource
    tokens: tuple[str, ...]                 # the child's vocabulary, position = child id
    father_rows: tuple[int, ...]            # per child id: the father's row, -1 where he lacks the token
    mother_rows: tuple[int, ...]
    father_dir: Path
    mother_dir: Path
    tokenizer: Any = field(default=None, compare=False, repr=False)   # the child's transformers tokenizer

    @property
    def child_vocab_size(self) -> int:
        return len(self.tokens)

    def child_shape(self, name: str, father_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The child's shape of a father tensor: vocabulary tensors get the child's row count."""
        return (self.child_vocab_size, *father_shape[1:]) if is_vocabulary_tensor(name) else tuple(father_shape)

    def align(self, father_tensor: torch.Tensor, mother_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both parents' copies of one vocabulary tensor in the child's vocabulary (mergekit's PermutedVocabulary)."""
        if father_tensor.shape[1:] != mother_tensor.shape[1:]:
            raise DarwinError(f"The parents' vocabulary tensors differ beyond their rows ({tuple(father_tensor.shape)} "
                              f"vs {tuple(mother_tensor.shape)}), so they cannot be aligned by token.")
        dtype = torch.promote_types(father_tensor.dtype, mother_tensor.dtype)
        device = father_tensor.device
        father_index = torch.tensor(self.father_rows, device=device)
        mother_index = torch.tensor(self.mother_rows, device=device)
        father_picked = father_tensor.to(dtype)[father_index.clamp(min=0)]
        mother_picked = mother_tensor.to(device=device, dtype=dtype)[mother_index.clamp(min=0)]
        broadcast = (-1,) + (1,) * (father_tensor.dim() - 1)
        father_has, mother_has = (father_index >= 0).view(broadcast), (mother_index >= 0).view(broadcast)
        nobody = ~(father_has | mother_has)
        father_out = torch.where(father_has, father_picked, mother_picked).masked_fill(nobody, 0)
        mother_out = torch.where(mother_has, mother_picked, father_picked).masked_fill(nobody, 0)
        return father_out, mother_out

    def child_config(self, father_config: dict[str, Any], mother_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The father's config.json with the child's vocab_size (in text_config for a wrapper, wherever the key
        is); with the mother's tokenizer, her bos/eos/pad ids, since the child speaks her vocabulary."""
        config = json.loads(json.dumps(father_config))
        donor = mother_config if self.source is TokenizerSource.MOTHER else None
        for node, donor_node in _config_nodes(config, donor):
            old_size = node.get("vocab_size")
            for key in VOCAB_SIZE_KEYS:  # Gemma's per-layer table follows vocab_size only where it equals it
                if isinstance(node.get(key), int) and (key == "vocab_size" or node[key] == old_size):
                    node[key] = self.child_vocab_size
            for key in SPECIAL_ID_KEYS if donor_node is not None else ():
                if key in donor_node:
                    node[key] = donor_node[key]
        return config

    def tokenizer_files(self) -> dict[str, bytes]:
        """File name → bytes of the child's tokenizer files and generation_config.json.

        With the father's or the mother's tokenizer the child's vocabulary is that parent's, so its files are
        copied as they are (chat template included); the union is written with ``save_pretrained``, as mergekit
        writes it. generation_config.json is the tokenizer source's (the father's for the union, whose ids it
        keeps): its special ids are the child's.
        """
        donor = self.mother_dir if self.source is TokenizerSource.MOTHER else self.father_dir
        if self.source is TokenizerSource.UNION:
            with tempfile.TemporaryDirectory() as tmp:
                self.tokenizer.save_pretrained(tmp)
                files = {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir())}
        else:
            files = {name: (donor / name).read_bytes() for name in TOKENIZER_FILES if (donor / name).is_file()}
        if (donor / "generation_config.json").is_file():
            files["generation_config.json"] = (donor / "generation_config.json").read_bytes()
        return files


def _config_nodes(config: dict, donor: dict | None):
    """(node, donor node) for the config and each language sub-config, where vocab_size and the ids live."""
    yield config, donor
    for key in ("text_config", "llm_config", "language_config"):
        if isinstance(config.get(key), dict):
            yield config[key], (donor or {}).get(key) if donor is not None else None


def _union_tokenizer(father: Any, mother: Any, sizes: tuple[int, int]) -> Any:
    """mergekit's build_union_tokenizer: the father's tokenizer plus every other token in the parents' order."""
    from transformers import AutoTokenizer

    union_vocab: dict[str, int] = {}
    added: dict[str, Any] = {}
    for tokenizer, size in zip((father, mother), sizes):
        for token, index in tokenizer.get_vocab().items():
            if index < size:
                union_vocab.setdefault(token, len(union_vocab))
        for index, info in tokenizer.added_tokens_decoder.items():
            if index < size:
                added.setdefault(info.content, info)
    with tempfile.TemporaryDirectory() as tmp:  # reload so the father's tokenizer is never mutated
        father.save_pretrained(tmp)
        result = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False, local_files_only=True)
    father_vocab = father.get_vocab()
    for token in union_vocab:
        if token not in added and token not in father_vocab:
            result.add_tokens(token)
    for info in added.values():
        result.add_tokens(info)
    return result


def _rows(child_vocab: dict[str, int], parent_vocab: dict[str, int], size: int) -> tuple[int, ...]:
    """Per child id, the parent's row of that token (-1 when absent or past the parent's vocab_size)."""
    rows = [-1] * len(child_vocab)
    for token, child_id in child_vocab.items():
        index = parent_vocab.get(token, -1)
        rows[child_id] = index if 0 <= index < size else -1
    return tuple(rows)


def plan_vocabulary(father_dir: str | Path, mother_dir: str | Path,
                    source: TokenizerSource | str = TokenizerSource.FATHER) -> VocabularyPlan | None:
    """The child's vocabulary for `source`, or None when both parents have the same vocabulary and vocab_size
    (nothing to align: the merge is today's, byte for byte). A broken tokenizer is refused in one sentence."""
    source = TokenizerSource(source)
    father_dir, mother_dir = Path(father_dir), Path(mother_dir)
    check_tokenizers(father_dir, mother_dir)
    missing = [who for who, folder in (("father", father_dir), ("mother", mother_dir)) if not has_tokenizer(folder)]
    if missing:  # nothing to align by: the rows are the father's layout, or the sizes say they cannot be
        if config_vocab_size(father_dir) == config_vocab_size(mother_dir):
            return None
        raise DarwinError(f"The {' and the '.join(missing)} {'has' if len(missing) == 1 else 'have'} no tokenizer "
                          "files, so embedding rows of vocabularies of different sizes cannot be aligned by token.")
    father, mother = load_tokenizer(father_dir, "father"), load_tokenizer(mother_dir, "mother")
    father_vocab, mother_vocab = father.get_vocab(), mother.get_vocab()
    sizes = (config_vocab_size(father_dir) or len(father_vocab), config_vocab_size(mother_dir) or len(mother_vocab))
    if father_vocab == mother_vocab and sizes[0] == sizes[1]:
        return None
    child = {TokenizerSource.FATHER: lambda: father, TokenizerSource.MOTHER: lambda: mother,
             TokenizerSource.UNION: lambda: _union_tokenizer(father, mother, sizes)}[source]()
    child_vocab = child.get_vocab()
    if sorted(child_vocab.values()) != list(range(len(child_vocab))):
        raise DarwinError(f"The {source.value} tokenizer's ids are not 0…{len(child_vocab) - 1} without gaps, "
                          "so the child's embedding rows cannot follow them.")
    tokens = tuple(sorted(child_vocab, key=child_vocab.get))
    return VocabularyPlan(source, tokens, _rows(child_vocab, father_vocab, sizes[0]),
                          _rows(child_vocab, mother_vocab, sizes[1]), father_dir, mother_dir, child)


def write_child_tokenizer(plan: VocabularyPlan, out_dir: str | Path) -> list[Path]:
    """Write the child's tokenizer files and generation_config.json into `out_dir` (which must exist)."""
    out = Path(out_dir)
    written = []
    for name, data in plan.tokenizer_files().items():
        target = out / name
        with tempfile.NamedTemporaryFile(dir=out, delete=False) as handle:
            handle.write(data)
        shutil.move(handle.name, target)
        written.append(target)
    return written


def vocabulary_model(model: Any, plan: VocabularyPlan) -> Any:
    """A copy of a loaded father model whose embedding and head have the plan's row count (and its config the
    child's vocab_size): where the resident child writes candidates of a pair bred with a vocabulary plan. Its
    values are placeholders until the first candidate is written (every tensor is)."""
    import copy

    child = copy.deepcopy(model)
    child.resize_token_embeddings(plan.child_vocab_size, mean_resizing=False)
    return child


class AlignedSources:
    """The father and mother as tensor sources (``.get(name, device)``) whose vocabulary tensors are already in
    the child's vocabulary; every other tensor passes through. Each aligned pair is computed once, when either
    parent's copy is first asked for, and the other copy held until it is asked for (one tensor)."""

    def __init__(self, plan: VocabularyPlan, father: Any, mother: Any, mother_name: Any = None) -> None:
        """`mother_name(father_name) -> mother_name` when the parents name tensors differently (a Pairing)."""
        self.plan, self._sources = plan, {"father": father, "mother": mother}
        self._mother_name = mother_name or (lambda name: name)
        self._held: dict[tuple[str, str], torch.Tensor] = {}
        self.father, self.mother = _AlignedView(self, "father"), _AlignedView(self, "mother")

    def get(self, who: str, name: str, device: Any = None) -> torch.Tensor:
        if not is_vocabulary_tensor(name):
            return self._sources[who].get(name, device)
        held = self._held.pop((who, name), None)
        if held is not None:
            return held
        father_name = name if who == "father" else next(
            (f for f in self._sources["father"].names if self._mother_name(f) == name), name)
        father_tensor = self._sources["father"].get(father_name, device)
        mother_tensor = self._sources["mother"].get(self._mother_name(father_name), device)
        aligned = dict(zip(("father", "mother"), self.plan.align(father_tensor, mother_tensor)))
        other = "mother" if who == "father" else "father"
        self._held[(other, self._mother_name(father_name) if other == "mother" else father_name)] = aligned[other]
        return aligned[who]


class _AlignedView:
    """One parent of an AlignedSources, with the source protocol the merge path reads."""

    def __init__(self, pair: AlignedSources, who: str) -> None:
        self._pair, self._who = pair, who
        self._source = pair._sources[who]
        self.names = self._source.names

    def __contains__(self, name: object) -> bool:
        return name in self._source

    def shape(self, name: str) -> tuple[int, ...]:
        return self._pair.plan.child_shape(name, tuple(self._source.shape(name)))

    def dtype(self, name: str) -> torch.dtype:
        return self._source.dtype(name)

    def get(self, name: str, device: Any = None) -> torch.Tensor:
        return self._pair.get(self._who, name, device)
