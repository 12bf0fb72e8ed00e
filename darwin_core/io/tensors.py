"""Lazy tensor reading and crash-safe model writing: the only place that opens weight files.

Merging a pair of 27B models must not hold three models in memory. The reader hands out one tensor at a time,
read with ``os.preadv`` into a fresh buffer (not through a memory map: mapped pages a process has touched
count towards its resident memory, so a mapped read of a whole model shows the whole model in RSS). The writer
streams: when the output layout (names, shapes, dtypes) is known up front it writes each shard's header first
and then each tensor's bytes at their planned offset as the tensor arrives, so it holds no tensor at all;
without a layout it buffers at most one shard before flushing it. Everything else (merge kernels, MRI, health)
works on tensors and never opens a file.

The writer's contract is what makes a crash harmless: a child model only ever appears at its final path
complete. It is written into a hidden temp folder beside the target (``.<name>.partial-<pid>``), and moved
into place with one ``os.replace`` at the very end. Any exception removes the temp folder; a killed process
leaves only that hidden folder, which no reader accepts as a model and which the next write to the same
target removes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from darwin_core.errors import DarwinError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
# Largest header the safetensors library accepts (100 MB); anything bigger is a corrupt file, not a model.
_MAX_HEADER_BYTES = 100_000_000
_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")

# safetensors dtype strings <-> torch dtypes (the set safetensors itself knows; missing ones map to None).
_ST_TO_TORCH: dict[str, torch.dtype | None] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
    "U64": getattr(torch, "uint64", None),
    "U32": getattr(torch, "uint32", None),
    "U16": getattr(torch, "uint16", None),
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
    "F8_E4M3FNUZ": getattr(torch, "float8_e4m3fnuz", None),
    "F8_E5M2": getattr(torch, "float8_e5m2", None),
    "F8_E5M2FNUZ": getattr(torch, "float8_e5m2fnuz", None),
    "F8_E8M0": getattr(torch, "float8_e8m0fnu", None),
}
_TORCH_TO_ST: dict[torch.dtype, str] = {dt: name for name, dt in _ST_TO_TORCH.items() if dt is not None}
# Bytes per element for each safetensors dtype string (used for sizes without touching tensor data).
DTYPE_BYTES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "C64": 8, "U64": 8, "U32": 4, "U16": 2, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1,
}


def torch_dtype(st_dtype: str) -> torch.dtype:
    """The torch dtype for a safetensors dtype string ("BF16" → torch.bfloat16)."""
    dtype = _ST_TO_TORCH.get(st_dtype)
    if dtype is None:
        raise DarwinError(f"Tensors of dtype {st_dtype} are not supported by this version of torch.")
    return dtype


def safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors dtype string for a torch dtype (torch.bfloat16 → "BF16")."""
    try:
        return _TORCH_TO_ST[dtype]
    except KeyError:
        raise DarwinError(f"Tensors of dtype {dtype} cannot be stored in safetensors.") from None


@dataclass(frozen=True)
class TensorInfo:
    """What a safetensors header says about one tensor: enough for sizes and compatibility, no data."""

    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string, e.g. "BF16"
    nbytes: int
    file: str  # file name (relative to the model folder) that holds the tensor
    # Where the tensor's bytes start in that file (8 + header length + its begin offset); not part of equality,
    # so two models with the same tensors compare equal however their files are laid out.
    offset: int = field(default=0, compare=False)


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos (in storage order) and the ``__metadata__`` of one safetensors file, reading only its header.

    Reads the 8-byte little-endian header length and the JSON header, never the tensor data, so it is cheap
    even for a 5 GB shard. The header is a claim made by whoever wrote the file, and every later allocation
    trusts it (``get`` makes a tensor of the header's shape before reading a byte), so it is checked against the
    file before anything is believed: each tensor's bytes lie inside the file, their length is exactly
    shape × dtype size, and no two tensors share bytes. A header that promises a 160 GB tensor in a 1 KB file,
    or a file shorter than its header promises (an interrupted download), is refused in one sentence.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) != 8:
                raise DarwinError(f"{path.name} is not a safetensors file (it is shorter than 8 bytes).")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len < 2 or header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise DarwinError(f"{path.name} is not a valid safetensors file (its header is truncated or corrupt).")
            header = json.loads(handle.read(header_len))
    except FileNotFoundError:
        raise DarwinError(f"The weight file {path.name} is missing from {path.parent}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise DarwinError(f"{path.name} is not a valid safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise DarwinError(f"{path.name} is not a valid safetensors file (its header is not a JSON object).")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise DarwinError(f"{path.name} is not a valid safetensors file (its __metadata__ is not a JSON object).")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    entries = sorted((_header_entry(path.name, name, entry, data_size) + (name,) for name, entry in header.items()),
                     key=lambda item: (item[0], item[1]))
    previous_end, previous = 0, ""
    for begin, end, _, name in entries:
        if begin < previous_end:
            raise DarwinError(f"{path.name} is not a valid safetensors file: tensor {name} overlaps the bytes of "
                              f"tensor {previous}.")
        previous_end, previous = max(previous_end, end), name
    infos = {name: replace(info, offset=data_start + begin) for begin, _, info, name in entries}
    return infos, {str(k): str(v) for k, v in metadata.items()}


def _header_entry(file: str, name: str, entry: Any, data_size: int) -> tuple[int, int, TensorInfo]:
    """(begin, end, info) of one header entry, once its dtype, shape and offsets agree with each other and the file.

    Refuses (naming the file and the tensor) anything that is not exactly what the safetensors format allows:
    a known dtype, non-negative integer dimensions, 0 <= begin <= end <= the data's size, and end - begin equal
    to the bytes the shape and dtype need. Nothing is allocated here; only integers are compared.
    """
    bad = f"{file} is not a valid safetensors file: tensor {name}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise DarwinError(f"{bad} has no dtype, shape and data_offsets.")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise DarwinError(f"{bad} has the unknown dtype {str(dtype)[:40]}.")
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise DarwinError(f"{bad} has a shape that is not a list of non-negative integers.")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(x) for x in offsets)
            or offsets[0] > offsets[1]):
        raise DarwinError(f"{bad} has data_offsets that are not two increasing non-negative integers.")
    begin, end = offsets
    if end > data_size:
        raise DarwinError(f"{file} is truncated: tensor {name} ends past the end of the file.")
    needed = _numel(tuple(shape)) * DTYPE_BYTES[dtype]
    if end - begin != needed:
        raise DarwinError(f"{bad} is {dtype} {shape} ({needed} bytes) but its data_offsets give it "
                          f"{end - begin} bytes.")
    return begin, end, TensorInfo(tuple(shape), dtype, needed, file)


def _is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a bool, not a float: safetensors sizes and offsets are unsigned integers)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_partial_folder(path: str | os.PathLike[str]) -> bool:
    """True for the hidden temp/backup folders the writer uses; they are never models."""
    return _PARTIAL_RE.match(Path(path).name) is not None


def weight_format(folder: str | os.PathLike[str]) -> str | None:
    """"safetensors", "pickle" or None: which weights a model folder holds (safetensors wins when both)."""
    folder = Path(folder)
    if (folder / SAFETENSORS_INDEX).is_file() or any(folder.glob("*.safetensors")):
        return "safetensors"
    if (folder / PICKLE_INDEX).is_file() or _pickle_files(folder):
        return "pickle"
    return None


def transformers_weight_file(folder: str | os.PathLike[str]) -> str | None:
    """The weight file ``from_pretrained`` loads from a local folder, in transformers' own order, or None.

    transformers (5.x, ``_get_resolved_checkpoint_files``) takes ``model.safetensors``, then the safetensors
    index, then ``pytorch_model.bin``, then the pickle index; any other ``*.safetensors`` name it never sees.
    The reader must read the file transformers loads, or the father Darwin merges is not the father it scores.
    """
    folder = Path(folder)
    for name in (SAFETENSORS_SINGLE, SAFETENSORS_INDEX, PICKLE_SINGLE, PICKLE_INDEX):
        if (folder / name).is_file():
            return name
    return None


def check_transformers_weights(config: dict[str, Any], folder: str | os.PathLike[str], label: str) -> None:
    """Refuse a config.json whose ``transformers_weights`` sends ``from_pretrained`` to other weights than ours.

    transformers loads the file that key names instead of its default, so a config naming a second (zeroed,
    partial or pickle) file would make the model that is evaluated differ from the tensors that are merged.
    """
    named = config.get("transformers_weights")
    if named is None:
        return
    if not isinstance(named, str) or named != transformers_weight_file(folder):
        raise DarwinError(f"The config.json of {label} sets transformers_weights to {str(named)[:80]}, so "
                          "transformers would load other weights than the ones Darwin reads; remove that key.")


def _pickle_files(folder: Path) -> list[str]:
    """Pickle weight files by the names transformers uses (not training_args.bin and the like)."""
    return sorted(p.name for p in folder.glob("*.bin") if p.name.startswith(("pytorch_model", "model")))


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
            if index.stat().st_size > _MAX_HEADER_BYTES:
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
            files = _pickle_files(self.folder)
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
        return sum(_numel(info.shape) for info in self._infos.values())

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
            _pread_into(fd, _tensor_bytes(tensor), info.offset, info.file)
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


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# ------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    """Whether a process with this id still runs (a zombie, killed but not reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def clean_stale_partials(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove temp/backup folders left beside ``out_dir`` by writers that died; returns what was removed."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    candidates = []
    for candidate in out_dir.parent.glob(f".{_glob_escape(out_dir.name)}.*-*"):
        match = _PARTIAL_RE.match(candidate.name)
        if match is None or match["name"] != out_dir.name:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        candidates.append((match["kind"] != "old", candidate))
    for is_partial, candidate in sorted(candidates):
        # A writer killed between its two renames leaves the previous model as `.old-<pid>` and no target:
        # put the previous model back rather than lose it.
        if not is_partial and not out_dir.exists():
            os.replace(candidate, out_dir)
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked: loop)."""
    done, total = 0, len(data)
    while done < total:
        done += os.pwrite(fd, data[done:], offset + done)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a contiguous CPU tensor, without a copy."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def safetensors_header(entries: Sequence[tuple[str, str, Sequence[int]]],
                       metadata: dict[str, str] | None = None) -> tuple[bytes, dict[str, int]]:
    """The bytes before the data of a safetensors file, and where each tensor's data starts in that file.

    ``entries`` are (name, safetensors dtype, shape) in the order given to the writer. The format requires
    each tensor's data to follow the previous one without padding, so mixed dtypes are ordered by element size,
    largest first (as safetensors itself does), to keep every tensor aligned; within one element size the given
    order is kept. Knowing this before any data exists is what lets the streaming writer put each tensor at its
    final place as it arrives. Bytes are a pure function of (names, dtypes, shapes, order, metadata).
    """
    ordered = sorted(entries, key=lambda entry: -DTYPE_BYTES[entry[1]])
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    begins: dict[str, int] = {}
    for name, dtype, shape in ordered:
        nbytes = _numel(tuple(shape)) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        begins[name] = offset
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    prefix = struct.pack("<Q", len(encoded)) + encoded
    return prefix, {name: len(prefix) + begin for name, begin in begins.items()}


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
            handle.write(_tensor_bytes(by_name[name]))
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
        self.temp_dir = self.out_dir.parent / f".{self.out_dir.name}.partial-{os.getpid()}"
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
        sizes = [(name, _numel(shape) * DTYPE_BYTES[st]) for name, st, shape in entries]
        self._slots = {}
        for index, names in enumerate(plan_shards(sizes, self.max_shard_bytes)):
            prefix, offsets = safetensors_header([(n, *kinds[n]) for n in names], self.metadata)
            self._prefixes.append(prefix)
            self._pending.append(len(names))
            self._shards.append(names)
            for name in names:
                st, shape = kinds[name]
                self._slots[name] = _Slot(index, offsets[name], st, shape, _numel(shape) * DTYPE_BYTES[st])
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
            _pwrite_all(fd, _tensor_bytes(tensor), slot.offset)
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
                (self.temp_dir / SAFETENSORS_INDEX).write_text(json.dumps(index_doc, indent=2) + "\n")
            _fsync_dir(self.temp_dir)
            self._move_into_place()
        except OSError as error:
            raise self._os_error(error) from error
        self._open = False
        self._done = True

    def _move_into_place(self) -> None:
        backup = None
        if self.out_dir.exists():
            if not self.overwrite:
                raise DarwinError(f"The output folder {self.out_dir} appeared while writing; nothing was replaced.")
            backup = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(self.out_dir, backup)
        try:
            os.replace(self.temp_dir, self.out_dir)
        except OSError:
            if backup is not None:
                os.replace(backup, self.out_dir)
            raise
        _fsync_dir(self.out_dir.parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def _os_error(self, error: OSError) -> DarwinError:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DarwinError(f"The disk is full while writing {self.out_dir.name}; nothing was written.")
        return DarwinError(f"Cannot write {self.out_dir.name}: {error.strerror or error}.")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of one file, read in chunks (model shards do not fit in memory twice)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_of_files(folder: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 hex digest of every file under ``folder``, keyed by POSIX relative path, sorted.

    Used to prove bit-identical children (same recipe, same parents → same digests) and for zoo.json.
    """
    folder = Path(folder)
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digests[path.relative_to(folder).as_posix()] = sha256_file(path)
    return digests
