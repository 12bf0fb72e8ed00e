"""The safetensors format: reading and checking a file's header, and building one for the writer.

A header is a claim made by whoever wrote the file, and every later allocation trusts it, so it is checked
against the file before anything is believed. The writer builds headers with ``safetensors_header`` before
any data exists, which is what lets it put each tensor at its final offset as the tensor arrives.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from darwin_core.errors import DarwinError
from darwin_core.io.dtypes import DTYPE_BYTES

# Largest header the safetensors library accepts (100 MB); anything bigger is a corrupt file, not a model.
MAX_HEADER_BYTES = 100_000_000


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
            if header_len < 2 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
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
    needed = numel(tuple(shape)) * DTYPE_BYTES[dtype]
    if end - begin != needed:
        raise DarwinError(f"{bad} is {dtype} {shape} ({needed} bytes) but its data_offsets give it "
                          f"{end - begin} bytes.")
    return begin, end, TensorInfo(tuple(shape), dtype, needed, file)


def _is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a bool, not a float: safetensors sizes and offsets are unsigned integers)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



def numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
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
        nbytes = numel(tuple(shape)) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        begins[name] = offset
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    prefix = struct.pack("<Q", len(encoded)) + encoded
    return prefix, {name: len(prefix) + begin for name, begin in begins.items()}


