"""Attributes measured on the images themselves, for captions and for judging text-conditioned samples.

    from genzoo.datasets import attributes
    bins = attributes.measure("mnist", images)   # {"thickness": (N,) in 0..2, "slant": ..., "size": ...}
    attributes.NAMES["mnist"]["slant"]          # ("left", "upright", "right")

The captions of `genzoo.datasets.captions` are written from these bins, and the harness reads generated
images with the same functions, so "a thick, right-leaning seven" is checked by the definition that wrote it.
Every measure is a few vectorised tensor operations on the ink (pixels above half intensity), close to the
Morpho-MNIST measures (Castro et al. 2019) without their skeletonisation:

    thickness  = ink area / boundary pixels        a stroke of width w and length L has area w L and about
                                                   2 L boundary pixels: w / 2, whatever its length
    slant      = -cov(col, row) / var(row)         the shear of the ink's second moments (Morpho-MNIST's
                                                   slant): positive when the top leans right
    size       = height x width of the ink's bounding box, in pixels
    brightness = mean intensity of the ink         (clothing: a dark or a bright garment)

Each measure is cut into three bins at fixed thresholds, the terciles of the training split (`terciles`, measured by
python -c "from genzoo.datasets import attributes, load; print(attributes.terciles('mnist', load('mnist').images))"),
so each bin holds about a third of the real images;
tests/test_captions.py checks that no bin holds under 15% of real training or test images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INK = 0.5  # a pixel is ink above half intensity (images in [0, 1])

# per dataset: attribute -> (its three bin names, the two thresholds between them)
ATTRIBUTES: dict[str, dict[str, tuple[tuple[str, str, str], tuple[float, float]]]] = {
    "mnist": {
        "thickness": (("thin", "regular", "thick"), (1.28, 1.57)),
        "slant": (("left", "upright", "right"), (-0.01, 0.23)),
        "size": (("small", "medium", "large"), (260.0, 320.0)),
    },
    "fashion-mnist": {
        "brightness": (("dark", "medium", "bright"), (0.56, 0.72)),
        "size": (("small", "medium", "large"), (286.0, 425.0)),
    },
}
NAMES = {ds: {a: names for a, (names, _) in attrs.items()} for ds, attrs in ATTRIBUTES.items()}


def _unit(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) or (N, H, W), uint8 in 0..255 or float in [-1, 1] -> float (N, H, W) in [0, 1]."""
    x = images.float()
    if x.dim() == 4:
        x = x[:, 0]
    if images.dtype == torch.uint8:
        return x / 255.0
    return ((x + 1) / 2).clamp(0, 1)


def thickness(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean stroke half-width in pixels: ink area over the ink pixels with a non-ink 4-neighbour."""
    ink = _unit(images) > INK  # (N, H, W)
    p = F.pad(ink, (1, 1, 1, 1))  # (N, H + 2, W + 2), no ink outside the image
    inside = ink & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]  # ink with 4 ink neighbours
    boundary = (ink & ~inside).flatten(1).sum(1)  # (N,)
    return ink.flatten(1).sum(1).float() / boundary.clamp(min=1)


def _moments(images: torch.Tensor):
    """Intensity-weighted means and second moments of the ink's (row, col) coordinates: each (N,)."""
    x = _unit(images)
    w = x * (x > INK)  # (N, H, W)
    mass = w.flatten(1).sum(1).clamp(min=1e-6)
    rows = torch.arange(x.shape[1], dtype=torch.float32)[None, :, None]
    cols = torch.arange(x.shape[2], dtype=torch.float32)[None, None, :]
    r_mean = (w * rows).flatten(1).sum(1) / mass
    c_mean = (w * cols).flatten(1).sum(1) / mass
    dr, dc = rows - r_mean[:, None, None], cols - c_mean[:, None, None]
    var_r = (w * dr * dr).flatten(1).sum(1) / mass
    cov_rc = (w * dr * dc).flatten(1).sum(1) / mass
    return var_r, cov_rc


def slant(images: torch.Tensor) -> torch.Tensor:
    """(N,) horizontal shift of the ink per row upward: > 0 leans right (rows count downward)."""
    var_r, cov_rc = _moments(images)
    return -cov_rc / var_r.clamp(min=1e-6)


def size(images: torch.Tensor) -> torch.Tensor:
    """(N,) area of the ink's bounding box in pixels (0 for an image without ink)."""
    ink = _unit(images) > INK  # (N, H, W)
    rows, cols = ink.any(2), ink.any(1)  # (N, H), (N, W)

    def extent(mask: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(mask.shape[1])[None].expand_as(mask)
        first = torch.where(mask, idx, mask.shape[1]).min(1).values
        last = torch.where(mask, idx, -1).max(1).values
        return (last - first + 1).clamp(min=0)

    return (extent(rows) * extent(cols)).float()


def brightness(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean intensity of the garment (pixels above 0.1), in [0, 1]."""
    x = _unit(images)
    cloth = (x > 0.1).float()
    return (x * cloth).flatten(1).sum(1) / cloth.flatten(1).sum(1).clamp(min=1)


def _size_fashion(images: torch.Tensor) -> torch.Tensor:
    """(N,) garment area: pixels above 0.1 (a bounding box is nearly the whole image for most garments)."""
    return (_unit(images) > 0.1).flatten(1).sum(1).float()


MEASURES = {
    "mnist": {"thickness": thickness, "slant": slant, "size": size},
    "fashion-mnist": {"brightness": brightness, "size": _size_fashion},
}


def values(dataset: str, images: torch.Tensor, only: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Each attribute's raw measure of `images` (or of those named in `only`): {name: (N,) float}."""
    if dataset not in MEASURES:
        raise ValueError(f"no attributes for {dataset!r}; they exist for {', '.join(MEASURES)}")
    return {name: fn(images) for name, fn in MEASURES[dataset].items() if not only or name in only}


def measure(dataset: str, images: torch.Tensor, only: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Each attribute's bin of `images` (or of those named in `only`): {name: (N,) int64 in 0..2}, see NAMES for
    the bins' words."""
    out = {}
    for name, v in values(dataset, images, only).items():
        lo, hi = ATTRIBUTES[dataset][name][1]
        out[name] = (v > lo).long() + (v > hi).long()
    return out


def terciles(dataset: str, images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """The two thresholds that cut each measure of `images` into thirds (how ATTRIBUTES was set)."""
    return {name: tuple(round(float(q), 2) for q in torch.quantile(v.double(), torch.tensor([1 / 3, 2 / 3],
                                                                                           dtype=torch.float64)))
            for name, v in values(dataset, images).items()}

