"""Character-level tokenizer for fixture and demo models.

Tiny test models need a real tokenizer that `AutoTokenizer.from_pretrained` loads from plain files, without
any download and without training. A character vocabulary is the smallest such thing: every character of the
alphabet is one token, so ids are predictable and the vocabulary stays a few dozen entries.

The vocabulary is written in the byte-level convention of GPT-2/Llama 3/Qwen (space is stored as "Ġ", newline
as "Ċ"). That is not cosmetic: for some model types (qwen2, qwen3_5_moe_text, ...) transformers 5 ignores the
tokenizer class in tokenizer_config.json and rebuilds the pipeline as its own byte-level BPE around our vocab;
with a byte-level vocabulary both pipelines give the same ids.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from darwin_core.errors import DarwinError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)


@lru_cache(maxsize=1)
def _byte_symbols() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table (the one ByteLevel pre-tokenizers use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def char_vocab(alphabet: str) -> dict[str, int]:
    """Token → id: the special tokens 0..3, then one token per distinct character, in order of first appearance.

    Order of first appearance (not sorted) keeps ids stable for a given alphabet string; duplicates are ignored
    so "aab" and "ab" give the same vocabulary. Tokens are byte-level symbols; a character outside ASCII takes
    one token per UTF-8 byte.
    """
    if not alphabet:
        raise DarwinError("The tokenizer alphabet is empty; give at least one character.")
    symbols = _byte_symbols()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        for b in ch.encode("utf-8"):
            vocab.setdefault(symbols[b], len(vocab))
    return vocab


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer with one token per character of `alphabet` plus <pad>=0, <bos>=1, <eos>=2, <unk>=3.

    Encoding prepends <bos> (as Llama-style tokenizers do) so a model always has a first position to predict
    from; characters outside the alphabet map to <unk> (a model type whose tokenizer class transformers forces,
    such as qwen2, drops them instead). Decoding concatenates characters, so
    `decode(encode(text), skip_special_tokens=True) == text` for text over the alphabet. Padding is on the
    left, which batched generation needs.
    """
    vocab = char_vocab(alphabet)
    # BPE without merges splits every pre-token into single byte symbols; the ByteLevel pre-tokenizer without
    # its regex keeps the whole text as one pre-token, so spaces and newlines are plain characters.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
