"""ModelRef: a parent model, known (config, tensor shapes, size, license) before any weight is downloaded.

A breeding run must know up front whether two parents can be bred and how much memory and disk they need,
without pulling 2 × 60 GB. `resolve_model` reads ``config.json`` and the safetensors headers only (online via
``get_safetensors_metadata``, which reads each shard's header with a range request; offline from the local Hub
cache); `download` fetches exactly the files breeding needs. Every failure a user can cause (not found, gated,
private without a token, bad revision, pickle-only weights, offline and not cached, a local path on a public
Space) becomes one `DarwinError` sentence.

Whether two resolved parents can be bred is `darwin_core.parents.compatibility` (re-exported here).

Safety rules kept here: the token is always passed explicitly (``token=None`` means anonymous, never "whatever
HF_TOKEN the server has": on a Space that would run a visitor's request as the Space owner); the token is never
stored on a ModelRef, logged, or put in a message; ``trust_remote_code`` is never set; pickle weights are refused
unless the caller opts in, and even then only loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from darwin_core.parents import anatomy
from darwin_core.errors import DarwinError
from darwin_core.parents.compatibility import FFN_ROLES, Compatibility, Verdict, check_breedable, compatibility
from darwin_core.io.tensors import (
    DTYPE_BYTES,
    PICKLE_INDEX,
    PICKLE_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    TensorReader,
    is_partial_folder,
    weight_format,
)

# What breeding needs from a repo besides the weight files: config, generation config, tokenizer, chat template.
SIDE_FILE_PATTERNS = ["*.json", "tokenizer*", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
SEARCH_TIMEOUT_S = 5.0
LOCAL_REFUSED = "Local paths are only accepted when Darwin runs locally."

__all__ = [  # compatibility moved to darwin_core.parents.compatibility; its names stay importable from here
    "AMBIENT_TOKEN_VARS", "FFN_ROLES", "LOCAL_REFUSED", "SEARCH_TIMEOUT_S", "SIDE_FILE_PATTERNS", "Compatibility",
    "ModelRef", "Verdict", "check_breedable", "compatibility", "download", "download_patterns", "hub_errors",
    "parse_ref", "resolve_model", "search_models", "seal_ambient_token", "verify_access",
]


@dataclass
class ModelRef:
    """A resolved parent: where it is, what it is, how big it is. Never holds a token.

    ``tensors`` maps every tensor name to (shape, safetensors dtype string) from the headers; it is empty only
    for a Hub repo with pickle weights that were allowed but not downloaded yet (their shapes are unknown
    until then). ``folder`` is set for local models, for Hub models resolved from the local cache (offline,
    all weight files present), and once `download` has run; it is None for a Hub model resolved online.
    """

    id: str
    revision: str | None = None
    commit: str | None = None
    local: bool = False
    folder: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    weight_files: list[str] = field(default_factory=list)
    weights_format: str = "safetensors"
    parameters: int = 0
    bytes: int = 0
    license: str | None = None
    gated: bool | str | None = None
    private: bool | None = None

    @property
    def label(self) -> str:
        """How to show the model: ``org/name`` or ``org/name@rev`` (the local path for local models)."""
        return f"{self.id}@{self.revision}" if self.revision and not self.local else self.id

    @property
    def text_config(self) -> dict[str, Any]:
        return anatomy.text_config(self.config)

    @property
    def architecture(self) -> str:
        """The checkpoint's class name (``Qwen3ForCausalLM``), or its model_type when the config has none."""
        archs = self.config.get("architectures") or []
        return str(archs[0]) if archs else str(self.config.get("model_type", "unknown"))

    @property
    def text_model_type(self) -> str:
        """The language model's family (``qwen3_5_text`` for both the multimodal and the text-only checkpoint)."""
        return str(self.text_config.get("model_type") or self.config.get("model_type") or self.architecture)

    @property
    def hidden_size(self) -> int | None:
        value = self.text_config.get("hidden_size", self.text_config.get("d_model", self.text_config.get("n_embd")))
        return int(value) if isinstance(value, int) else None

    @property
    def vocab_size(self) -> int | None:
        value = self.text_config.get("vocab_size", self.config.get("vocab_size"))
        return int(value) if isinstance(value, int) else None

    @property
    def num_layers(self) -> int | None:
        try:
            return anatomy.layer_count(self.config)
        except DarwinError:
            return None


# ------------------------------------------------------------------------------------------------------------
# Resolving
# ------------------------------------------------------------------------------------------------------------
def parse_ref(ref: str, *, local_mode: bool) -> tuple[str, str, str | None]:
    """("local", path, None) or ("hub", repo_id, revision) for what a user typed; refuses what is neither.

    On a public Space (``local_mode=False``) the filesystem is never consulted: anything path-like is refused.
    """
    text = (ref or "").strip()
    if not text:
        raise DarwinError("Give a model: a Hub id like org/name (optionally @revision) or a local folder.")
    path_like = (
        text.startswith(("/", "./", "../", "~", "\\")) or text in (".", "..") or "\\" in text
        or text.partition("@")[0].count("/") >= 2 or re.match(r"^[A-Za-z]:", text) is not None
    )
    if not path_like and local_mode:
        path_like = Path(text).expanduser().is_dir()
    if path_like:
        if not local_mode:
            raise DarwinError(LOCAL_REFUSED)
        return "local", text, None
    repo_id, at, revision = text.partition("@")
    if not _HUB_ID.match(repo_id) or ".." in repo_id or (at and not _REVISION.match(revision)):
        raise DarwinError(f"{text} is not a Hub model id (expected org/name or org/name@revision).")
    return "hub", repo_id, revision or None


def resolve_model(ref: str, *, local_mode: bool, token: str | None = None, allow_pickle: bool = False,
                  cache_dir: str | Path | None = None, check_access: bool = True) -> ModelRef:
    """Resolve "org/name", "org/name@rev" or (local mode only) a folder into a ModelRef, without downloading weights.

    A cached snapshot is shared by every visitor of a Space, so before one is used the Hub is asked whether
    *this* caller's token (or none) may read the repo: a gated model left in the cache by a signed-in visitor is
    not handed to anyone else. Only the worker, reading a commit the page already fetched and checked with the
    visitor's token, passes check_access=False; offline (a local install) there is nobody to ask.
    """
    kind, target, revision = parse_ref(ref, local_mode=local_mode)
    if kind == "local":
        return _resolve_local(Path(target).expanduser(), allow_pickle=allow_pickle)
    from huggingface_hub import constants

    if constants.is_offline_mode() or _pinned_and_cached(target, revision, cache_dir):
        if check_access and not constants.is_offline_mode():
            verify_access(target, token)
        return _resolve_cached(target, revision, token=token, allow_pickle=allow_pickle, cache_dir=cache_dir)
    return _resolve_online(target, revision, token=token, allow_pickle=allow_pickle, cache_dir=cache_dir)


def verify_access(repo_id: str, token: str | None, *, repo_type: str = "model") -> None:
    """Ask the Hub whether this token (None: anonymous) may read the repo; the gated / not-found sentence if not."""
    from huggingface_hub import HfApi

    with hub_errors(repo_id, None, token):
        HfApi().auth_check(repo_id, repo_type=repo_type, token=token or False)


def _pinned_and_cached(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> bool:
    """A commit's files never change, so a snapshot already cached with its weights needs no Hub call — and no
    token: this is how a run's worker reads a gated parent that the page downloaded with the visitor's token."""
    from huggingface_hub import try_to_load_from_cache

    if not revision or not _COMMIT.match(revision):
        return False
    config = try_to_load_from_cache(repo_id, "config.json", revision=revision, cache_dir=cache_dir)
    return isinstance(config, str) and weight_format(Path(config).parent) is not None


def _read_config(folder: Path, label: str) -> dict[str, Any]:
    """The parsed config.json of a model folder; one that is missing, oversized or not a JSON object is refused.

    The file is the model's own claim and may come from anyone: its size is checked before it is read (a real
    config is kilobytes; a gigabyte one would be read into memory whole), and deep nesting is not a crash.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise DarwinError(f"{label} has no config.json, so it is not a transformers model.")
    limit = 16 * 2**20  # the largest real configs (long id2label tables) are well under a megabyte
    if path.stat().st_size > limit:
        raise DarwinError(f"The config.json of {label} is too large to be a model config (over {limit // 2**20} MiB).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DarwinError(f"The config.json of {label} is not valid JSON.") from None
    if not isinstance(config, dict):
        raise DarwinError(f"The config.json of {label} is not a JSON object.")
    return config


def _card_license(folder: Path) -> str | None:
    """The ``license`` of a model card's YAML front matter (README.md), if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", text, flags=re.DOTALL)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value) if value else None


def _from_reader(reader: TensorReader, config: dict[str, Any] | None = None, label: str = "") -> dict[str, Any]:
    """The ModelRef fields that come from the weight headers (names, shapes, files, sizes).

    Given the model's config, it is first held against those headers (`anatomy.check_config_against_weights`,
    `tensors.check_transformers_weights`): every resolve path goes through here, so a config whose sizes the
    weights do not hold, or that points transformers at other weights, is refused before anything is loaded.
    """
    from darwin_core.io.tensors import check_transformers_weights

    tensors = {name: (info.shape, info.dtype) for name, info in reader.infos().items()}
    if config is not None:
        check_transformers_weights(config, reader.folder, label)
        anatomy.check_config_against_weights(config, {name: shape for name, (shape, _) in tensors.items()}, label)
    return {
        "tensors": tensors,
        "weight_files": reader.files,
        "weights_format": reader.format,
        "parameters": reader.parameter_count,
        "bytes": reader.total_bytes,
    }


def _resolve_local(folder: Path, *, allow_pickle: bool) -> ModelRef:
    if is_partial_folder(folder):
        raise DarwinError(f"{folder} is an unfinished write (a .partial folder), not a model.")
    if not folder.is_dir():
        raise DarwinError(f"The folder {folder} does not exist.")
    folder = folder.resolve()
    config = _read_config(folder, str(folder))
    reader = TensorReader(folder, allow_pickle=allow_pickle)
    return ModelRef(id=str(folder), local=True, folder=folder, config=config, license=_card_license(folder),
                    **_from_reader(reader, config, str(folder)))


def _resolve_cached(repo_id: str, revision: str | None, *, token: str | None, allow_pickle: bool,
                    cache_dir: str | Path | None) -> ModelRef:
    """Offline: everything comes from the local Hub cache (config + the cached shards' headers)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo_id, revision, token):
        config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache_dir,
                                           token=token or False))
    snapshot = config_path.parent
    config = _read_config(snapshot, repo_id)
    if weight_format(snapshot) is None:
        raise DarwinError(f"{repo_id} has no weights in the local cache and the Hub cannot be reached (offline).")
    if weight_format(snapshot) == "pickle" and not allow_pickle:
        raise DarwinError(_pickle_sentence(repo_id))
    reader = TensorReader(snapshot, allow_pickle=allow_pickle)  # every weight file is there, or it says which not
    return ModelRef(id=repo_id, revision=revision, commit=snapshot.name, folder=snapshot, config=config,
                    license=_card_license(snapshot), **_from_reader(reader, config, repo_id))


def _resolve_online(repo_id: str, revision: str | None, *, token: str | None, allow_pickle: bool,
                    cache_dir: str | Path | None) -> ModelRef:
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    with hub_errors(repo_id, revision, token):
        info = api.model_info(repo_id, revision=revision, token=token or False)
        commit = info.sha or revision
        files = {sibling.rfilename for sibling in (info.siblings or [])}
        config_path = Path(hf_hub_download(repo_id, "config.json", revision=commit, cache_dir=cache_dir,
                                           token=token or False))
        config = _read_config(config_path.parent, repo_id)
        license_ = _info_license(info)
        base = dict(id=repo_id, revision=revision, commit=commit, config=config, license=license_,
                    gated=info.gated, private=info.private)
        if SAFETENSORS_INDEX in files or SAFETENSORS_SINGLE in files:
            meta = api.get_safetensors_metadata(repo_id, revision=commit, token=token or False)
            tensors: dict[str, tuple[tuple[int, ...], str]] = {}
            for file_meta in meta.files_metadata.values():
                for name, tensor in file_meta.tensors.items():
                    tensors[name] = (tuple(int(d) for d in tensor.shape), str(tensor.dtype))
            weight_files = list(dict.fromkeys(meta.weight_map.values())) if meta.weight_map else [SAFETENSORS_SINGLE]
            anatomy.check_config_against_weights(config, {n: s for n, (s, _) in tensors.items()}, repo_id)
            return ModelRef(**base, tensors=tensors, weight_files=weight_files, **_sizes(tensors))
        pickle_files = sorted(f for f in files if f.endswith(".bin") and "/" not in f
                              and f.startswith(("pytorch_model", "model")))
        if pickle_files or PICKLE_INDEX in files:
            if not allow_pickle:
                raise DarwinError(_pickle_sentence(repo_id))
            return ModelRef(**base, weights_format="pickle",
                            weight_files=pickle_files + ([PICKLE_INDEX] if PICKLE_INDEX in files else []))
    raise DarwinError(f"{repo_id} has no safetensors weights (model.safetensors or an index) at its root.")


def _sizes(tensors: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, int]:
    parameters = 0
    nbytes = 0
    for shape, dtype in tensors.values():
        count = 1
        for dim in shape:
            count *= dim
        parameters += count
        nbytes += count * DTYPE_BYTES.get(dtype, 0)
    return {"parameters": parameters, "bytes": nbytes}


def _info_license(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    value = card.get("license") if card is not None and hasattr(card, "get") else None
    if value:
        return str(value)
    for tag in getattr(info, "tags", None) or []:
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def _pickle_sentence(label: str) -> str:
    return (f"{label} has only pickle weights (.bin), which can run code when loaded; "
            "use a safetensors version or explicitly allow pickle weights.")


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None, token: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one sentence each (never containing the token)."""
    from huggingface_hub import errors

    try:
        yield
    except DarwinError:
        raise
    except errors.GatedRepoError:  # subclass of RepositoryNotFoundError: must come first
        raise DarwinError(f"{repo_id} is gated: accept its conditions on huggingface.co/{repo_id} and sign in "
                          "with an account that has access.") from None
    except errors.RepositoryNotFoundError:
        if token:
            raise DarwinError(f"{repo_id} was not found on the Hub, or your token has no access to it.") from None
        raise DarwinError(f"{repo_id} was not found on the Hub (if it is private, sign in or set HF_TOKEN).") from None
    except errors.RevisionNotFoundError:
        raise DarwinError(f"Revision {revision} does not exist in {repo_id}.") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        where = f"{repo_id}@{revision}" if revision else repo_id
        raise DarwinError(f"{where} is not in the local cache and the Hub cannot be reached (offline).") from None
    except errors.EntryNotFoundError:
        raise DarwinError(f"{repo_id} has no config.json, so it is not a transformers model.") from None
    except errors.NotASafetensorsRepoError:
        raise DarwinError(f"{repo_id} has no safetensors weights (model.safetensors or an index) at its root.") from None
    except errors.SafetensorsParsingError:
        raise DarwinError(f"The safetensors headers of {repo_id} could not be read.") from None
    except errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise DarwinError(f"The Hub refused the token for {repo_id}; sign in again or check HF_TOKEN.") from None
        if status == 403:
            raise DarwinError(f"Your token has no read access to {repo_id}.") from None
        raise DarwinError(f"The Hub answered with an error ({status}) for {repo_id}; try again later.") from None
    except (ConnectionError, TimeoutError) as error:
        raise DarwinError(f"The Hub could not be reached for {repo_id} ({type(error).__name__}).") from None
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DarwinError(f"The disk is full while downloading {repo_id}.") from None
        raise
    except Exception as error:
        if is_transport_error(error):
            raise DarwinError(f"The Hub could not be reached for {repo_id} ({type(error).__name__}).") from None
        raise


def is_transport_error(error: BaseException) -> bool:
    """Whether `error` says the Hub could not be reached (refused, reset, timed out): huggingface_hub 2's
    transport, httpx2, raises its own errors, which subclass neither ConnectionError nor OSError."""
    return isinstance(error, (ConnectionError, TimeoutError)) or type(error).__module__.split(".")[0] in (
        "httpx", "httpx2", "httpcore", "httpcore2")


# ------------------------------------------------------------------------------------------------------------
# Downloading
# ------------------------------------------------------------------------------------------------------------
def search_models(query: str, *, token: str | None = None, limit: int = 10) -> list[str]:
    """Hub repo ids matching what the user is typing (the picker's suggestions); [] offline, for short or
    path-like input, and when the Hub cannot answer: a suggestion list never turns into an error."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    query = query.strip()
    if constants.is_offline_mode() or len(query) < 2 or query.startswith((".", "/", "~")):
        return []
    try:
        with hub_errors(query, None, token):
            # One request with a short timeout (HfApi.list_models retries for half a minute when the Hub is
            # unreachable, far too long for suggestions under a text field).
            response = get_session().get(f"{constants.ENDPOINT}/api/models", params={"search": query, "limit": limit},
                                         headers=build_hf_headers(token=token or False), timeout=SEARCH_TIMEOUT_S)
            hf_raise_for_status(response)
            return [str(item["id"]) for item in response.json()][:limit]
    except (DarwinError, ValueError, KeyError, TypeError):
        return []


def download_patterns(ref: ModelRef, *, allow_pickle: bool = False) -> list[str]:
    """The ``allow_patterns`` for a parent: its weight files by name (or *.safetensors) + config/tokenizer files."""
    if ref.weight_files:
        weights = list(ref.weight_files)
    else:
        weights = ["*.safetensors"]
    if ref.weights_format == "safetensors" and SAFETENSORS_INDEX not in weights and len(weights) > 1:
        weights.append(SAFETENSORS_INDEX)
    if ref.weights_format == "pickle":
        if not allow_pickle:
            raise DarwinError(_pickle_sentence(ref.label))
        weights = weights or [PICKLE_SINGLE]
    return weights + SIDE_FILE_PATTERNS


def download(ref: ModelRef, token: str | None = None, *, allow_pickle: bool = False,
             cache_dir: str | Path | None = None) -> ModelRef:
    """Fetch what breeding needs (weights, config, tokenizer, generation config) and return the ref with ``folder``.

    Only the weight files the ref names are fetched (a repo carrying both ``consolidated.safetensors`` and HF
    shards is not downloaded twice). Headers are re-read from disk, so the returned ref describes the files
    actually present.
    """
    if ref.local:
        return ref
    from huggingface_hub import snapshot_download

    patterns = download_patterns(ref, allow_pickle=allow_pickle)
    with hub_errors(ref.id, ref.revision, token):
        folder = Path(snapshot_download(ref.id, revision=ref.commit or ref.revision, allow_patterns=patterns,
                                        cache_dir=cache_dir, token=token or False))
    reader = TensorReader(folder, allow_pickle=allow_pickle)
    return replace(ref, folder=folder, **_from_reader(reader, ref.config or None, ref.label))


# ------------------------------------------------------------------------------------------------------------
# The server's own credentials
# ------------------------------------------------------------------------------------------------------------
AMBIENT_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")


def seal_ambient_token() -> bool:
    """Take the server's own Hub token out of this process (and of the workers it starts), for good.

    On a public server every Hub call is made for a visitor, with the visitor's token or none. Darwin's own
    calls pass `token or False` explicitly, but lm-eval and `datasets` fall back to HF_TOKEN / the token file
    by themselves: removing them (and telling huggingface_hub never to use an implicit token) is the only
    guarantee that no library acts for a visitor with the Space owner's rights. True when a token was removed.
    """
    import os

    from huggingface_hub import constants

    found = any(os.environ.pop(name, None) for name in AMBIENT_TOKEN_VARS)
    os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    os.environ["HF_TOKEN_PATH"] = os.path.join(os.path.dirname(constants.HF_TOKEN_PATH), "darwin-no-token", "token")
    constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = True
    constants.HF_TOKEN_PATH = os.environ["HF_TOKEN_PATH"]
    return found
