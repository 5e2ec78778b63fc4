"""Domain classifiers: the feature extractors behind FD-<extractor> on MNIST-family data.

FID's Inception network knows nothing about 28x28 digits, so on MNIST, Fashion-MNIST and
scikit-learn's 8x8 digits genzoo scores samples in the feature space of a small CNN
trained by the project itself (`python -m genzoo.evaluation.train_classifier`). Its
weights ship with the package and are pinned by sha256, so everyone's FD-<name> numbers
are computed with the same network:

    ex = load_classifier("mnist")      # verifies the weights' sha256
    f = ex.features(images_uint8)      # (N, 128) float64, the penultimate layer (pre-ReLU)
    p = ex.probs(images_uint8)         # (N, 10) float64, softmax class probabilities

Input protocol: uint8 images at the dataset's native shape (1x28x28, or 1x8x8 for
digits), mapped to float by x / 127.5 - 1 (the [-1, 1] range the models use); no resize.
Name metrics computed with these features `FD-<name>` (e.g. FD-lenet-mnist-v1), never FID.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import CheckpointError, ConfigError, DataError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAIN_COMMAND = "python -m genzoo.evaluation.train_classifier --dataset {dataset}"


@dataclass(frozen=True)
class ExtractorInfo:
    """One shipped classifier: its architecture, weights file and measured accuracy."""
    name: str                          # extractor name, used in metric names: FD-<name>
    dataset: str
    weights: str                       # file name inside WEIGHTS_DIR
    sha256: str                        # of the weights file
    test_accuracy: float               # on the dataset's full test split, measured by the training script
    input_shape: tuple[int, int, int]  # (C, H, W) the classifier accepts
    channels: tuple[int, ...]          # conv widths; each conv is 3x3 + ReLU + 2x2 max-pool
    dim: int                           # width of the penultimate (feature) layer
    num_classes: int = 10


EXTRACTORS: dict[str, ExtractorInfo] = {
    "mnist": ExtractorInfo(
        name="lenet-mnist-v1", dataset="mnist", weights="lenet-mnist-v1.safetensors",
        sha256="8f21be179f0463b322b0b40d5313d4d9441d3b4dbf2152ad423fd78d7b7118e5",
        test_accuracy=0.9927,
        input_shape=(1, 28, 28), channels=(16, 32, 64), dim=128),
    "fashion-mnist": ExtractorInfo(
        name="lenet-fashion-mnist-v1", dataset="fashion-mnist", weights="lenet-fashion-mnist-v1.safetensors",
        sha256="fb47793d85e3738aea5b400668f7b984085e6ee1e9ba97c3617f9dc5a9797bef",
        test_accuracy=0.9085,
        input_shape=(1, 28, 28), channels=(16, 32, 64), dim=128),
    "digits": ExtractorInfo(
        name="lenet-digits-v1", dataset="digits", weights="lenet-digits-v1.safetensors",
        sha256="2b44bdd3efc5a8bc4231f267c7d5392487db6f87654bdefb4d4bb4a06fb8713e",
        test_accuracy=0.9966,
        input_shape=(1, 8, 8), channels=(32, 64), dim=128),
}


class SmallCNN(nn.Module):
    """conv3x3-ReLU-maxpool blocks, then fc `dim` (the features) + ReLU, dropout, fc `num_classes`.

    For 28x28 inputs with channels (16, 32, 64): 28 -> 14 -> 7 -> 3, so the first fc sees
    64 * 3 * 3 = 576 values. For 8x8 digits with (32, 64): 8 -> 4 -> 2, 256 values.
    """

    def __init__(self, input_shape: tuple[int, int, int], channels: tuple[int, ...], dim: int,
                 num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        c, size, _ = input_shape
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, size = width, size // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(c * size * size, dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate layer `fc`'s output before its ReLU, (N, dim).

        Pre-activation on purpose: after the ReLU about 40 of the 128 units are zero on
        every real test image, which makes feature covariances singular; before it they
        are full rank, so Frechet distances need no regularisation.
        """
        return self.fc(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (N, num_classes)."""
        return self.head(self.dropout(F.relu(self.features(x))))


def build_network(info: ExtractorInfo) -> SmallCNN:
    """An untrained network with `info`'s architecture."""
    return SmallCNN(info.input_shape, info.channels, info.dim, info.num_classes)


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """The input protocol: uint8 in [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return images_uint8.float() / 127.5 - 1


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ClassifierExtractor:
    """A trained SmallCNN in eval mode, exposing its features and class probabilities."""

    resize = "none (native resolution)"

    def __init__(self, network: SmallCNN, info: ExtractorInfo, sha256: str, device="cpu"):
        self.network = network.to(device).eval()
        self.info = info
        self.name = info.name
        self.dataset = info.dataset
        self.sha256 = sha256
        self.dim = info.dim
        self.num_classes = info.num_classes
        self.input_shape = tuple(info.input_shape)
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"ClassifierExtractor({self.name!r}, dataset={self.dataset!r}, sha256={self.sha256[:12]}...)"

    def _check(self, images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"{self.name} takes uint8 images in [0, 255], got {got}; "
                            f"convert samples in [-1, 1] with genzoo.evaluation.grid.to_uint8")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise DataError(f"{self.name} expects images of shape (N, {', '.join(map(str, self.input_shape))}) "
                            f"({self.dataset} at native resolution), got {tuple(images.shape)}")
        return images

    @torch.no_grad()
    def _run(self, images, batch_size: int, progress: bool, what: str) -> np.ndarray:
        images = self._check(images)
        width = self.dim if what == "features" else self.num_classes
        out = np.empty((len(images), width), dtype=np.float64)
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm import tqdm
            starts = tqdm(starts, desc=f"{self.name} {what}", unit="batch")
        for i in starts:
            x = to_float(images[i:i + batch_size].to(self.device))
            if what == "features":
                y = self.network.features(x)
            else:
                y = torch.softmax(self.network(x).double(), dim=1)
            out[i:i + batch_size] = y.double().cpu().numpy()
        return out

    def features(self, images_uint8, batch_size: int = 500, progress: bool = False) -> np.ndarray:
        """Penultimate-layer features (pre-ReLU) of uint8 (N, C, H, W) images: (N, dim) float64."""
        return self._run(images_uint8, batch_size, progress, "features")

    def probs(self, images_uint8, batch_size: int = 500, progress: bool = False) -> np.ndarray:
        """Softmax class probabilities of uint8 (N, C, H, W) images: (N, num_classes) float64."""
        return self._run(images_uint8, batch_size, progress, "probs")


def load_classifier(dataset: str, device="cpu") -> ClassifierExtractor:
    """The shipped classifier for `dataset`, after checking its weights file against the pinned sha256."""
    if dataset not in EXTRACTORS:
        raise ConfigError(f"no domain classifier for dataset {dataset!r}; available: {', '.join(EXTRACTORS)}")
    info = EXTRACTORS[dataset]
    path = Path(WEIGHTS_DIR) / info.weights
    retrain = TRAIN_COMMAND.format(dataset=dataset)
    if not path.is_file():
        raise CheckpointError(f"weights of {info.name} not found at {path}; reinstall genzoo "
                              f"(or retrain with `{retrain}` and update EXTRACTORS)")
    digest = file_sha256(path)
    if digest != info.sha256:
        raise CheckpointError(f"weights of {info.name} at {path} have sha256 {digest}, expected {info.sha256}: "
                              f"the file is corrupt or was changed; restore the shipped file")
    from safetensors.torch import load_file

    network = build_network(info)
    try:
        network.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as e:  # only reachable if EXTRACTORS pins a file of another architecture
        raise CheckpointError(f"weights at {path} do not fit {info.name}'s architecture: {e}") from e
    return ClassifierExtractor(network, info, digest, device)
