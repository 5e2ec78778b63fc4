"""Shared fixtures: every test gets its own data root and no download permission."""

from __future__ import annotations

import os

import pytest

from genzoo.registry import resolve_config


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.delenv("GENZOO_DOWNLOAD", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def tiny_config(family: str = "vae", *overrides: str, dataset: str = "synthetic"):
    """The family's `tiny` preset on synthetic data, one thread, with extra `--set` overrides."""
    return resolve_config(family, dataset=dataset, preset="tiny", overrides=["train.threads=1", *overrides])


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors: a second thread buys nothing, and oversubscribed cores make OpenMP barriers crawl."""
    import torch
    torch.set_num_threads(1)


def require(source, install: str):
    """Skip a real-data test when its offline source is missing, or fail under GENZOO_REQUIRE_REAL_DATA=1 (CI)."""
    if source is None:
        message = f"offline source not installed; run `{install}`"
        if os.environ.get("GENZOO_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
