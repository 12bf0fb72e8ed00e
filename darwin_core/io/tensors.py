"""Lazy tensor reading and crash-safe model writing: the only place that opens weight files.

Merging a pair of 27B models must not hold three models in memory, and a crash must never leave a child that
looks complete. The code lives in one module per concern, all re-exported here so that callers keep one import:

- ``dtypes``: the one dtype table (safetensors strings, torch dtypes, sizes, config names);
- ``safetensors_header``: reading and checking a file's header, building one for the writer;
- ``weight_files``: which weight files a folder holds and which of them transformers loads;
- ``reader``: ``TensorReader``, one tensor at a time without inflating resident memory;
- ``writer``: ``ShardedWriter`` and ``write_safetensors``, streaming into a hidden folder renamed into place;
- ``atomic``: whole-or-nothing files and folders, and the cleanup of a killed writer's leftovers;
- ``hashes``: file digests.

Everything else (merge kernels, MRI, health) works on tensors and never opens a file.
"""

from __future__ import annotations

from darwin_core.io.atomic import clean_stale_partials, is_partial_folder
from darwin_core.io.dtypes import DTYPE_BYTES, safetensors_dtype, torch_dtype
from darwin_core.io.hashes import sha256_file, sha256_of_files
from darwin_core.io.reader import TensorReader
from darwin_core.io.safetensors_header import TensorInfo, read_safetensors_header, safetensors_header
from darwin_core.io.weight_files import (
    PICKLE_INDEX,
    PICKLE_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    check_transformers_weights,
    transformers_weight_file,
    weight_format,
)
from darwin_core.io.writer import ShardedWriter, plan_shards, write_safetensors

__all__ = [
    "DTYPE_BYTES",
    "PICKLE_INDEX",
    "PICKLE_SINGLE",
    "SAFETENSORS_INDEX",
    "SAFETENSORS_SINGLE",
    "ShardedWriter",
    "TensorInfo",
    "TensorReader",
    "check_transformers_weights",
    "clean_stale_partials",
    "is_partial_folder",
    "plan_shards",
    "read_safetensors_header",
    "safetensors_dtype",
    "safetensors_header",
    "sha256_file",
    "sha256_of_files",
    "torch_dtype",
    "transformers_weight_file",
    "weight_format",
    "write_safetensors",
]
