"""The one dtype table: safetensors dtype strings, torch dtypes, their sizes, and the names configs use.

Three spellings of a dtype meet in Darwin: the safetensors header's ("BF16"), torch's (``torch.bfloat16``) and
the one transformers configs, recipes and mergekit YAML use ("bfloat16", with the short "bf16" accepted from
people). Every translation between them lives here, so a dtype added or renamed is changed in one place.
"""

from __future__ import annotations

import torch

from darwin_core.errors import DarwinError

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

# The dtypes a child may be cast to, by the name config.json, a recipe and mergekit's `out_dtype` use.
CHILD_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Short spellings people type for those names.
_DTYPE_ALIASES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_NAME_OF_CHILD_DTYPE: dict[torch.dtype, str] = {dtype: name for name, dtype in CHILD_DTYPES.items()}


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


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype for a config-style name ("bfloat16", "bf16", any case); a torch dtype passes through."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).lower()
    try:
        return CHILD_DTYPES[_DTYPE_ALIASES.get(key, key)]
    except KeyError:
        raise DarwinError(f"Unknown dtype {name!r}; use float32, bfloat16 or float16.") from None


def dtype_name(dtype: torch.dtype) -> str | None:
    """The config-style name of a child dtype (torch.bfloat16 → "bfloat16"), or None for any other dtype."""
    return _NAME_OF_CHILD_DTYPE.get(dtype)
