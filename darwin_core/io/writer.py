"""Crash-safe model writing: a child model only ever appears at its final path complete.

The writer streams: when the output layout (names, shapes, dtypes) is known up front it writes each shard's
header first and then each tensor's bytes at their planned offset as the tensor arrives, so it holds no tensor
at all; without a layout it buffers at most one shard before flushing it.

A model is written into a hidden temp folder beside the target (``.<name>.partial-<pid>``), and moved into
place by ``atomic.replace_folder`` at the very end. Any exception removes the temp folder; a killed process
leaves only that hidden folder, which no reader accepts as a model and which the next write to the same
target removes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import atomic_write_text, clean_stale_partials, partial_folder_for, replace_folder
from darwin_core.io.dtypes import DTYPE_BYTES, safetensors_dtype
from darwin_core.io.safetensors_header import numel, safetensors_header, tensor_bytes
from darwin_core.io.weight_files import SAFETENSORS_INDEX, SAFETENSORS_SINGLE


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked: loop)."""
    done, total = 0, len(data)
    while done < total:
        done += os.pwrite(fd, data[done:], offset + done)



def write_safetensors(path: str | os.PathLike[str], tensors: list[tuple[str, torch.Tensor]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write one safetensors file with tensors in the given order (stable-sorted by element size, largest first).

    See ``safetensors_header`` for the layout; the bytes equal the safetensors library's for the same order.
    """
    by_name = dict(tensors)
    prefix, offsets = safetensors_header(
        [(name, safetensors_dtype(t.dtype), tuple(t.shape)) for name, t in tensors], metadata)
    with open(path, "wb") as handle:
        handle.write(prefix)
        for name in offsets:  # data order (offsets are in increasing order)
            handle.write(tensor_bytes(by_name[name]))
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class _Slot:
    """Where one planned tensor goes: its shard (0-based), its byte offset in that file, what it must be."""

    shard: int
    offset: int
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def plan_shards(layout: Sequence[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Split (name, nbytes) in order into shards exactly as the buffered writer flushes them.

    A shard is closed when the next tensor would push it past ``max_shard_bytes`` (a tensor larger than the
    limit gets a shard of its own), so both writing modes give the same files for the same tensors.
    """
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, nbytes in layout:
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return shards


class ShardedWriter:
    """Write a model folder (weights + config/tokenizer/recipe files) so that it appears complete or not at all.

    Use as a context manager::

        with ShardedWriter(out_dir, max_shard_bytes=5 * 10**9, layout=layout) as writer:
            for name, tensor in merged:
                writer.add(name, tensor)
            writer.copy_file(father / "config.json")
            writer.write_text("recipe.yaml", recipe_yaml)

    Tensors go to shards in the order added (or planned); a shard is closed as soon as the next tensor would
    push it past ``max_shard_bytes``. One shard → ``model.safetensors``; several → ``model-0000k-of-0000N.safetensors``
    plus ``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``). An existing ``out_dir`` is
    refused unless ``overwrite=True``, and even then it is replaced only once the new folder is complete.

    Two modes, same bytes for the same tensors in the same order:

    - ``layout`` given — (name, shape, dtype) of every tensor, in the order they will be added: shards and
      headers are planned up front, each shard file starts with its header, and ``add`` writes the tensor's
      bytes straight to its final offset and keeps nothing, so memory holds no tensor of the writer's.
      Every tensor must match its planned shape and dtype, and all must be added before the block ends.
    - no layout: ``add`` buffers tensors until the shard is full, so up to one shard is held; don't modify a
      tensor after adding it, the writer keeps a reference until its shard is flushed.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, max_shard_bytes: int = 5 * 10**9,
                 overwrite: bool = False, metadata: dict[str, str] | None = None,
                 layout: Iterable[tuple[str, Sequence[int], torch.dtype | str]] | None = None) -> None:
        if max_shard_bytes <= 0:
            raise ValueError("max_shard_bytes must be positive")
        self.out_dir = Path(out_dir).absolute()
        self.max_shard_bytes = max_shard_bytes
        self.overwrite = overwrite
        self.metadata = {"format": "pt", **(metadata or {})}
        self.temp_dir = partial_folder_for(self.out_dir)
        self._buffer: list[tuple[str, torch.Tensor]] = []
        self._buffer_bytes = 0
        self._shards: list[list[str]] = []
        self._names: set[str] = set()
        self._total_bytes = 0
        self._files: set[str] = set()
        self._open = False
        self._done = False
        # Streaming mode (a layout): where each tensor goes, each shard's header, open shard files, what is left.
        self._slots: dict[str, _Slot] | None = None
        self._prefixes: list[bytes] = []
        self._fds: dict[int, int] = {}
        self._pending: list[int] = []
        self._added: list[str] = []
        if layout is not None:
            self._plan(layout)

    def _plan(self, layout: Iterable[tuple[str, Sequence[int], torch.dtype | str]]) -> None:
        entries: list[tuple[str, str, tuple[int, ...]]] = []
        for name, shape, dtype in layout:
            st = dtype if isinstance(dtype, str) else safetensors_dtype(dtype)
            if st not in DTYPE_BYTES:
                raise ValueError(f"{name}: unknown safetensors dtype {st}")
            entries.append((name, st, tuple(int(d) for d in shape)))
        kinds = {name: (st, shape) for name, st, shape in entries}
        if len(kinds) != len(entries):
            raise ValueError("the layout names a tensor twice")
        sizes = [(name, numel(shape) * DTYPE_BYTES[st]) for name, st, shape in entries]
        self._slots = {}
        for index, names in enumerate(plan_shards(sizes, self.max_shard_bytes)):
            prefix, offsets = safetensors_header([(n, *kinds[n]) for n in names], self.metadata)
            self._prefixes.append(prefix)
            self._pending.append(len(names))
            self._shards.append(names)
            for name in names:
                st, shape = kinds[name]
                self._slots[name] = _Slot(index, offsets[name], st, shape, numel(shape) * DTYPE_BYTES[st])
        self._total_bytes = sum(nbytes for _, nbytes in sizes)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> ShardedWriter:
        try:
            if self.out_dir.parent.is_dir():
                clean_stale_partials(self.out_dir)  # may restore a previous model first: check the target after
        except OSError as error:
            raise self._os_error(error) from error
        self._check_target()
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            if self.temp_dir.exists():
                shutil.rmtree(self.temp_dir)
            self.temp_dir.mkdir()
        except OSError as error:
            raise self._os_error(error) from error
        self._open = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Throw away everything written so far; the target is left as it was."""
        self._close_fds()
        self._buffer.clear()
        self._buffer_bytes = 0
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._open = False

    # -- adding content -----------------------------------------------------------------------------------
    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Write a tensor to its planned place (layout mode), or queue it for the current shard (flushing the
        shard first if this tensor would overflow it)."""
        self._require_open()
        if name in self._names:
            raise ValueError(f"tensor {name} was added twice")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
        safetensors_dtype(tensor.dtype)  # refuse unsupported dtypes now, not at flush time
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.to("cpu")
        tensor = tensor.contiguous()
        if self._slots is not None:
            self._write_planned(name, tensor)
            return
        nbytes = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._names.add(name)
        self._buffer.append((name, tensor))
        self._buffer_bytes += nbytes
        self._total_bytes += nbytes

    def copy_file(self, src_path: str | os.PathLike[str], name: str | None = None) -> None:
        """Copy a side file (config, tokenizer, generation config, …) into the model folder."""
        self._require_open()
        src = Path(src_path)
        target = self._side_path(name or src.name)
        try:
            shutil.copyfile(src, target)
        except FileNotFoundError:
            raise DarwinError(f"The file {src} to copy into the model does not exist.") from None
        except OSError as error:
            raise self._os_error(error) from error

    def write_text(self, name: str, text: str) -> None:
        """Write a text file (recipe, card, config) into the model folder."""
        self._require_open()
        target = self._side_path(name)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as error:
            raise self._os_error(error) from error

    @property
    def tensor_names(self) -> list[str]:
        """Names added so far, in the order they were added."""
        if self._slots is not None:
            return list(self._added)
        return [n for shard in self._shards for n in shard] + [n for n, _ in self._buffer]

    # -- internals ----------------------------------------------------------------------------------------
    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("ShardedWriter is used outside its `with` block")

    def _check_target(self) -> None:
        if self.out_dir.exists() or self.out_dir.is_symlink():
            if not self.out_dir.is_dir():
                raise DarwinError(f"{self.out_dir} exists and is not a folder.")
            if not self.overwrite:
                raise DarwinError(f"The output folder {self.out_dir} already exists; choose another or allow overwriting.")

    def _side_path(self, name: str) -> Path:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"{name!r} must be a relative path inside the model folder")
        if rel.name == SAFETENSORS_INDEX or (rel.suffix == ".safetensors" and len(rel.parts) == 1):
            raise ValueError(f"{name!r} would clash with the weight files the writer creates")
        target = self.temp_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self._files.add(rel.as_posix())
        return target

    def _shard_temp(self, index: int) -> Path:
        return self.temp_dir / f".shard-{index:05d}.safetensors"

    def _write_planned(self, name: str, tensor: torch.Tensor) -> None:
        """Streaming mode: put the tensor's bytes at their planned offset; close the shard once it is full."""
        assert self._slots is not None
        slot = self._slots.get(name)
        if slot is None:
            raise ValueError(f"tensor {name} is not in the writer's layout")
        dtype, shape = safetensors_dtype(tensor.dtype), tuple(tensor.shape)
        if (dtype, shape) != (slot.dtype, slot.shape):
            raise ValueError(f"tensor {name} is {dtype}{list(shape)}, but the layout planned {slot.dtype}{list(slot.shape)}")
        try:
            fd = self._fds.get(slot.shard)
            if fd is None:
                fd = os.open(self._shard_temp(slot.shard + 1), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._fds[slot.shard] = fd
                _pwrite_all(fd, memoryview(self._prefixes[slot.shard]), 0)
            _pwrite_all(fd, tensor_bytes(tensor), slot.offset)
            if slot.nbytes:
                # Start writing these pages back now (and let the kernel drop them once clean) rather than
                # leave a shard's worth of dirty pages for the fsync at the end of the shard to wait on.
                os.posix_fadvise(fd, slot.offset, slot.nbytes, os.POSIX_FADV_DONTNEED)
            self._names.add(name)
            self._added.append(name)
            self._pending[slot.shard] -= 1
            if self._pending[slot.shard] == 0:
                del self._fds[slot.shard]
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as error:
            raise self._os_error(error) from error

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def _flush(self) -> None:
        if not self._buffer:
            return
        index = len(self._shards) + 1
        try:
            write_safetensors(self._shard_temp(index), self._buffer, self.metadata)
        except OSError as error:
            raise self._os_error(error) from error
        self._shards.append([name for name, _ in self._buffer])
        self._buffer = []
        self._buffer_bytes = 0

    def _commit(self) -> None:
        self._require_open()
        if self._slots is not None:
            missing = [name for name in self._slots if name not in self._names]
            if missing:
                raise ValueError(f"{len(missing)} planned tensors were never added (first: {missing[0]})")
        self._flush()
        try:
            count = len(self._shards)
            if count == 1:
                os.replace(self._shard_temp(1), self.temp_dir / SAFETENSORS_SINGLE)
            elif count > 1:
                weight_map: dict[str, str] = {}
                for index, names in enumerate(self._shards, start=1):
                    final = f"model-{index:05d}-of-{count:05d}.safetensors"
                    os.replace(self._shard_temp(index), self.temp_dir / final)
                    weight_map.update({name: final for name in names})
                index_doc = {"metadata": {"total_size": self._total_bytes},
                             "weight_map": dict(sorted(weight_map.items()))}
                atomic_write_text(self.temp_dir / SAFETENSORS_INDEX, json.dumps(index_doc, indent=2) + "\n")
            self._move_into_place()
        except OSError as error:
            raise self._os_error(error) from error
        self._open = False
        self._done = True

    def _move_into_place(self) -> None:
        """Replace the target with the finished temp folder (refusing a target that appeared meanwhile)."""
        if self.out_dir.exists() and not self.overwrite:
            raise DarwinError(f"The output folder {self.out_dir} appeared while writing; nothing was replaced.")
        replace_folder(self.temp_dir, self.out_dir)

    def _os_error(self, error: OSError) -> DarwinError:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DarwinError(f"The disk is full while writing {self.out_dir.name}; nothing was written.")
        return DarwinError(f"Cannot write {self.out_dir.name}: {error.strerror or error}.")


