"""Merge to disk: stream the parents through `merge_tensors` into a new model folder.

One tensor at a time is read from each parent (TensorReader), merged on the chosen device and handed to the
ShardedWriter. The child's layout (names, shapes, dtypes) is known before any tensor is merged — the father's
header and the recipe's dtype fix it — so the writer runs in streaming mode: it writes each shard's header first
and each merged tensor straight to its place, holding none. Peak memory is a few tensors (the two parents' copies
of one tensor, the float32 work and the result), whatever the model's size. The finished folder is moved into
place atomically. The child folder gets the father's config.json (dtype updated when the recipe sets one), tokenizer
files and generation_config.json, plus `darwin-recipe.yaml`, the recipe that reproduces it: its public form
(`Recipe.public`), which names the parents by Hub id@revision and never by a path on this machine, because the
child folder is what gets published. Merging that file elsewhere finds the parents on the Hub (or its cache).

The father's tensors meet the mother's through the pair's `Pairing` (`darwin_core.merge.pairing`): by name, by
canonical name (a multimodal wrapper and its text-only sibling) or FFN by FFN (two families of one hidden size);
either way the child has the father's names, shapes, config and tokenizer, so it loads with his model class.
Parents whose vocabularies differ are bred with the recipe's `tokenizer_source` (`darwin_core.merge.vocabulary`,
planned once both folders are here): the pairing carries the plan, the embedding and head rows are aligned by
token, and the child's vocab_size, tokenizer files, chat template and generation_config are the plan's, so the
child speaks the vocabulary it was bred with.

CLI: `python -m darwin_core merge RECIPE.yaml --out DIR [--device cuda] [--overwrite]`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.apply import merge_tensors, paired_plan
from darwin_core.merge.pairing import Pairing, aligned_sources, pairing_for, with_vocabulary
from darwin_core.recipe import RECIPE_FILE, ParentRef, Recipe

# Files a model folder carries besides its weights; copied from the father when present.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
)
DEFAULT_SHARD_BYTES = 5 * 10**9


def visible_devices() -> list[str]:
    """The devices this torch build can run on here, as they are named: cpu, cuda:0 … cuda:N-1, mps."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: Any, *, allow_auto: bool = False) -> str:
    """`name` when torch can run on it here, else one sentence naming what torch sees (a CPU-only build says so)."""
    text = str(name).strip() if isinstance(name, str) else ""
    if allow_auto and text == "auto":
        return text
    seen = visible_devices()
    cuda_note = "" if torch.cuda.is_available() else (
        " (this torch build has no CUDA)" if torch.version.cuda is None else " (no CUDA device is visible)")
    sees = f"torch here sees {', '.join(seen)}{cuda_note}"
    choices = "auto, " if allow_auto else ""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DarwinError(f"{text[:40] or repr(name)} is not a device torch knows ({choices}cpu, cuda, cuda:N or mps); {sees}.") from None
    if device.type == "cpu" or (device.type == "mps" and "mps" in seen):
        return text
    if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count():
        return text
    raise DarwinError(f"The device {text} is not available: {sees}.")


def check_shard_size(max_shard_gb: Any) -> int:
    """The largest shard in bytes for a size in GB; one sentence unless it is a positive, finite number."""
    import math

    try:
        size = float(max_shard_gb)
    except (TypeError, ValueError):
        raise DarwinError(f"The largest shard size must be a number of GB, not {max_shard_gb!r}.") from None
    if not math.isfinite(size) or size <= 0 or size * 10**9 < 1:
        raise DarwinError(f"The largest shard size must be more than 0 GB, not {max_shard_gb}.")
    return int(size * 10**9)


def check_out_folder(out_dir: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Where the child goes, checked before any parent is read: not a file, not an existing folder unless
    `overwrite`, and not under a file (missing folders above it are made by the writer)."""
    out = Path(out_dir).expanduser()
    if out.is_file():
        raise DarwinError(f"{out} is a file; the output must be a folder for the child.")
    if out.exists() and not overwrite:
        raise DarwinError(f"The output folder {out} already exists; choose another or allow overwriting.")
    for ancestor in out.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise DarwinError(f"{ancestor} is a file, so the output folder {out} cannot be made inside it.")
            break
    return out


def parent_model(ref: ParentRef, who: str) -> Any:
    """The hub.ModelRef of a recipe's parent from its config and safetensors headers, no weight downloaded: its
    `path`, else its name: `demo:`/`run:` (this machine's demo zoo and runs folder), else the Hub (the cache, or
    the headers by range requests when online) — a published recipe carries no path.

    Hub calls use the `HF_TOKEN` of the environment, passed explicitly; this is the command-line path
    (`merge RECIPE.yaml`), never a Space visitor's.
    """
    from darwin_core.parents.hub import resolve_model

    if ref.path:
        path = Path(ref.path)
        if path.is_file():
            raise DarwinError(f"The {who} {path} is a file, not a model folder.")
        if not path.is_dir():
            raise DarwinError(f"The {who} folder {path} does not exist.")
        ref.check_content()  # the recipe names the weights it was made from, not the folder
        return resolve_model(str(path), local_mode=True)
    if ref.id.startswith(("demo:", "run:")):
        from darwin_core.io.runfolder import runs_dir_default
        from darwin_core.parents import resolve_parent_name

        return resolve_parent_name(ref.id, local_mode=True, runs_dir=runs_dir_default(None))
    return resolve_model(ref.label(), local_mode=False, token=os.environ.get("HF_TOKEN") or None)


def fetched_folder(model: Any) -> Path:
    """The local folder of a resolved parent, downloading what breeding needs (weights, config, tokenizer files)
    with the environment's `HF_TOKEN` when it is a Hub model not in the cache yet."""
    from darwin_core.parents.hub import download

    if model.folder is None:
        model = download(model, token=os.environ.get("HF_TOKEN") or None)
    return Path(model.folder)


def local_folder(ref: ParentRef, who: str) -> Path:
    """The local folder of a parent (`parent_model`, then `fetched_folder`)."""
    return fetched_folder(parent_model(ref, who))


def _config_text(father: Path, dtype: str | None) -> str | None:
    """The father's config.json, with its dtype fields set to the child's dtype when the recipe fixes one."""
    path = father / "config.json"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if dtype is None:
        return text
    config = json.loads(text)

    def set_dtype(node: dict) -> None:
        for key in ("dtype", "torch_dtype"):
            if key in node:
                node[key] = dtype
        for value in node.values():
            if isinstance(value, dict):
                set_dtype(value)

    set_dtype(config)
    if "dtype" not in config and "torch_dtype" not in config:
        config["dtype"] = dtype
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _child_config_text(father: Path, mother: Path, dtype: str | None, pairing: Pairing) -> str | None:
    """The child's config.json: the father's (`_config_text`), with the vocabulary plan's vocab_size and, for the
    mother's tokenizer, her special token ids."""
    text = _config_text(father, dtype)
    if text is None or pairing.vocabulary is None:
        return text
    mother_path = mother / "config.json"
    mother_config = json.loads(mother_path.read_text(encoding="utf-8")) if mother_path.is_file() else None
    config = pairing.vocabulary.child_config(json.loads(text), mother_config)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _write_side_files(writer: Any, father: Path, pairing: Pairing) -> None:
    """The father's side files, except that a vocabulary plan's tokenizer files, chat template and
    generation_config replace his (the child's tokenizer is the one it was bred with)."""
    from darwin_core.merge.vocabulary import TOKENIZER_FILES

    planned = pairing.vocabulary.tokenizer_files() if pairing.vocabulary is not None else None
    for file in SIDE_FILES:
        if planned is not None and (file in TOKENIZER_FILES or file == "generation_config.json"):
            continue
        if (father / file).is_file():
            writer.copy_file(father / file)
    if planned:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # bytes (a sentencepiece model too) through the writer's copy
            for file, data in sorted(planned.items()):
                (Path(tmp) / file).write_bytes(data)
                writer.copy_file(Path(tmp) / file)


class _ReadAhead:
    """A TensorSource that reads the next tensor (in the father's order) in a background thread.

    Reading (a page-cache copy or a disk read) then overlaps the merge math of the tensor before it. All reads
    of the wrapped reader go through its one worker thread, so the reader is never used from two threads at
    once; at most one tensor read ahead is held, plus any the merge skipped (dropped as soon as it moves on).
    """

    def __init__(self, reader: Any, order: list[str], pool: ThreadPoolExecutor) -> None:
        """`order`: the names this reader will be asked for, in that order (the mother's names, when paired)."""
        self._reader = reader
        self._order = order
        self._position = {name: i for i, name in enumerate(order)}
        self._pool = pool
        self._ahead: dict[str, Future] = {}
        self.names = reader.names

    def __contains__(self, name: object) -> bool:
        return name in self._reader

    def shape(self, name: str) -> tuple[int, ...]:
        return self._reader.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self._reader.dtype(name)

    def get(self, name: str, device: Any = None) -> torch.Tensor:
        future = self._ahead.pop(name, None)
        if future is None or future.device != device:
            future = self._submit(name, device)
        position = self._position.get(name)
        if position is not None:
            for skipped in [n for n in self._ahead if self._position[n] <= position]:
                del self._ahead[skipped]
            following = position + 1
            if following < len(self._order) and self._order[following] not in self._ahead:
                self._ahead[self._order[following]] = self._submit(self._order[following], device)
        return future.result()

    def _submit(self, name: str, device: Any) -> Future:
        future = self._pool.submit(self._reader.get, name, device)
        future.device = device  # type: ignore[attr-defined]
        return future


def child_layout(recipe: Recipe, father: Any,
                 pairing: Pairing | None = None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of every tensor `merge_tensors` yields for this recipe, in the father's order.

    Mirrors `merge_tensors`' dtype rule (through the same `paired_plan`): a tensor copied from the father keeps
    his dtype when its plan says so (other towers) or the recipe sets none, else takes the recipe's; integer
    buffers stay the father's; everything else is the recipe's dtype or the father's. The streaming writer checks
    every tensor against this plan, so a divergence raises instead of writing a wrong file.
    """
    out_dtype = recipe.torch_dtype
    names = None if pairing is None else pairing.names
    vocabulary = None if pairing is None else pairing.vocabulary
    layout = []
    for name in father.names:
        plan, _ = paired_plan(recipe, name, names)
        dtype = father.dtype(name)
        if plan.source == "father":
            dtype = dtype if plan.keep_dtype or out_dtype is None else out_dtype
        elif dtype.is_floating_point:
            dtype = out_dtype or dtype
        shape = tuple(father.shape(name))
        layout.append((name, shape if vocabulary is None else vocabulary.child_shape(name, shape), dtype))
    return layout


def _stream(recipe: Recipe, father: Any, mother: Any, base: Any, device: str, writer: Any,
            pairing: Pairing | None = None) -> None:
    """Merge every tensor into the writer as a three-stage pipeline: read ahead | merge | write.

    Each parent is read one tensor ahead by its own thread and each merged tensor is written by a writer thread
    while the next one is merged (file reads and writes release the GIL, and so does the math), so in flight
    at once are at most: one tensor read ahead per parent, the tensor being merged with its float32 work,
    and the previous result being written. Tensors reach the writer in the father's order.
    """
    order = list(father.names)
    names = None if pairing is None else pairing.names
    orders = [order, order if names is None else [n for n in (names.get(f) for f in order) if n is not None], order]
    pools = [ThreadPoolExecutor(1, thread_name_prefix=f"darwin-{who}") for who in ("father", "mother", "base", "write")]
    try:
        sources = [None if r is None else _ReadAhead(r, o, pool) for r, o, pool in zip((father, mother, base), orders, pools)]
        if pairing is not None:  # vocabulary tensors in the child's vocabulary, when the pairing has a plan
            sources[0], sources[1] = aligned_sources(pairing, sources[0], sources[1])
        pending: Future | None = None
        try:
            for name, tensor in merge_tensors(recipe, sources[0], sources[1], order, device=device, base=sources[2],
                                              pairing=names):
                if pending is not None:
                    pending.result()
                pending = pools[3].submit(writer.add, name, tensor)
                del tensor  # the writer thread holds the only reference now
            if pending is not None:
                pending.result()
        finally:
            if pending is not None and not pending.done():
                wait([pending])  # never let the writer abort while a tensor is being written
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def merge_to_disk(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write the child of `recipe` to `out_dir` (complete, or not at all) and return its path.

    The parents are resolved from their headers first and refused, before anything is downloaded or written,
    unless a pairing breeds them (`darwin_core.merge.pairing`, from `darwin_core.parents.compatibility`).
    """
    from darwin_core.io.tensors import ShardedWriter, TensorReader

    check_device(device)  # the arguments first: nothing is resolved, downloaded or written for a typo
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise DarwinError(f"The largest shard must be at least one byte, not {max_shard_bytes!r}.")
    check_out_folder(out_dir, overwrite=overwrite)
    father_model, mother_model = parent_model(recipe.father, "father"), parent_model(recipe.mother, "mother")
    pairing = pairing_for(father_model, mother_model, recipe.layer_map)  # before any download: never fetch 2 × 60 GB to fail
    father_dir, mother_dir = fetched_folder(father_model), fetched_folder(mother_model)
    pairing = with_vocabulary(pairing, father_dir, mother_dir, recipe.tokenizer_source)
    if pairing.vocabulary is not None and recipe.base != "father":
        raise DarwinError("A common ancestor as base is not supported yet for parents whose vocabularies differ; "
                          "use base: father.")
    father = TensorReader(father_dir)
    mother = TensorReader(mother_dir)
    base = TensorReader(local_folder(recipe.base, "base model")) if recipe.base != "father" else None
    try:
        missing = [name for name in father.names if pairing.names is None and name not in mother]
        if missing:
            raise DarwinError(
                f"The mother has no tensor {missing[0]} (and {len(missing) - 1} more missing); "
                "the parents do not have the same architecture."
            )
        config = _child_config_text(father_dir, mother_dir, recipe.dtype, pairing)
        layout = child_layout(recipe, father, pairing)
        with ShardedWriter(out_dir, max_shard_bytes=max_shard_bytes, overwrite=overwrite, layout=layout) as writer:
            _stream(recipe, father, mother, base, device, writer, pairing)
            if config is not None:
                writer.write_text("config.json", config)
            _write_side_files(writer, father_dir, pairing)
            writer.write_text(RECIPE_FILE, recipe.public().to_yaml())  # published with the child: no server path
    finally:
        for reader in (father, mother, base):
            if reader is not None:
                reader.close()
    return Path(out_dir)


