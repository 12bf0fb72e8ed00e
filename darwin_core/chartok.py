"""Character-level tokenizer for fixture and demo models.

Tiny test models need a real tokenizer that `AutoTokenizer.from_pretrained` loads from plain files, without
any download and without training. A character vocabulary is the smallest such thing: every character of the
alphabet is one token, so ids are predictable and the vocabulary stays a few dozen entries.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from darwin_core.errors import DarwinError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)


def char_vocab(alphabet: str) -> dict[str, int]:
    """Token → id: the special tokens 0..3, then each distinct character in order of first appearance.

    Order of first appearance (not sorted) keeps ids stable for a given alphabet string and lets the caller
    decide the layout; duplicates are ignored so "aab" and "ab" give the same vocabulary.
    """
    if not alphabet:
        raise DarwinError("The tokenizer alphabet is empty; give at least one character.")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        if ch in vocab:
            continue
        vocab[ch] = len(vocab)
    return vocab


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer with one token per character of `alphabet` plus <pad>, <bos>, <eos>, <unk>.

    Encoding prepends <bos> (as Llama-style tokenizers do) so a model always has a first position to predict
    from; characters outside the alphabet map to <unk>. Decoding concatenates characters, so
    `decode(encode(text), skip_special_tokens=True) == text` for text over the alphabet. Padding is on the
    left, which batched greedy generation needs.
    """
    vocab = char_vocab(alphabet)
    # BPE with no merges and no pre-tokenizer splits the whole text into single characters, spaces and
    # newlines included; unknown characters become <unk>.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
