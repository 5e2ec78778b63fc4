"""Rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, "SD3").

The straight path between a data point x_0 and Gaussian noise eps, t in [0, 1] (t = 0 data, t = 1 noise):

    x_t = (1 - t) x_0 + t eps                      the interpolation (SD3 eq. 2 with a_t = 1 - t, b_t = t)
    v   = dx_t / dt = eps - x_0                    the conditional velocity, the network's target
    L   = E_{t, x_0, eps} || v_theta(x_t, t) - (eps - x_0) ||^2       (Liu et al. eq. 1; SD3 eq. 8, "rf")

Sampling integrates dx/dt = v_theta(x, t) from t = 1 to t = 0 (models/diffusion/ode.py). Training times:
uniform, or logit-normal (SD3 §3.1: t = sigmoid(u), u ~ N(m, s^2), which favours the middle of the path);
SD3's shift (§5.3.2) t -> s t / (1 + (s - 1) t) moves the training and the sampling times towards the
noise end for s > 1. The network sees `TIME_SCALE * t`, the range of the ddpm family's timestep indices, so
the same U-Net or DiT (and its sinusoidal embedding) serves both.
"""

from __future__ import annotations

from typing import Callable

import torch

TIME_SCALE = 1000.0  # the network's time input is TIME_SCALE * t (SD3 does the same)


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps, with t (B,) broadcast over x_0 (B, ...)."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * eps


def velocity(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The target: d x_t / dt = eps - x_0, the same at every t of the straight path."""
    return eps - x0


def shift(t, s: float):
    """SD3 eq. 23: t_m = s t / (1 + (s - 1) t); s = 1 is the identity, s > 1 spends more time near the noise."""
    return s * t / (1 + (s - 1) * t)


def sample_time(B: int, kind: str = "uniform", mean: float = 0.0, std: float = 1.0, s: float = 1.0,
                device="cpu") -> torch.Tensor:
    """Training times (B,) in [0, 1]: uniform, or logit-normal sigmoid(N(mean, std^2)) (SD3 §3.1), then shifted."""
    if kind == "uniform":
        t = torch.rand(B, device=device)
    elif kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(B, device=device))
    else:
        raise ValueError(f"unknown timestep distribution {kind!r}; choose uniform or logit_normal")
    return shift(t, s)


def time_grid(steps: int, s: float = 1.0) -> list[float]:
    """`steps` + 1 sampling times from 1 (noise) down to 0 (data): uniform in t, then shifted (SD3 §5.3.2)."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, not {steps}")
    return [shift(1 - i / steps, s) for i in range(steps + 1)]


def loss(net: Callable, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Flow matching: the per-image mean squared error of the predicted velocity, averaged over the batch."""
    x_t = interpolate(x0, eps, t)  # (B, C, H, W)
    v_hat = net(x_t, TIME_SCALE * t, y)  # (B, C, H, W)
    return (v_hat - velocity(x0, eps)).pow(2).flatten(1).mean(1).mean()
