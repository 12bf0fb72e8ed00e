"""The tokenizer pre-flight: are the parents' tokenizers whole, and how do their vocabularies relate?

A parent whose tokenizer has more tokens than its config's ``vocab_size`` emits ids the embedding has no row
for (an index error mid-generation), and one that encodes plain text to nothing makes every probe an empty
tensor (a reshape traceback deep in the scan). Both are said here in one sentence, before any run. The
vocabularies' relation (the same, one adds tokens to the other, different) decides whether a merge needs a
vocabulary plan (`darwin_core.merge.vocabulary`); special tokens and chat templates are compared so the card
and the Parents tab can say what the child inherits. Tokenizers load from local folders only and never with
``trust_remote_code``: a parent's folder must not run code on this machine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from darwin_core.errors import DarwinError

# A plain sentence every real tokenizer turns into tokens (the fixture alphabet covers it too).
PLAIN_TEXT = "the quick brown fox jumps over the lazy dog."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


# Tensors whose rows are indexed by token id (canonical names): the token embedding, the output head, and
# Gemma's per-layer token table, as mergekit's `infer_vocabulary_axes` finds them (plus that table).
VOCABULARY_TENSORS = re.compile(
    r"^(?:(?:embed_tokens|wte|embed_in|word_embeddings|tok_embeddings|embed_tokens_per_layer)\.weight"
    r"|(?:lm_head|embed_out|output)\.(?:weight|bias))$")


class TokenizerSource(str, Enum):
    """Whose vocabulary the child speaks: mergekit's ``tokenizer_source`` (father = its ``base``). Defined here,
    below the recipe, so a recipe can name it; the merge layer (`darwin_core.merge.vocabulary`) acts on it."""

    FATHER = "father"
    MOTHER = "mother"
    UNION = "union"

    def mergekit_value(self, mother_path: str) -> str:
        """The value of mergekit's ``tokenizer_source`` for this source (the mother named by her path)."""
        return {"father": "base", "union": "union"}.get(self.value, mother_path)


def is_vocabulary_tensor(name: str) -> bool:
    """Whether the tensor's rows are indexed by token id (embedding, output head, Gemma's per-layer table)."""
    from darwin_core.parents.anatomy import split_name

    parts = split_name(name)
    return parts.tower == "language" and parts.layer is None and not parts.aux and bool(
        VOCABULARY_TENSORS.match(parts.canonical))


def vocabulary_rows(shape_a: Sequence[int], shape_b: Sequence[int]) -> tuple[int, int] | None:
    """(rows of a, rows of b) when two shapes of a vocabulary tensor differ in their rows only (the vocabularies
    differ in size, the width is the same), else None."""
    if shape_a and shape_b and shape_a[0] != shape_b[0] and tuple(shape_a[1:]) == tuple(shape_b[1:]):
        return int(shape_a[0]), int(shape_b[0])
    return None


class VocabularyRelation(str, Enum):
    """How the mother's vocabulary (token → id) relates to the father's."""

    SAME = "same"                  # identical token → id maps
    MOTHER_ADDS = "mother_adds"    # every father token at its id, plus tokens only the mother has
    FATHER_ADDS = "father_adds"    # the reverse
    DIFFERENT = "different"        # some token has another id, or each has tokens the other lacks
    UNKNOWN = "unknown"            # a parent has no tokenizer files (nothing to compare)


@dataclass(frozen=True)
class TokenizerReport:
    """The pre-flight's answer: `findings` are one-sentence problems (a broken tokenizer), `differences`
    one-sentence notes on what differs between two healthy tokenizers."""

    relation: VocabularyRelation
    findings: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.findings)


def has_tokenizer(folder: str | Path) -> bool:
    """Whether a model folder carries tokenizer files at all."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(folder: str | Path, who: str = "model") -> Any:
    """The folder's tokenizer through `AutoTokenizer`, local files only, never remote code; one sentence if
    it does not load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as error:  # transformers raises many types; the user needs the one sentence
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise DarwinError(f"The tokenizer of the {who} ({folder}) does not load without remote code: {reason}.") from None


def config_vocab_size(folder: str | Path) -> int | None:
    """The vocab_size of a folder's config.json (of its text_config in a multimodal wrapper), else None."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    for node in (config, *(config.get(k) for k in ("text_config", "llm_config", "language_config"))):
        if isinstance(node, dict) and isinstance(node.get("vocab_size"), int):
            return node["vocab_size"]
    return None


def tokenizer_findings(folder: str | Path, who: str = "model", tokenizer: Any = None) -> list[str]:
    """The one-sentence problems of one folder's tokenizer: more tokens than its config's vocab_size, or a
    plain text encoded to nothing. Empty when the folder has no tokenizer (the father's is used then)."""
    if tokenizer is None:
        if not has_tokenizer(folder):
            return []
        tokenizer = load_tokenizer(folder, who)
    findings = []
    vocab_size, tokens = config_vocab_size(folder), len(tokenizer)
    if vocab_size is not None and tokens > vocab_size:
        findings.append(f"The tokenizer of the {who} ({folder}) has {tokens} tokens but its config.json's vocab_size "
                        f"is {vocab_size}, so ids {vocab_size}–{tokens - 1} have no embedding row.")
    if not tokenizer.encode(PLAIN_TEXT, add_special_tokens=False):
        findings.append(f"The tokenizer of the {who} ({folder}) encodes the plain text {PLAIN_TEXT!r} to no "
                        "tokens at all, so nothing can be scored or generated with it.")
    return findings


def vocabulary_relation(father_vocab: dict[str, int], mother_vocab: dict[str, int]) -> VocabularyRelation:
    """SAME, MOTHER_ADDS, FATHER_ADDS or DIFFERENT for two token → id maps."""
    if father_vocab == mother_vocab:
        return VocabularyRelation.SAME
    if all(mother_vocab.get(token) == index for token, index in father_vocab.items()):
        return VocabularyRelation.MOTHER_ADDS
    if all(father_vocab.get(token) == index for token, index in mother_vocab.items()):
        return VocabularyRelation.FATHER_ADDS
    return VocabularyRelation.DIFFERENT


def _special_tokens(tokenizer: Any) -> dict[str, str]:
    return {key: str(value) for key, value in sorted(tokenizer.special_tokens_map.items())}


def _differences(father: Any, mother: Any, relation: VocabularyRelation) -> list[str]:
    """One sentence per thing that differs between two healthy tokenizers."""
    notes = []
    father_vocab, mother_vocab = father.get_vocab(), mother.get_vocab()
    only_mother = sorted(set(mother_vocab) - set(father_vocab), key=mother_vocab.get)
    only_father = sorted(set(father_vocab) - set(mother_vocab), key=father_vocab.get)
    if relation is not VocabularyRelation.SAME:
        shown = ", ".join(repr(t) for t in only_mother[:5]) + (" …" if len(only_mother) > 5 else "")
        notes.append(f"The vocabularies differ ({relation.value}): {len(father_vocab)} father tokens, "
                     f"{len(mother_vocab)} mother tokens, {len(only_mother)} only the mother has"
                     f"{' (' + shown + ')' if only_mother else ''}, {len(only_father)} only the father has.")
    father_special, mother_special = _special_tokens(father), _special_tokens(mother)
    for key in sorted(set(father_special) | set(mother_special)):
        if father_special.get(key) != mother_special.get(key):
            notes.append(f"The special token {key} is {father_special.get(key)!r} for the father and "
                         f"{mother_special.get(key)!r} for the mother.")
    if (father.chat_template or None) != (mother.chat_template or None):
        has = {"father": bool(father.chat_template), "mother": bool(mother.chat_template)}
        which = ("both have one, and they differ" if all(has.values())
                 else f"only the {'father' if has['father'] else 'mother'} has one")
        notes.append(f"The chat templates differ: {which}.")
    return notes


def tokenizer_report(father_dir: str | Path, mother_dir: str | Path) -> TokenizerReport:
    """Load both parents' tokenizers (local, no remote code) and compare them; never raises for a broken
    tokenizer (that is a finding), only for one that does not load at all."""
    present = {"father": has_tokenizer(father_dir), "mother": has_tokenizer(mother_dir)}
    tokenizers = {who: load_tokenizer(folder, who) if present[who] else None
                  for who, folder in (("father", father_dir), ("mother", mother_dir))}
    findings = [sentence for who, folder in (("father", father_dir), ("mother", mother_dir)) if present[who]
                for sentence in tokenizer_findings(folder, who, tokenizers[who])]
    if not all(present.values()):
        missing = " and ".join(who for who, here in present.items() if not here)
        return TokenizerReport(VocabularyRelation.UNKNOWN, findings,
                               [f"The {missing} {'has' if ' and ' not in missing else 'have'} no tokenizer files, "
                                "so the vocabularies cannot be compared."])
    relation = vocabulary_relation(tokenizers["father"].get_vocab(), tokenizers["mother"].get_vocab())
    return TokenizerReport(relation, findings, _differences(tokenizers["father"], tokenizers["mother"], relation))


def check_tokenizer(folder: str | Path, who: str = "model") -> None:
    """Raise the one sentence when a single model's tokenizer is broken (the scan of one model)."""
    findings = tokenizer_findings(folder, who)
    if findings:
        raise DarwinError(findings[0])


def check_tokenizers(father_dir: str | Path, mother_dir: str | Path) -> TokenizerReport:
    """The pre-flight before any run: raise the first finding's sentence when a tokenizer is broken, else
    return the report (its relation and differences, for the caller to show)."""
    report = tokenizer_report(father_dir, mother_dir)
    if report.findings:
        raise DarwinError(report.findings[0])
    return report
