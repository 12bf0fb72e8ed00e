"""Publishing drives the real huggingface_hub upload code against a local recording Hub."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from darwin_core.errors import DarwinError
from darwin_core.publishing.push import push_to_hub, save_locally, zip_child
from darwin_core.testing.fakehub import FakeHub

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_testTOKENshouldNeverBeWritten1234567890"


@pytest.fixture()
def child_folder(tmp_path: Path) -> Path:
    child = tmp_path / "run" / "child"
    child.mkdir(parents=True)
    (child / "config.json").write_text('{"model_type": "llama"}')
    (child / "README.md").write_text("# a child\n")
    save_file({"w": torch.arange(4096, dtype=torch.float32).reshape(64, 64)}, child / "model.safetensors")
    return child


def _push_with_cli(child: Path, hub: FakeHub, repo: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [sys.executable, "-m", "darwin_core", "push", str(child), "--repo", repo, *extra],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_push_creates_the_repo_and_uploads_every_file_with_its_size(child_folder: Path) -> None:
    with FakeHub() as hub:
        result = _push_with_cli(child_folder, hub, "tester/kid", "--private")
        assert result.returncode == 0, result.stderr
        request = hub.record.repos["tester/kid"]
        assert request.get("visibility") == "private" or request.get("private") is True
        uploaded = hub.record.files["tester/kid"]
        expected = {p.name: p.read_bytes() for p in child_folder.iterdir()}
        assert {name: len(data) for name, data in uploaded.items()} == {n: len(d) for n, d in expected.items()}
        assert uploaded == expected
        # the weights went through the LFS path, the text files inline
        assert any(r["path"].startswith("/lfs-upload/") for r in hub.record.requests)
        assert TOKEN.encode() not in hub.everything_seen()
    written = b"".join(p.read_bytes() for p in child_folder.parent.rglob("*") if p.is_file())
    assert TOKEN.encode() not in written
    assert TOKEN not in result.stdout + result.stderr


def test_push_without_a_token_asks_to_sign_in(child_folder: Path) -> None:
    with pytest.raises(DarwinError, match="Sign in"):
        push_to_hub(child_folder, "tester/kid", token=None)


def test_push_of_an_incomplete_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DarwinError, match="not a complete model folder"):
        push_to_hub(tmp_path, "tester/kid", token=TOKEN)


def test_zip_and_local_save_hold_every_file(child_folder: Path, tmp_path: Path) -> None:
    archive = zip_child(child_folder, tmp_path / "child.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(p.name for p in child_folder.iterdir())
    saved = save_locally(child_folder, tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in child_folder.iterdir())
    with pytest.raises(DarwinError, match="already exists"):
        save_locally(child_folder, tmp_path / "saved")
    assert not list(tmp_path.glob(".*partial*"))
