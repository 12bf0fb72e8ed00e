"""Batched greedy decoding for short answers, fast on a CPU and correct under left padding.

Exact-match tasks ask for a handful of tokens per prompt, many prompts at a time. A small loop of our own
with the model's KV cache does just that: one forward pass over the left-padded prompts, then one token
per step for the whole batch, stopping a row at end-of-sequence and the batch when every row has stopped.
Position ids follow the attention mask, so a prompt gives the same answer alone or in any batch. Each prompt
may have its own token budget, so the items of several tasks share one batch (on a CPU a small model's cost
is mostly the number of forward passes, not their width).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from darwin_core.fitness.tasks import Task


@torch.inference_mode()
def generate_greedy(
    model, tokenizer, prompts: list[str], *, max_new_tokens: int | Sequence[int], batch_size: int = 64
) -> list[str]:
    """The greedy continuation of each prompt (special tokens dropped, the prompt itself not included).

    max_new_tokens: one budget for every prompt, or one per prompt."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts):
        raise ValueError("give one max_new_tokens per prompt, or one for all")
    if any(b < 1 for b in budgets):
        raise ValueError("max_new_tokens must be at least 1")
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    # Batch prompts of similar length together: less padding, less work. Results go back in input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        encoded = _encode_left_padded(tokenizer, [prompts[i] for i in index], pad_id)
        limits = torch.tensor([budgets[i] for i in index], device=device)
        new_tokens = _decode_batch(model, encoded["input_ids"].to(device), encoded["attention_mask"].to(device), limits, eos_id)
        for row, i in enumerate(index):
            tokens = new_tokens[row][: budgets[i]]
            if eos_id is not None and eos_id in tokens:
                tokens = tokens[: tokens.index(eos_id)]
            outputs[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    return outputs


def _encode_left_padded(tokenizer, prompts: list[str], pad_id: int) -> dict[str, torch.Tensor]:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[row, width - len(x) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _decode_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, limits: torch.Tensor, eos_id: int | None) -> list[list[int]]:
    """Greedy tokens per row, up to the largest of `limits`; a row counts as done at EOS or at its own limit,
    and the batch stops when every row is done (tokens past a row's limit are for the caller to drop)."""
    batch = input_ids.shape[0]
    max_new_tokens = int(limits.max())
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **keep)
    cache = out.past_key_values
    next_pos = position_ids[:, -1:] + 1
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    generated: list[torch.Tensor] = []
    logits = out.logits[:, -1, :]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        generated.append(token)
        done |= limits <= step + 1
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, 1))], dim=-1)
        out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=next_pos, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :]
    return torch.stack(generated, dim=1).tolist()


def exact_match_accuracy(model, tokenizer, task: Task, split: str = "heldout", *, batch_size: int = 64) -> tuple[float, list[bool]]:
    """Share of a generate-task's items whose greedy answer equals the reference exactly (after strip)."""
    if split not in ("search", "heldout"):
        raise ValueError("split must be 'search' or 'heldout'")
    items = task.search if split == "search" else task.heldout
    answers = generate_greedy(model, tokenizer, [i.prompt for i in items], max_new_tokens=task.max_new_tokens, batch_size=batch_size)
    correct = [a.strip() == i.answer.strip() for a, i in zip(answers, items)]
    return (sum(correct) / len(correct) if correct else 0.0), correct
