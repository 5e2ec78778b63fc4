"""The shipped domain classifiers (FD-<extractor>): pinned weights, input protocol, accuracy on real data."""

import shutil

import numpy as np
import pytest
import torch

from conftest import require
from genzoo.datasets import importers, load
from genzoo.errors import GenzooError
from genzoo.evaluation import classifier
from genzoo.evaluation.classifier import EXTRACTORS, file_sha256, load_classifier


def _accuracy(extractor, data, n=None) -> float:
    images, labels = data.images[:n], data.labels[:n]
    return float((extractor.probs(images).argmax(1) == labels.numpy()).mean())


@pytest.mark.parametrize("dataset", sorted(EXTRACTORS))
def test_shipped_weights_match_pinned_sha256(dataset):
    info = EXTRACTORS[dataset]
    path = classifier.WEIGHTS_DIR / info.weights
    assert path.is_file(), path
    assert path.stat().st_size < 1_000_000
    assert file_sha256(path) == info.sha256
    ex = load_classifier(dataset)
    assert (ex.name, ex.sha256, ex.dim, ex.num_classes, ex.dataset) == (info.name, info.sha256, info.dim, 10, dataset)
    assert ex.resize.startswith("none")


def test_tampered_missing_or_unknown_weights_are_refused(tmp_path, monkeypatch):
    info = EXTRACTORS["digits"]
    shutil.copy(classifier.WEIGHTS_DIR / info.weights, tmp_path / info.weights)
    data = bytearray((tmp_path / info.weights).read_bytes())
    data[-1] ^= 1  # flip one bit of the last weight
    (tmp_path / info.weights).write_bytes(bytes(data))
    monkeypatch.setattr(classifier, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(GenzooError, match=f"sha256 .* expected {info.sha256}"):
        load_classifier("digits")
    with pytest.raises(GenzooError, match="not found"):
        load_classifier("mnist")
    with pytest.raises(GenzooError, match="no domain classifier for dataset 'cifar10'; available: mnist"):
        load_classifier("cifar10")


def test_wrong_input_shape_or_dtype_is_a_clear_error():
    ex = load_classifier("mnist")
    with pytest.raises(GenzooError, match=r"expects images of shape \(N, 1, 28, 28\).*got \(4, 1, 32, 32\)"):
        ex.features(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(GenzooError, match=r"got \(4, 3, 28, 28\)"):
        ex.probs(torch.zeros(4, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(GenzooError, match=r"got \(28, 28\)"):
        ex.features(torch.zeros(28, 28, dtype=torch.uint8))
    with pytest.raises(GenzooError, match="uint8"):
        ex.features(torch.zeros(4, 1, 28, 28))
    with pytest.raises(GenzooError, match=r"expects images of shape \(N, 1, 8, 8\).*got \(2, 1, 28, 28\)"):
        load_classifier("digits").features(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("dataset", sorted(EXTRACTORS))
def test_features_and_probs_shapes_dtype_determinism(dataset):
    ex = load_classifier(dataset)
    images = torch.randint(0, 256, (37, *EXTRACTORS[dataset].input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    f1, f2 = ex.features(images), ex.features(images, batch_size=10)
    assert f1.shape == (37, ex.dim) and f1.dtype == np.float64 and np.isfinite(f1).all()
    np.testing.assert_array_equal(f1, ex.features(images))
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)  # batching changes only float rounding
    np.testing.assert_array_equal(ex.features(images.numpy()), f1)  # numpy uint8 accepted too
    p = ex.probs(images)
    assert p.shape == (37, 10) and p.dtype == np.float64 and (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert ex.features(images[:0]).shape == (0, ex.dim)


def test_digits_test_accuracy():
    require(importers.digits_source(), importers.SKLEARN_INSTALL)
    ex = load_classifier("digits")
    data = load("digits", "test")
    assert len(data) == 297
    assert _accuracy(ex, data) >= 0.95
    features = ex.features(data.images)  # pre-ReLU: no dead units, so a full-rank covariance for FD
    assert np.linalg.matrix_rank(np.cov(features, rowvar=False)) == ex.dim


@pytest.mark.real_data
def test_mnist_accuracy_on_500_real_test_images():
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    assert _accuracy(load_classifier("mnist"), load("mnist", "test"), n=500) >= 0.985


@pytest.mark.real_data
def test_fashion_mnist_accuracy_on_500_real_test_images():
    require(importers.fashion_mnist_source(), importers.FASHION_MNIST_INSTALL)
    assert _accuracy(load_classifier("fashion-mnist"), load("fashion-mnist", "test"), n=500) >= 0.88
