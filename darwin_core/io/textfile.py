"""Reading a text file a user names (a breed.yaml, a recipe): one sentence for each way it can be wrong."""

from __future__ import annotations

from pathlib import Path

from darwin_core.errors import DarwinError


def read_user_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file at `path`; `what` names it in the sentence ("config file", "recipe file")."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DarwinError(f"The {what} {path} does not exist.") from None
    except IsADirectoryError:
        raise DarwinError(f"{path} is a folder, not a {what}.") from None
    except OSError as error:
        raise DarwinError(f"The {what} {path} cannot be read ({error.strerror or type(error).__name__}).") from None
    if b"\0" in raw:
        raise DarwinError(f"The {what} {path} is a binary file, not YAML text.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DarwinError(f"The {what} {path} is not UTF-8 text.") from None
