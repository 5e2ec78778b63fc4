"""Shared fixtures: every test gets its own data root and no download permission."""

from __future__ import annotations

import pytest

from genzoo.registry import resolve_config


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.delenv("GENZOO_DOWNLOAD", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def tiny_config(family: str = "vae", *overrides: str, dataset: str = "synthetic"):
    """The family's `tiny` preset on synthetic data, with extra `--set` overrides."""
    return resolve_config(family, dataset=dataset, preset="tiny", overrides=list(overrides))
