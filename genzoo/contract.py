"""The contract between a model family and the shared trainer / evaluation harness (DESIGN.md §3).

A family is an `nn.Module` with

    phases: tuple[str, ...]                    ("main",) for most, ("disc", "gen") for a GAN
    num_classes: int                           > 0 when class-conditional, else 0
    parameters_for(phase) -> Iterable[Parameter]   what that phase's optimizer updates
    loss(batch, phase) -> dict[str, Tensor]    holds a scalar "loss"; other entries are logged
    sample(n, *, labels=None, generator=None, **knobs) -> Tensor
                                               (n, C, H, W) in [-1, 1], no grad, deterministic for a generator
    optional: log_likelihood(batch) -> (B,) bits/dim (exact or a bound), reconstruct(batch)

Families own their math only: no prints, no optimizers, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch


@dataclass
class Batch:
    images: torch.Tensor  # (B, C, H, W) float in [-1, 1]
    labels: torch.Tensor | None  # (B,) int64, or None
    latents: torch.Tensor | None = None  # (B, c, h, w) cached first-stage latents of the images (latent families)

    def to(self, device: torch.device, memory_format=torch.contiguous_format) -> "Batch":
        images = self.images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        latents = None if self.latents is None else self.latents.to(device, non_blocking=True)
        return Batch(images, labels, latents)


class GenerativeModel(Protocol):
    phases: tuple[str, ...]
    num_classes: int

    def parameters_for(self, phase: str) -> Iterable[torch.nn.Parameter]: ...

    def loss(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]: ...

    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **knobs) -> torch.Tensor: ...
