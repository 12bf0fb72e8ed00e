"""Lazy tensor reading: one tensor at a time, without inflating the process's resident memory.

Merging a pair of 27B models must not hold three models in memory. The reader hands out one tensor at a time,
read with ``os.preadv`` into a fresh buffer (not through a memory map: mapped pages a process has touched
count towards its resident memory, so a mapped read of a whole model shows the whole model in RSS).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import is_partial_folder
from darwin_core.io.dtypes import DTYPE_BYTES, safetensors_dtype, torch_dtype
from darwin_core.io.safetensors_header import (
    MAX_HEADER_BYTES,
    TensorInfo,
    numel,
    read_safetensors_header,
    tensor_bytes,
)
from darwin_core.io.weight_files import (
    PICKLE_INDEX,
    PICKLE_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    pickle_files,
    transformers_weight_file,
    weight_format,
)


class TensorReader:
    """Read a model's tensors lazily, one at a time, from ``model.safetensors`` or a sharded index.

    ``folder`` is a model folder (or one ``.safetensors`` file). Construction reads only headers, so names,
    shapes, dtypes and sizes are known without loading anything; ``get`` reads one tensor's bytes with
    ``os.preadv`` (one open file per shard, kept open) into a fresh tensor on the CPU, or through a reused
    (pinned where CUDA allows) staging buffer onto another device. Reading this way rather than through a
    memory map keeps the process's resident memory at the tensors it holds, not the model it has read.
    Pickle weights (``.bin``) are refused unless ``allow_pickle=True``; they are then loaded with
    ``torch.load(weights_only=True, mmap=True)``, which cannot run code from the file. Where both formats are
    present the safetensors are read, picked in transformers' own order (``model.safetensors``, then the index),
    so the tensors merged are the ones ``from_pretrained`` loads; safetensors shards that transformers cannot
    find (no index) beside a pickle are refused, since ``from_pretrained`` would silently load the pickle.
    """

    def __init__(self, folder: str | os.PathLike[str], device: str | torch.device = "cpu", *,
                 allow_pickle: bool = False) -> None:
        self.path = Path(folder)
        self.device = torch.device(device)
        self._infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self.format = "safetensors"
        self._handles: dict[str, Any] = {}  # shard file name -> open binary file
        self._staging: torch.Tensor | None = None  # reused host buffer for reads onto a non-CPU device
        self._pickled: dict[str, dict[str, torch.Tensor]] = {}
        if is_partial_folder(self.path):
            raise DarwinError(f"{self.path} is an unfinished write (a .partial folder), not a model.")
        if self.path.is_file():
            self.folder = self.path.parent
            self._load_headers([self.path.name])
            return
        if not self.path.is_dir():
            raise DarwinError(f"The model folder {self.path} does not exist.")
        self.folder = self.path
        # transformers' own order (see `transformers_weight_file`): model.safetensors, then the index.
        index = self.folder / SAFETENSORS_INDEX
        if (self.folder / SAFETENSORS_SINGLE).is_file():
            self._load_headers([SAFETENSORS_SINGLE])
        elif index.is_file():
            self._load_headers(*self._index_files(index))
        elif files := sorted(p.name for p in self.folder.glob("*.safetensors")):
            pickle = transformers_weight_file(self.folder)
            if pickle is not None:  # from_pretrained never sees these shards: it would load the pickle
                raise DarwinError(
                    f"{self.folder.name} has safetensors shards and {pickle} but no {SAFETENSORS_INDEX}, so "
                    "transformers would load the pickle instead of the safetensors; add the index or remove the .bin."
                )
            self._load_headers(files)
        elif weight_format(self.folder) == "pickle":
            if not allow_pickle:
                raise DarwinError(
                    f"{self.folder.name} has only pickle weights (.bin), which can run code when loaded; "
                    "use a safetensors copy or explicitly allow pickle weights."
                )
            self.format = "pickle"
            self._load_pickles()
        else:
            raise DarwinError(f"No model weights (.safetensors) found in {self.folder}.")

    # -- construction -------------------------------------------------------------------------------------
    def _index_files(self, index: Path) -> tuple[list[str], dict[str, str]]:
        """Shard files named by an index (first-appearance order) and its weight map; a missing shard is named.

        The index is the model's own claim: a shard must be a plain file name in this folder, never a path (in a
        shared Hub cache ``../`` from one snapshot reaches another repo's, perhaps gated, files).
        """
        try:
            if index.stat().st_size > MAX_HEADER_BYTES:
                raise DarwinError(f"{index.name} in {self.folder} is too large to be an index.")
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
            raise DarwinError(f"{index.name} in {self.folder} is not a valid index (no weight_map).") from None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise DarwinError(f"{index.name} in {self.folder} is not a valid index (its weight_map is not names).")
        files = list(dict.fromkeys(weight_map.values()))
        for file in files:
            if Path(file).name != file or file in ("", ".", "..") or "\\" in file:
                raise DarwinError(f"{index.name} in {self.folder} names the shard {file[:120]}, which is not a file "
                                  "directly in the model folder (it may point outside it), so it is refused.")
            if not (self.folder / file).is_file():
                raise DarwinError(f"The shard {file} listed in {index.name} is missing from {self.folder}.")
        return files, weight_map

    def _load_headers(self, files: list[str], expected: dict[str, str] | None = None) -> None:
        for file in files:
            infos, metadata = read_safetensors_header(self.folder / file)
            for name, info in infos.items():
                if name in self._infos:
                    raise DarwinError(f"Tensor {name} appears in two weight files ({self._infos[name].file} and {file}).")
                self._infos[name] = info
            self.metadata.update(metadata)
        if expected is not None:
            for name, file in expected.items():
                info = self._infos.get(name)
                if info is None or info.file != file:
                    raise DarwinError(f"Tensor {name} is listed in the index under {file} but is not in that shard.")

    def _load_pickles(self) -> None:
        index = self.folder / PICKLE_INDEX
        if (self.folder / PICKLE_SINGLE).is_file():  # transformers' order: the single file before the index
            files = [PICKLE_SINGLE]
        elif index.is_file():
            files, _ = self._index_files(index)
        else:
            files = pickle_files(self.folder)
        for file in files:
            state = self._torch_load(self.folder / file)
            self._pickled[file] = state
            for name, tensor in state.items():
                dtype = safetensors_dtype(tensor.dtype)
                self._infos[name] = TensorInfo(tuple(tensor.shape), dtype, tensor.numel() * DTYPE_BYTES[dtype], file)

    @staticmethod
    def _torch_load(path: Path) -> dict[str, torch.Tensor]:
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure means "not loadable safely"
            raise DarwinError(f"{path.name} could not be loaded safely as a weights-only pickle ({type(error).__name__}).") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise DarwinError(f"{path.name} is not a state dict of tensors.")
        return state

    # -- queries ------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Tensor names, shard by shard in storage order (reading in this order is sequential I/O)."""
        return list(self._infos)

    @property
    def files(self) -> list[str]:
        """Weight file names (relative to the folder), in order."""
        return list(dict.fromkeys(info.file for info in self._infos.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self._infos)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._infos[name].shape

    def dtype(self, name: str) -> torch.dtype:
        return torch_dtype(self._infos[name].dtype)

    def nbytes(self, name: str) -> int:
        return self._infos[name].nbytes

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self._infos.values())

    @property
    def parameter_count(self) -> int:
        return sum(numel(info.shape) for info in self._infos.values())

    # -- loading ------------------------------------------------------------------------------------------
    def get(self, name: str, device: str | torch.device | None = None) -> torch.Tensor:
        """Load one tensor onto ``device`` (default: the reader's device); the caller owns the result."""
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"{name} is not a tensor of {self.folder}")
        target = torch.device(device) if device is not None else self.device
        if self.format == "pickle":
            return self._pickled[info.file][name].to(target)
        dtype = torch_dtype(info.dtype)
        fd = self._handle(info.file).fileno()
        if target.type == "cpu":
            tensor = torch.empty(info.shape, dtype=dtype)
            _pread_into(fd, tensor_bytes(tensor), info.offset, info.file)
            return tensor
        staged = self._stage(info.nbytes)
        _pread_into(fd, memoryview(staged.numpy()), info.offset, info.file)
        # A synchronous copy: the staging buffer may be reused as soon as this returns.
        return staged.view(dtype).reshape(info.shape).to(target)

    def items(self, names: Iterable[str] | None = None,
              device: str | torch.device | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs, one tensor in memory at a time from the reader's side."""
        for name in self.names if names is None else names:
            yield name, self.get(name, device)

    def _handle(self, file: str) -> Any:
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = open(self.folder / file, "rb", buffering=0)  # noqa: SIM115 - kept open until close()
            except FileNotFoundError:
                raise DarwinError(f"The weight file {file} is missing from {self.folder}.") from None
            self._handles[file] = handle
        return handle

    def _stage(self, nbytes: int) -> torch.Tensor:
        """A host buffer of at least ``nbytes`` (the largest tensor read so far), pinned when CUDA is usable."""
        if self._staging is None or self._staging.numel() < nbytes:
            self._staging = None
            size = max(nbytes, 1)
            try:
                self._staging = torch.empty(size, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
            except RuntimeError:  # pinning can fail (no driver, locked-memory limit): pageable still works
                self._staging = torch.empty(size, dtype=torch.uint8)
        return self._staging[:nbytes]

    def close(self) -> None:
        """Close the open shard files and drop the staging buffer."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._staging = None
        self._pickled.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to release
            pass

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pread_into(fd: int, buffer: memoryview, offset: int, file: str) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset`` (``preadv`` may return less than asked: loop)."""
    done, total = 0, len(buffer)
    while done < total:
        count = os.preadv(fd, [buffer[done:]], offset + done)
        if count == 0:
            raise DarwinError(f"{file} is truncated: it ends in the middle of a tensor.")
        done += count


