"""Where a breeding keeps its parents: on the accelerator beside the child, or in pinned host memory.

A candidate is a merge of both parents written into one resident child. When both parents fit on the GPU beside
the child (with room left for scoring), a merge reads them from device memory: about three model-sizes of HBM
traffic, milliseconds at 4B. When they do not (the seeds' 27B dense and 35B-A3B MoE parents: 3 × 54–70 GB on
one 80–141 GB card), the parents live in pinned host memory and every tensor a candidate changes is streamed to
the GPU as the merge asks for it, so a candidate costs both parents' bytes over the host link instead.

This module decides which, from measured free memory, and says it in one sentence with the time a candidate's
merge will take (from the host link's bandwidth, measured here when the host mode is chosen, and the HBM rate
measured on an H200: docs/benchmarks.md). `ResidentChild` follows the decision; the pre-flight shows the sentence
before a run starts (`plan_for_pair`, called before anything is loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

# The share of the accelerator's free memory (after the child) the parents may take: the rest is for scoring
# (activations, KV caches of a token-budgeted forward) and the merge's temporaries.
PARENTS_SHARE_OF_FREE = 0.75
# Device-to-device copy rate measured on an H200 (bytes read + written per second, bench/breed_parts.py:
# 4,218 GB/s); a resident merge moves at least 3 model-sizes (read both parents, write the child) at this rate
# at best. The host link is measured when it matters (`measure_host_link`: 55 GB/s pinned on that machine).
DEVICE_BYTES_PER_S = 4.2e12


class ParentsOn(StrEnum):
    """Where the parents' tensors live during the search."""

    ACCELERATOR = "accelerator"  # resident beside the child: a merge reads device memory
    PINNED_HOST = "pinned host memory"  # streamed to the accelerator tensor by tensor, per candidate
    HOST = "host memory"  # a CPU run: parents and child share the machine's memory


@dataclass(frozen=True)
class Placement:
    """The decision and the numbers it was made from (bytes; seconds per candidate merge, an estimate)."""

    parents_on: ParentsOn
    parent_bytes: int
    child_bytes: int
    free_bytes: int | None  # accelerator memory free beside the child; None on a CPU
    merge_seconds: float | None  # one candidate's merge, every tensor rewritten; None on a CPU (not estimated)
    link_bytes_per_s: float | None = None  # the rate merge_seconds was estimated from

    @property
    def pinned(self) -> bool:
        return self.parents_on == ParentsOn.PINNED_HOST

    def sentence(self) -> str:
        """What the pre-flight and the log say: the mode, why, and what a candidate's merge will cost."""
        gb = 1e9
        if self.parents_on == ParentsOn.HOST:
            return f"The parents ({self.parent_bytes / gb:.1f} GB) stay in host memory; candidates merge on the CPU."
        free = f"{self.free_bytes / gb:.1f} GB free beside the {self.child_bytes / gb:.1f} GB child"
        bound = "at full memory bandwidth" if self.parents_on == ParentsOn.ACCELERATOR else "over the host link"
        cost = ("" if self.merge_seconds is None else
                f"; a candidate's merge takes at least about {_seconds(self.merge_seconds)} (its bytes {bound})")
        if self.parents_on == ParentsOn.ACCELERATOR:
            return f"Parents resident on the GPU ({self.parent_bytes / gb:.1f} GB, {free}){cost}."
        link = "" if self.link_bytes_per_s is None else f" at {self.link_bytes_per_s / gb:.0f} GB/s"
        return (f"Parents streamed from pinned host memory ({self.parent_bytes / gb:.1f} GB do not fit in "
                f"{PARENTS_SHARE_OF_FREE:.0%} of the {free}){link}{cost}.")


def _seconds(value: float) -> str:
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.1f} s"


def folder_bytes(folder: Path | str) -> int:
    """Bytes of a checkpoint's tensors, from the safetensors headers (nothing is loaded)."""
    from darwin_core.io.tensors import TensorReader

    return TensorReader(Path(folder)).total_bytes


def free_accelerator_bytes(device: torch.device) -> int:
    """Free memory on `device` as the driver reports it (what `torch.cuda.mem_get_info` says)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def measure_host_link(device: torch.device, nbytes: int = 256 << 20) -> float:
    """Pinned host → `device` copy rate in bytes per second (the median of 5 copies of `nbytes`, after one warm-up):
    the rate a host-streamed candidate's parents cross at."""
    import time

    src = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    times = []
    for k in range(6):
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - started)
    del src, dst
    return nbytes / sorted(times)[len(times) // 2]


def choose(parent_bytes: int, child_bytes: int, device: torch.device, *, free_bytes: int | None = None,
           link_bytes_per_s: float | None = None, force: ParentsOn | None = None) -> Placement:
    """The placement for parents of `parent_bytes` beside a child of `child_bytes`, `free_bytes` free beside the
    child (measured now when None). On the accelerator when the parents take at most PARENTS_SHARE_OF_FREE of it;
    else pinned host memory, the host link measured now unless `link_bytes_per_s` is given. `force` overrides
    the choice (a config's explicit `parents: device|host`), never on a CPU."""
    if device.type != "cuda":
        return Placement(ParentsOn.HOST, parent_bytes, child_bytes, None, None)
    free = free_accelerator_bytes(device) if free_bytes is None else int(free_bytes)
    fits = parent_bytes <= PARENTS_SHARE_OF_FREE * free
    if force == ParentsOn.ACCELERATOR or (force is None and fits):
        return Placement(ParentsOn.ACCELERATOR, parent_bytes, child_bytes, free,
                         (parent_bytes + child_bytes) / DEVICE_BYTES_PER_S, DEVICE_BYTES_PER_S)
    link = measure_host_link(device) if link_bytes_per_s is None else link_bytes_per_s
    # streamed: both parents cross the link; the device-side merge overlaps it and is the smaller term
    return Placement(ParentsOn.PINNED_HOST, parent_bytes, child_bytes, free, parent_bytes / link, link)


def plan_for_pair(folders: Sequence[Path | str], device: str | torch.device) -> Placement:
    """The pre-flight's answer, before any model is loaded: the child is the father's size and takes its share of
    the free memory first. `folders` are the father, the mother and (delta methods) the common ancestor."""
    from darwin_core.evolution.child import resolve_device

    device = resolve_device(device)
    sizes = [folder_bytes(folder) for folder in folders]
    child = sizes[0]
    if device.type != "cuda":
        return choose(sum(sizes), child, device)
    return choose(sum(sizes), child, device, free_bytes=max(free_accelerator_bytes(device) - child, 0))
