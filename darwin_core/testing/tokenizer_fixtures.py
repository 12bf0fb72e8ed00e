"""Parent pairs whose tokenizers differ, as real Hub fine-tunes do, for the tokenizer pre-flight and alignment.

- `write_chat_mother`: a fine-tune of a fixture father that added chat tokens (``<|im_start|>``, ``<|im_end|>``)
  with a chat template and resized its embedding and head to ``len(tokenizer)`` (as ``resize_token_embeddings``
  does), so the two vocabularies differ in size and in content.
- `write_padded_mother`: the father's tokenizer, with the embedding padded to a larger ``vocab_size``.
- `write_uncovering_model`: a tokenizer with more tokens than its config's ``vocab_size`` (ids without a row).
- `write_silent_model`: a tokenizer that encodes plain text to nothing (no unknown token to fall back on).

Every model is written by transformers (`save_pretrained`), seeded, identical bytes for identical arguments.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from darwin_core.parents.chartok import build_char_tokenizer
from darwin_core.testing.fixtures import FIXTURE_ALPHABET, write_tiny_model

CHAT_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _resized(model_dir: Path, out_dir: Path, tokenizer, vocab_size: int, seed: int) -> Path:
    """`model_dir`'s weights with embedding (and untied head) resized to `vocab_size` rows, every row past the
    shared ones seeded noise, saved with `tokenizer` to `out_dir` (renamed into place when complete)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}.values():
            weight = module.weight
            fresh = max(0, vocab_size - old_rows)
            if fresh:
                weight[old_rows:] = torch.randn(fresh, weight.shape[1], generator=generator) * weight[:old_rows].std()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, out_dir)
    return out_dir


def chat_tokenizer():
    """The fixture tokenizer plus the two chat tokens (special) and a ChatML template."""
    tokenizer = build_char_tokenizer(FIXTURE_ALPHABET)
    tokenizer.add_tokens(list(CHAT_TOKENS), special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def write_chat_mother(father_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 1) -> Path:
    """A fine-tune of `father_dir` (a `write_tiny_model` folder) that added the chat tokens: its vocabulary is
    the father's plus two, its embedding and head have exactly ``len(tokenizer)`` rows."""
    out = Path(out_dir)
    arch = _model_type(Path(father_dir))
    with tempfile.TemporaryDirectory() as tmp:
        tuned = write_tiny_model(arch, Path(tmp) / "tuned", seed=seed, base_dir=father_dir)
        tokenizer = chat_tokenizer()
        return _resized(tuned, out, tokenizer, len(tokenizer), seed)


def write_padded_mother(father_dir: str | os.PathLike, out_dir: str | os.PathLike, *, vocab_size: int = 128,
                        seed: int = 1) -> Path:
    """A fine-tune of `father_dir` with the father's tokenizer and its embedding padded to `vocab_size` rows."""
    arch = _model_type(Path(father_dir))
    with tempfile.TemporaryDirectory() as tmp:
        tuned = write_tiny_model(arch, Path(tmp) / "tuned", seed=seed, base_dir=father_dir)
        return _resized(tuned, Path(out_dir), build_char_tokenizer(FIXTURE_ALPHABET), vocab_size, seed)


def write_uncovering_model(out_dir: str | os.PathLike, *, arch: str = "llama", vocab_size: int = 40,
                           seed: int = 0) -> Path:
    """A model whose config's vocab_size (and embedding) is smaller than its tokenizer (55 tokens)."""
    return write_tiny_model(arch, out_dir, seed=seed, overrides={"vocab_size": vocab_size})


def silent_tokenizer():
    """A tokenizer that knows only its special tokens and has no unknown token: plain text encodes to []."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials)}, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def write_silent_model(out_dir: str | os.PathLike, *, arch: str = "llama", seed: int = 0) -> Path:
    """A tiny model whose tokenizer encodes every plain text to no tokens."""
    out = write_tiny_model(arch, out_dir, seed=seed)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    silent_tokenizer().save_pretrained(out)
    return out


def _model_type(folder: Path) -> str:
    import json

    return json.loads((folder / "config.json").read_text())["model_type"]
