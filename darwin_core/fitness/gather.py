"""Reading continuation log-probs out of a forward pass: per request on a CPU, in batched gathers elsewhere.

Shared by the flat, shared-context and packed scorers (`loglikelihood`, `packed`), so that every path sums the
same float32 log-softmax values the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    if logits.dtype not in (torch.float32, torch.float64):  # half precision: soft-max in float32
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def _sum_at(logprobs: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Sum of logprobs[t, tokens[t]] over the rows of `logprobs` (one row per token), left on the device: the
    caller reads all sums at once (`_read_sums`), so scoring never waits for the device item by item."""
    targets = torch.tensor(list(tokens), dtype=torch.long, device=logprobs.device)[:, None]
    return logprobs.gather(1, targets).sum()


# Positions whose log-softmax one accelerator kernel computes at a time (each a vocabulary row of float32).
GATHER_POSITIONS = 2048


def _gather_sums(logits: torch.Tensor | None, reads: list[tuple[int, int, int, Sequence[int]]], *,
                 logits_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 device: torch.device | None = None) -> tuple[list[int], torch.Tensor]:
    """(request indices, their summed log-probs on the device) for reads (request index, row, first position,
    continuation tokens) of `logits` [rows, positions, vocabulary]: one index upload, batched log-softmaxes over
    only the scored positions, and per-request sums over a zero-padded matrix (deterministic, no atomics). The
    accelerator's way; the CPU keeps `_sum_at` per request (bit-identical to before). `logits_at(rows,
    positions)` instead of `logits` (with `device`): the logits of just those positions, computed on demand (the
    packed scorer runs the LM head only where a token is scored)."""
    if logits_at is None:
        logits_at, device = (lambda rows, positions: logits[rows, positions]), logits.device
    longest = max(len(tokens) for *_, tokens in reads)
    rows: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    slots: list[int] = []
    for q, (_, row, first, tokens) in enumerate(reads):
        n = len(tokens)
        rows.extend([row] * n)
        positions.extend(range(first, first + n))
        targets.extend(tokens)
        slots.extend(range(q * longest, q * longest + n))
    index = torch.tensor([rows, positions, targets, slots], dtype=torch.long)
    if device.type == "cuda":
        index = index.pin_memory().to(device, non_blocking=True)
    else:
        index = index.to(device)
    parts = []
    for start in range(0, index.shape[1], GATHER_POSITIONS):
        part = index[:, start : start + GATHER_POSITIONS]
        parts.append(_log_probs(logits_at(part[0], part[1])).gather(1, part[2][:, None])[:, 0])
    values = torch.cat(parts)
    padded = torch.zeros(len(reads) * longest, dtype=values.dtype, device=values.device)
    padded[index[3]] = values
    return [request for request, *_ in reads], padded.view(len(reads), longest).sum(1)


def _read_gathered(pending: list[tuple[list[int], torch.Tensor]], out: list[float]) -> None:
    """out[index] = each gathered sum, all of them read in one device-to-host copy."""
    if pending:
        values = torch.cat([sums for _, sums in pending]).tolist()
        for index, value in zip((i for indices, _ in pending for i in indices), values):
            out[index] = value
        pending.clear()


def _read_sums(pending: list[tuple[int, torch.Tensor]], out: list[float]) -> None:
    """out[index] = the value of each pending 0-dim sum, read in one device-to-host copy."""
    if pending:
        values = torch.stack([value for _, value in pending]).tolist()
        for (index, _), value in zip(pending, values):
            out[index] = value
        pending.clear()


