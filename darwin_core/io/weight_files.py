"""Which weight files a model folder holds, and which of them transformers would load.

The reader must read the file ``from_pretrained`` loads, or the parent Darwin merges is not the parent it
scores; these names and rules follow transformers' own order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


def weight_format(folder: str | os.PathLike[str]) -> str | None:
    """"safetensors", "pickle" or None: which weights a model folder holds (safetensors wins when both)."""
    folder = Path(folder)
    if (folder / SAFETENSORS_INDEX).is_file() or any(folder.glob("*.safetensors")):
        return "safetensors"
    if (folder / PICKLE_INDEX).is_file() or pickle_files(folder):
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


def pickle_files(folder: Path) -> list[str]:
    """Pickle weight files by the names transformers uses (not training_args.bin and the like)."""
    return sorted(p.name for p in folder.glob("*.bin") if p.name.startswith(("pytorch_model", "model")))


