"""Images in [-1, 1] -> uint8 arrays and PNG grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [-1, 1] -> uint8 in [0, 255], rounded (the FID protocol's input)."""
    return torch.round((images.detach().float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid, written atomically. `scale` enlarges small images."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = to_uint8(images)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(x.shape[0]))))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=255)  # (3, H', W') uint8
    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
