"""Where a breeding keeps its parents: on the accelerator beside the child, in pinned host memory, or on disk.

A candidate is a merge of both parents written into one resident child. When both parents fit on the GPU beside
the child (with room left for scoring), a merge reads them from device memory: about three model-sizes of HBM
traffic, milliseconds at 4B. When they do not (the seeds' 27B dense and 35B-A3B MoE parents: 3 × 54–70 GB on
one 80–141 GB card), the parents live in pinned host memory and every tensor a candidate changes is streamed to
the GPU as the merge asks for it, so a candidate costs both parents' bytes over the host link instead. When
they do not fit the host's available memory either (two 35B-A3B parents are 140 GB; these GPU machines have
125 GiB), they stay in their files and each tensor a candidate changes is read from disk as the merge asks for
it: slow (both parents' bytes at the disk's rate per candidate), but a breeding instead of a process killed for
memory half-way through loading.

This module decides which, from measured free memory, and says it in one sentence with the time a candidate's
merge will take (from the host link's bandwidth and the disk's cold read rate, measured here when those modes
are chosen, and the HBM rate measured on an H200: docs/benchmarks.md). `ResidentChild` follows the decision;
the pre-flight shows the sentence before a run starts (`plan_for_pair`, called before anything is loaded).
"""

from __future__ import annotations

import os
import time
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
# The share of the host's available memory (MemAvailable, beside a CPU run's child) the parents may take, pinned or
# not; the rest is the process's own and the page cache the run's writes go through. Two 27B parents (108 GB) fit
# the GPU machines' ~132 GB available; two 35B-A3B parents (140 GB) do not.
PARENTS_SHARE_OF_HOST = 0.9


class ParentsOn(StrEnum):
    """Where the parents' tensors live during the search."""

    ACCELERATOR = "accelerator"  # resident beside the child: a merge reads device memory
    PINNED_HOST = "pinned host memory"  # streamed to the accelerator tensor by tensor, per candidate
    HOST = "host memory"  # a CPU run: parents and child share the machine's memory
    DISK = "disk"  # in their files: each tensor a candidate changes is read again per candidate


@dataclass(frozen=True)
class Placement:
    """The decision and the numbers it was made from (bytes; seconds per candidate merge, an estimate)."""

    parents_on: ParentsOn
    parent_bytes: int
    child_bytes: int
    free_bytes: int | None  # accelerator memory free beside the child; None on a CPU
    merge_seconds: float | None  # one candidate's merge, every tensor rewritten; None on a CPU (not estimated)
    link_bytes_per_s: float | None = None  # the rate merge_seconds was estimated from
    host_bytes: int | None = None  # host memory available to the parents (MemAvailable, beside a CPU run's child)
    disk_bytes_per_s: float | None = None  # the parents' files' cold read rate, measured when DISK is chosen

    @property
    def pinned(self) -> bool:
        return self.parents_on == ParentsOn.PINNED_HOST

    def sentence(self) -> str:
        """What the pre-flight and the log say: the mode, why, and what a candidate's merge will cost."""
        gb = 1e9
        if self.parents_on == ParentsOn.DISK:
            return self._disk_sentence()
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

    def _disk_sentence(self) -> str:
        gb = 1e9
        where = "" if self.free_bytes is None else " nor beside the child on the GPU"
        too_big = self.host_bytes is not None and self.parent_bytes > PARENTS_SHARE_OF_HOST * self.host_bytes
        host = "" if not too_big else (
            f" ({self.parent_bytes / gb:.1f} GB do not fit in {PARENTS_SHARE_OF_HOST:.0%} of the "
            f"{self.host_bytes / gb:.1f} GB of host memory available{where})")
        rate = "" if self.disk_bytes_per_s is None else f" at {self.disk_bytes_per_s / gb:.1f} GB/s"
        cost = ("" if self.merge_seconds is None else
                f"; a candidate's merge takes at least about {_seconds(self.merge_seconds)} (its bytes from disk)")
        return f"Parents read from disk for every candidate{host}{rate}{cost}."


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


def available_host_bytes() -> int:
    """Host memory a new allocation can take without swapping: MemAvailable (Linux), within the cgroup's limit
    where one is set (a Space's container sees the host's MemAvailable but may use only its own quota)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def measure_disk_read(folder: Path | str, nbytes: int = 256 << 20) -> float | None:
    """The cold read rate, bytes per second, of a parent's largest weight file: its first `nbytes` are written
    back and dropped from the page cache (fsync, posix_fadvise DONTNEED), then read with pread — the rate a
    candidate reads parents that the page cache cannot hold. None where the cache cannot be told (not Linux, a
    file system that refuses the advice): the estimate is then left out, not guessed."""
    files = sorted(Path(folder).glob("*.safetensors"), key=lambda path: path.stat().st_size)
    if not files or not hasattr(os, "posix_fadvise"):
        return None
    size = min(nbytes, files[-1].stat().st_size)
    buffer = memoryview(bytearray(min(size, 16 << 20) or 1))
    fd = os.open(files[-1], os.O_RDONLY)
    try:
        try:
            os.fsync(fd)  # dirty pages are not dropped; a read-only mount has none and may refuse the call
        except OSError:
            pass
        try:
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
        except OSError:
            return None
        done, started = 0, time.perf_counter()
        while done < size:
            got = os.preadv(fd, [buffer[:size - done]], done)
            if got <= 0:
                break
            done += got
        return done / max(time.perf_counter() - started, 1e-9)
    finally:
        os.close(fd)


def choose(parent_bytes: int, child_bytes: int, device: torch.device, *, free_bytes: int | None = None,
           host_bytes: int | None = None, link_bytes_per_s: float | None = None,
           disk_bytes_per_s: float | None = None, disk_probe: Path | str | None = None,
           force: ParentsOn | None = None) -> Placement:
    """The placement for parents of `parent_bytes` beside a child of `child_bytes`: on the accelerator when they
    take at most PARENTS_SHARE_OF_FREE of the `free_bytes` beside the child, else in pinned host memory when they
    take at most PARENTS_SHARE_OF_HOST of the `host_bytes` available, else on disk (a CPU run: host memory, else
    disk). What is not given is measured now: free and host memory, the host link when the parents leave the
    accelerator, the cold read rate of `disk_probe` (a parent's folder) when they stay on disk. `force` (a
    `ResidentChild`'s explicit `parents=`) overrides the choice; a CPU run is never on the accelerator."""
    host = available_host_bytes() if host_bytes is None else int(host_bytes)
    in_host = parent_bytes <= PARENTS_SHARE_OF_HOST * host
    on_disk = force == ParentsOn.DISK or (force is None and not in_host)
    if device.type != "cuda":
        if on_disk:
            return _on_disk(parent_bytes, child_bytes, None, host, None, disk_bytes_per_s, disk_probe)
        return Placement(ParentsOn.HOST, parent_bytes, child_bytes, None, None, host_bytes=host)
    free = free_accelerator_bytes(device) if free_bytes is None else int(free_bytes)
    fits = parent_bytes <= PARENTS_SHARE_OF_FREE * free
    if force == ParentsOn.ACCELERATOR or (force is None and fits):
        return Placement(ParentsOn.ACCELERATOR, parent_bytes, child_bytes, free,
                         (parent_bytes + child_bytes) / DEVICE_BYTES_PER_S, DEVICE_BYTES_PER_S, host_bytes=host)
    link = measure_host_link(device) if link_bytes_per_s is None else link_bytes_per_s
    if on_disk:
        return _on_disk(parent_bytes, child_bytes, free, host, link, disk_bytes_per_s, disk_probe)
    # streamed: both parents cross the link; the device-side merge overlaps it and is the smaller term
    return Placement(ParentsOn.PINNED_HOST, parent_bytes, child_bytes, free, parent_bytes / link, link,
                     host_bytes=host)


def _on_disk(parent_bytes: int, child_bytes: int, free: int | None, host: int, link: float | None,
             disk: float | None, probe: Path | str | None) -> Placement:
    """Parents read from their files per candidate: each tensor is read into a staging buffer and then copied to
    the accelerator, one after the other, so a candidate's merge takes the disk's time plus the link's."""
    disk = measure_disk_read(probe) if disk is None and probe is not None else disk
    seconds = None if disk is None else parent_bytes / disk + (parent_bytes / link if link else 0.0)
    return Placement(ParentsOn.DISK, parent_bytes, child_bytes, free, seconds, link, host_bytes=host,
                     disk_bytes_per_s=disk)


def plan_for_pair(folders: Sequence[Path | str], device: str | torch.device) -> Placement:
    """The pre-flight's answer, before any model is loaded: the child is the father's size and takes its share of
    the free memory first. `folders` are the father, the mother and (delta methods) the common ancestor."""
    from darwin_core.evolution.child import resolve_device

    device = resolve_device(device)
    sizes = [folder_bytes(folder) for folder in folders]
    child, host = sizes[0], available_host_bytes()
    if device.type != "cuda":
        return choose(sum(sizes), child, device, host_bytes=max(host - child, 0), disk_probe=folders[0])
    return choose(sum(sizes), child, device, free_bytes=max(free_accelerator_bytes(device) - child, 0),
                  host_bytes=host, disk_probe=folders[0])
