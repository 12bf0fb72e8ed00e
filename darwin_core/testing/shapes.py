"""Random-weight Qwen3 models at realistic sizes, for the benchmarks (speed, not quality, is measured).

Shapes: (hidden, layers, intermediate, heads, kv heads, head_dim, vocab, tied embeddings). "4b" is Qwen3-4B's.
The tokenizer is a character tokenizer over printable ASCII (its ids fall inside any shape's vocabulary).
"""

from __future__ import annotations

import torch

SHAPES: dict[str, tuple[int, int, int, int, int, int, int, bool]] = {
    "tiny": (64, 2, 128, 4, 2, 16, 1024, False),
    "100m": (768, 12, 2048, 12, 4, 64, 32000, False),
    "1b": (2048, 16, 6144, 16, 8, 128, 151936, True),
    "4b": (2560, 36, 9728, 32, 8, 128, 151936, True),
}
ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n\t"


def random_qwen3(shape: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0):
    """(model, tokenizer): a Qwen3 of `shape` with transformers' random init (seeded), built on `device`."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    from darwin_core.parents.chartok import build_char_tokenizer

    hidden, layers, inter, heads, kv, head_dim, vocab, tied = SHAPES[shape]
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, tie_word_embeddings=tied,
        max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, build_char_tokenizer(ALPHABET)
