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


def pytest_terminal_summary(terminalreporter):
    """The fuzz test's reach: how many bad values and arguments it tried (tests/test_fuzz.py)."""
    import sys

    fuzz = sys.modules.get("test_fuzz")
    if fuzz is not None and fuzz.TRIED:
        failed = [r for r in terminalreporter.stats.get("failed", []) if "test_fuzz" in r.nodeid]
        mode = "full product" if fuzz.FULL else "seeded sample; GENZOO_FUZZ_FULL=1 for all"
        verdict = f"{len(failed)} fuzz test(s) FAILED" if failed else "none left a traceback or changed a checkpoint"
        terminalreporter.write_line(f"fuzz: {fuzz.TRIED.get('config', 0)} config values x (fresh run, resume, "
                                    f"sample) and {fuzz.TRIED.get('arguments', 0)} argument cases tried ({mode}); "
                                    f"{verdict}")
