"""Procedural, class-labelled shapes of any size and channel count, for tests and smoke runs.

Each image is one of ten shapes, drawn on a black background with a random centre and
scale and a random colour (one intensity per channel). Everything is vectorised over
images, and the result is a pure function of (n, image_size, channels, seed).
"""

import torch

SHAPES = (
    "square", "disc", "triangle", "horizontal bar", "vertical bar",
    "cross", "ring", "diagonal", "two dots", "checker",
)


def _masks(label: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean mask of shape `label` in shape-local coordinates u (right), v (down), unit half-size."""
    inside = (u.abs() <= 1) & (v.abs() <= 1)
    r2 = u**2 + v**2
    if label == 0:
        return inside
    if label == 1:
        return r2 <= 1
    if label == 2:  # apex at the top, base at the bottom
        return inside & (u.abs() <= (v + 1) / 2)
    if label == 3:
        return inside & (v.abs() <= 0.3)
    if label == 4:
        return inside & (u.abs() <= 0.3)
    if label == 5:
        return inside & ((u.abs() <= 0.3) | (v.abs() <= 0.3))
    if label == 6:
        return (r2 <= 1) & (r2 >= 0.55**2)
    if label == 7:
        return inside & ((u - v).abs() <= 0.4)
    if label == 8:
        return ((u - 0.55) ** 2 + v**2 <= 0.4**2) | ((u + 0.55) ** 2 + v**2 <= 0.4**2)
    if label == 9:  # 2 x 2 checkerboard
        return inside & ((u >= 0) == (v >= 0))
    raise ValueError(f"no shape {label}")


def make_synthetic(n: int, image_size: int = 28, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (n, channels, image_size, image_size) uint8 and balanced, shuffled labels (n,) int64."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(SHAPES))[torch.randperm(n, generator=g)]
    scale = 0.45 + 0.3 * torch.rand(n, 1, 1, generator=g)                # half-size, in [-1, 1] units
    cx, cy = (0.95 - scale) * (2 * torch.rand(2, n, 1, 1, generator=g) - 1)  # centre keeps the shape inside
    colour = 0.4 + 0.6 * torch.rand(n, channels, 1, 1, generator=g)      # per-channel intensity

    grid = (torch.arange(image_size) + 0.5) / image_size * 2 - 1         # pixel centres in [-1, 1]
    u = (grid.view(1, 1, -1) - cx) / scale                               # (n, 1, W)
    v = (grid.view(1, -1, 1) - cy) / scale                               # (n, H, 1)
    u, v = torch.broadcast_tensors(u, v)                                 # (n, H, W)

    mask = torch.zeros(n, image_size, image_size, dtype=torch.bool)
    for label in range(len(SHAPES)):
        idx = (labels == label).nonzero().squeeze(1)
        mask[idx] = _masks(label, u[idx], v[idx])
    images = (mask.unsqueeze(1) * colour * 255).round().to(torch.uint8)  # (n, C, H, W)
    return images, labels
