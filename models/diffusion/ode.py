"""ODE solvers and the ODE likelihood: plain functions over a vector field f(x, t).

    f(x, t) -> dx/dt      x (B, ...), t a Python float; the grid ts = [t_0, t_1, ..., t_N] may run either way

The samplers of the flow family integrate its velocity from t = 1 (noise) to t = 0 (data); the likelihood
integrates a probability-flow ODE the other way, from data to noise, for `flow` and `ddpm` alike. Network
evaluations per solve: Euler N, midpoint 2N, Heun 2N (N = len(ts) - 1 steps).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Field = Callable[[torch.Tensor, float], torch.Tensor]
# the ODE likelihood's defaults, named in the `likelihood` label of the families that use them
LIKELIHOOD_STEPS, LIKELIHOOD_PROBES = 20, 1
LIKELIHOOD_LABEL = (f"estimate (probability-flow ODE: {LIKELIHOOD_STEPS} Heun steps, {LIKELIHOOD_PROBES} Hutchinson "
                    f"probe, uniform dequantisation)")  # what the defaults compute, as the report labels it


def euler(f: Field, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """Euler: x_{i+1} = x_i + h f(x_i, t_i),   h = t_{i+1} - t_i.   First order, one evaluation per step."""
    for t, s in zip(ts, ts[1:]):
        x = x + (s - t) * f(x, t)
    return x


def midpoint(f: Field, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """Explicit midpoint (RK2): x_{i+1} = x_i + h f(x_i + (h/2) f(x_i, t_i), t_i + h/2).   Second order."""
    for t, s in zip(ts, ts[1:]):
        h = s - t
        x = x + h * f(x + 0.5 * h * f(x, t), t + 0.5 * h)
    return x


def heun(f: Field, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """Heun (explicit trapezoid): d_1 = f(x_i, t_i), x' = x_i + h d_1, d_2 = f(x', t_{i+1}),
    x_{i+1} = x_i + (h/2)(d_1 + d_2).   Second order, the corrector EDM's Algorithm 1 uses."""
    for t, s in zip(ts, ts[1:]):
        h = s - t
        d1 = f(x, t)
        d2 = f(x + h * d1, s)
        x = x + 0.5 * h * (d1 + d2)
    return x


SOLVERS: dict[str, Callable[[Field, torch.Tensor, list[float]], torch.Tensor]] = {
    "euler": euler, "midpoint": midpoint, "heun": heun}
EVALUATIONS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2}


def rademacher(shape, generator=None, device="cpu") -> torch.Tensor:
    """Probe vectors of +-1 entries: E[e e^T] = I, the lowest-variance Hutchinson probe."""
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def field_and_divergence(f: Field, x: torch.Tensor, t: float, probes: torch.Tensor):
    """f(x, t) and Hutchinson's estimate of its divergence (Hutchinson 1989; FFJORD, Grathwohl et al. 2019):

        div f = tr(df/dx) = E_e[e^T (df/dx) e],   estimated by (1/K) sum_k e_k^T (df/dx) e_k,

    one vector-Jacobian product per probe e_k (probes (K, B, ...)); unbiased for any K. Returns (f (B, ...), (B,))."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        fx = f(x, t)
        div = torch.zeros(x.shape[0], device=x.device, dtype=fx.dtype)
        for k, e in enumerate(probes):
            (e_J,) = torch.autograd.grad(fx, x, e, retain_graph=k < len(probes) - 1)  # e^T df/dx
            div = div + (e_J * e).flatten(1).sum(1)
    return fx.detach(), div / len(probes)


def log_likelihood(f: Field, x: torch.Tensor, ts: list[float], prior_log_prob: Callable[[torch.Tensor], torch.Tensor],
                   probes: int = 1, generator=None) -> torch.Tensor:
    """log p_{t_0}(x) in nats per sample (B,), by the instantaneous change of variables (Chen et al. 2018):

        d log p(x(t)) / dt = -div f(x(t), t)   =>   log p_{t_0}(x(t_0)) = log p_{t_N}(x(t_N)) + int div f dt,

    integrated with Heun's method on the grid ts (x and the integral together, 2N evaluations), the divergence
    by Hutchinson with `probes` Rademacher vectors drawn once for the whole solve (FFJORD). The trajectory does
    not depend on the probes, so the result is an unbiased estimate of the solver's log-likelihood."""
    e = rademacher((probes, *x.shape), generator, x.device)  # (K, B, ...)
    delta = torch.zeros(x.shape[0], device=x.device)
    for t, s in zip(ts, ts[1:]):
        h = s - t
        d1, div1 = field_and_divergence(f, x, t, e)
        x_pred = x + h * d1
        d2, div2 = field_and_divergence(f, x_pred, s, e)
        x = x + 0.5 * h * (d1 + d2)
        delta = delta + 0.5 * h * (div1 + div2)
    return prior_log_prob(x) + delta


def gaussian_log_prob(x: torch.Tensor, var: float = 1.0) -> torch.Tensor:
    """log N(x; 0, var I) summed over all but the batch dimension: (B, ...) -> (B,)."""
    D = x[0].numel()
    return -0.5 * (x.pow(2).flatten(1).sum(1) / var + D * math.log(2 * math.pi * var))


def dequantized_bits_per_dim(log_p: torch.Tensor, D: int, levels: int = 256) -> torch.Tensor:
    """Bits/dim of 8-bit data from a continuous density on [-1, 1]-scaled pixels (uniform dequantisation).

    The pixel values k/127.5 - 1 are `levels` bins of width 2 / (levels - 1); with x + u, u ~ U(bin), Jensen gives
    -log P(k) <= -E_u log p(x + u) - D log(bin), so bits/dim = -log p / (D ln 2) + log2((levels - 1) / 2),
    an upper bound on the discrete model's bits/dim (Theis et al. 2016; Ho et al. 2019, "Flow++" §3.1)."""
    return -log_p / (D * math.log(2)) + math.log2((levels - 1) / 2)


def dequantize(x: torch.Tensor, generator=None, levels: int = 256) -> torch.Tensor:
    """x + u, u ~ U(-bin/2, bin/2) per sub-pixel, bin = 2 / (levels - 1): 8-bit images in [-1, 1] made continuous."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 0.5
    return x + u * (2 / (levels - 1))
