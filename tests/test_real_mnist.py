"""The real path end to end: offline MNIST -> trainer -> checkpoint -> samples (a few steps, not quality)."""

import numpy as np
import pytest

from conftest import require
from genzoo.cli import main
from genzoo.datasets import importers

pytestmark = pytest.mark.real_data


def test_prepare_train_and_sample_on_real_mnist(tmp_path, capsys):
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    root, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "prepare", "mnist", "--root", str(root)]) == 0
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert main(["train", "vae", "--dataset", "mnist", "--preset", "quick", "--steps", "15", "--root", str(root),
                 "--out", str(run), "--no-progress", "--set", "train.log_every=5", "train.warmup_steps=5"]) == 0
    assert main(["sample", str(run), "--n", "10", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        images = f["images"]
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.uint8 and images.std() > 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"event": "end"' in lines[-1]
