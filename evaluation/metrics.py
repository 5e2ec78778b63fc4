"""Distances between sets of features, and scores from a classifier's class probabilities.

All functions take numpy feature arrays (N, D) and compute in float64.

    frechet_distance   FID / FD: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Heusel et al. 2017, eq. 6)
    kid                unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3, mean and std over subsets
                       (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 4 and App. D)
    precision_recall   k-NN manifold precision and recall (Kynkaanniemi et al. 2019, eq. 1-3), k = 3
    class_score        exp E_x[KL(p(y|x) || p(y))], the Inception Score formula on a domain classifier
    requested_class_accuracy   the share of samples a classifier reads as the class they were drawn for
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from scipy import linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), with `scipy.linalg.sqrtm`.

    As in the reference implementations (TTUR, pytorch-fid): if the product is singular, an eps
    offset is added to the diagonals; a small imaginary part from numerical error is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(a, b) = (a . b / d + 1)^3 for every pair of rows (len(a), len(b)); cubed by multiplying (np.power is
    several times slower)."""
    k = a @ b.T / a.shape[1] + 1
    return k * k * k


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 (cubic polynomial kernel), mean and std over subsets.

    Each subset draws m real and m generated rows without replacement. When m is all the generated rows, a
    subset of them is a permutation, which changes neither their own kernel term nor the mean of a real row's
    kernel with them: both are computed once, for every real row (the draws still run, so every real subset
    is the one the seed gives)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)

    def offdiag_mean(k: np.ndarray) -> float:
        return (k.sum() - np.trace(k)) / (m * (m - 1))

    all_fake = m == len(fake)
    if all_fake:
        yy = offdiag_mean(_cubic_kernel(fake, fake))
        xy_row = np.concatenate([_cubic_kernel(real[i:i + 2048], fake).mean(1)  # (len(real),): mean_j k(x_i, y_j)
                                 for i in range(0, len(real), 2048)])
    values = []
    for _ in range(subsets):
        ix, iy = rng.choice(len(real), m, replace=False), rng.choice(len(fake), m, replace=False)
        x = real[ix]
        if all_fake:
            values.append(offdiag_mean(_cubic_kernel(x, x)) + yy - 2 * xy_row[ix].mean())
        else:
            y = fake[iy]
            values.append(offdiag_mean(_cubic_kernel(x, x)) + offdiag_mean(_cubic_kernel(y, y))
                          - 2 * _cubic_kernel(x, y).mean())
    return float(np.mean(values)), float(np.std(values))


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (N,)."""
    radii = []
    for i in range(0, len(x), chunk):
        dist = torch.cdist(x[i:i + chunk], x)  # (c, N)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # k + 1: the point itself is at distance 0
    return torch.cat(radii)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each point, whether it lies in at least one ball (centre, radius) (N,) bool."""
    out = []
    for i in range(0, len(points), chunk):
        out.append((torch.cdist(points[i:i + chunk], centres) <= radii[None, :]).any(dim=1))
    return torch.cat(out)


_RADII: dict[tuple[str, int], torch.Tensor] = {}  # the last reference sets' radii, by content: see below


def _reference_radii(r: torch.Tensor, k: int) -> torch.Tensor:
    """_kth_nn_radius of a reference set, remembered by its content: the reference is the same for every
    evaluation of a comparison, and its N x N distances are most of precision/recall's cost."""
    key = (hashlib.sha256(r.numpy().tobytes()).hexdigest(), k)
    if key not in _RADII:
        if len(_RADII) >= 4:
            _RADII.pop(next(iter(_RADII)))
        _RADII[key] = _kth_nn_radius(r, k)
    return _RADII[key]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    r, f = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    precision = _inside(f, r, _reference_radii(r, k)).double().mean()
    recall = _inside(r, f, _kth_nn_radius(f, k)).double().mean()
    return float(precision), float(recall)


def class_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 for one class or uniform confusion, K for confident and balanced."""
    p = np.asarray(probs, np.float64)
    p_y = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(p_y + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def requested_class_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, list]:
    """The share of samples whose most probable class is the requested `labels` (N,), overall and per
    requested class ((K,) list; None for a class no sample requested)."""
    hit = np.asarray(probs).argmax(axis=1) == np.asarray(labels)  # (N,) bool
    labels = np.asarray(labels)
    per_class = [float(hit[labels == k].mean()) if (labels == k).any() else None for k in range(num_classes)]
    return float(hit.mean()), per_class
