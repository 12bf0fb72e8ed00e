"""Shared pytest fixtures: tiny parent models written once per session, and an offline hub.

The fixture folders are shared by every test of the session: treat them as read-only (copy before changing).
"""

from __future__ import annotations

import os

# No test may reach the network; huggingface_hub reads this at import time, so set it before anything imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fixture_pair(tmp_path_factory):
    """Factory `fixture_pair(arch, *, related=False, shards=1) -> (father, mother)`, cached for the session."""
    from darwin_core.testing.fixtures import write_pair

    cache: dict[tuple, tuple] = {}

    def make(arch: str, *, related: bool = False, shards: int = 1):
        key = (arch, related, shards)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"pair-{arch}-{'related' if related else 'independent'}-{shards}")
            cache[key] = write_pair(arch, root, related=related, shards=shards)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def fixture_model(tmp_path_factory):
    """Factory `fixture_model(arch, *, seed=0, shards=1, dtype=torch.float32) -> folder`, cached for the session."""
    import torch

    from darwin_core.testing.fixtures import write_tiny_model

    cache: dict[tuple, object] = {}

    def make(arch: str, *, seed: int = 0, shards: int = 1, dtype: torch.dtype = torch.float32):
        key = (arch, seed, shards, dtype)
        if key not in cache:
            name = f"model-{arch}-s{seed}-{shards}-{str(dtype).removeprefix('torch.')}"
            cache[key] = write_tiny_model(arch, tmp_path_factory.mktemp(name) / "model", seed=seed, shards=shards,
                                          dtype=dtype)
        return cache[key]

    return make


@pytest.fixture()
def read_hub(monkeypatch, tmp_path):
    """Point huggingface_hub at a local read-only Hub, online, with a server-side HF_TOKEN that must not leak."""
    from huggingface_hub import constants

    from tests.readhub import ReadHub

    hub = ReadHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_space_owner_secret")
    yield hub
    hub.server.shutdown()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run ~10× faster on one thread (no OpenMP contention)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
