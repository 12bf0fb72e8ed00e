"""Getting a child out: push to the Hub, zip for download, or copy to a local folder.

The token is a parameter, never read from the environment here (the Space's own HF_TOKEN must not
act for a visitor) and never written anywhere: not into a run folder, a card, an exception message
or a log line. Callers pass `token=None` only to get the clear "sign in" sentence.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from darwin_core.errors import DarwinError
from darwin_core.io.atomic import atomic_file, partial_folder_for, replace_folder

REQUIRED_CHILD_FILES = ("config.json",)


def _check_child_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise DarwinError(f"There is no child model at {folder}.")
    missing = [name for name in REQUIRED_CHILD_FILES if not (folder / name).is_file()]
    has_weights = any(folder.glob("*.safetensors"))
    if missing or not has_weights:
        raise DarwinError(f"{folder} is not a complete model folder (config.json and safetensors weights are needed).")


def _http_error_sentence(error: HfHubHTTPError, repo_id: str) -> str:
    status = error.response.status_code if error.response is not None else None
    if status == 401:
        return "The Hub refused the token: sign in again (or set a valid HF_TOKEN)."
    if status == 403:
        return f"The token may not write to {repo_id}: it needs write access to that namespace."
    if status == 409:
        return f"{repo_id} already exists and cannot be written with this token."
    return f"The Hub answered HTTP {status} while publishing {repo_id}."


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None,
    private: bool = False,
    endpoint: str | None = None,
    commit_message: str = "Upload child bred with Darwin",
) -> str:
    """Create (or reuse) the model repo and upload every file of the child folder; returns the repo URL."""
    folder = Path(folder)
    _check_child_folder(folder)
    if not token:
        raise DarwinError("Sign in with Hugging Face (or set HF_TOKEN when running locally) to publish.")
    if repo_id.count("/") > 1 or not repo_id.strip() or " " in repo_id:
        raise DarwinError(f"{repo_id!r} is not a valid repository name (use 'name' or 'user/name').")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_url.repo_id,
            repo_type="model",
            commit_message=commit_message,
            token=token,
        )
    except HfHubHTTPError as error:
        raise DarwinError(_http_error_sentence(error, repo_id)) from None
    return str(repo_url)


def zip_child(folder: str | Path, zip_path: str | Path) -> Path:
    """One zip of the child folder, written beside its final name, fsynced and renamed, so no half zip looks done."""
    folder, zip_path = Path(folder), Path(zip_path)
    _check_child_folder(folder)
    with atomic_file(zip_path) as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, arcname=str(path.relative_to(folder)))
    return zip_path


def save_locally(folder: str | Path, destination: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the child to a local folder (local mode only: the caller checks), atomically.

    The copy is built in a hidden folder beside the destination and replaces it in one step; an existing
    destination is moved aside, not deleted, until the copy is in place, so a failure never loses it.
    """
    folder, destination = Path(folder), Path(destination)
    _check_child_folder(folder)
    if destination.exists() and not overwrite:
        raise DarwinError(f"{destination} already exists; choose another folder or allow overwriting.")
    partial = partial_folder_for(destination)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(folder, partial)
        replace_folder(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return destination
