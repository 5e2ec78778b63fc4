"""Encode a dataset once with a frozen first stage and cache the latents on disk (latent diffusion).

The cache key holds the dataset, its shape and the sha256 of the autoencoder's weights, so a changed or
retrained autoencoder never reuses stale latents.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from genzoo.datasets import cache_dir


def weights_sha256(module: torch.nn.Module) -> str:
    return state_sha256(module.state_dict())


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 1-D: any memory format
    return h.hexdigest()


def cache_path(model, dataset: str, shape: tuple[int, ...], n: int) -> Path:
    key = f"{dataset}-train-{'x'.join(map(str, shape))}-n{n}-ae{weights_sha256(model.autoencoder)[:16]}"
    return cache_dir("latents") / f"{key}.pt"


@torch.no_grad()
def cached_latents(model, data, dataset: str, device, batch_size: int = 500) -> torch.Tensor:
    """(N, c, h, w) latents of every training image, from the cache or encoded now (and cached)."""
    path = cache_path(model, dataset, data.shape, len(data))
    if path.is_file():
        return torch.load(path, weights_only=True)
    chunks = []
    for i in range(0, len(data), batch_size):
        images, _ = data.batch(torch.arange(i, min(i + batch_size, len(data))))
        chunks.append(model.encode(images.to(device)).float().cpu())
    latents = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(latents, tmp)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return latents
