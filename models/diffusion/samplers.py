"""Samplers: plain functions over a denoise callable.

    denoise(x_t, t) -> (x0_hat, eps_hat)      x_t (B, C, H, W), t (B,) int64 timestep indices 0..T-1

`denoise` wraps the network, the objective's conversion, clipping and classifier-free guidance
(see `genzoo.models.ddpm`); the samplers only need the process's alpha_bar table. Each sampler starts
from x_T ~ N(0, I) drawn with `generator`, uses only that generator, and returns x_0.
`network_evaluations(name, steps)` is the number of denoise calls per sample.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from genzoo.models.diffusion.process import GaussianDiffusion

Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def timesteps(T: int, steps: int) -> list[int]:
    """`steps` indices from T-1 down to 0, evenly spaced (the full chain when steps = T)."""
    if not 1 <= steps <= T:
        raise ValueError(f"sampler steps must be in 1..{T} (the process has T={T}), not {steps}")
    if steps == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _full(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def ddpm(denoise: Denoise, process: GaussianDiffusion, shape, *, steps: int, generator=None, device="cpu",
         var: str = "beta_tilde") -> torch.Tensor:
    """Ancestral sampling (DDPM Algorithm 2): x_s ~ q(x_s | x_t, x0_hat), on a subsequence of timesteps
    when steps < T (the respaced process of iDDPM §4). Variance beta_tilde (eq. 7) or beta' (both in DDPM §3.2);
    no noise is added at the last step."""
    ab = process.alpha_bar.tolist()
    x = torch.randn(shape, generator=generator, device=device)  # x_T
    ts = timesteps(process.T, steps)
    for t, s in zip(ts, ts[1:] + [-1]):
        x0, _ = denoise(x, _full(x, t))
        ab_t, ab_s = ab[t], (ab[s] if s >= 0 else 1.0)
        beta = 1.0 - ab_t / ab_s  # beta' of the (possibly respaced) step t -> s
        mean = (math.sqrt(ab_s) * beta / (1 - ab_t)) * x0 + (math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)) * x
        if s < 0:
            x = mean
        else:
            variance = beta * (1 - ab_s) / (1 - ab_t) if var == "beta_tilde" else beta
            x = mean + math.sqrt(variance) * _noise(x, generator)
    return x


def ddim(denoise: Denoise, process: GaussianDiffusion, shape, *, steps: int, eta: float = 0.0, generator=None,
         device="cpu") -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s). Deterministic at eta = 0; at eta = 1
    it is the ancestral sampler with variance beta_tilde."""
    ab = process.alpha_bar.tolist()
    x = torch.randn(shape, generator=generator, device=device)
    ts = timesteps(process.T, steps)
    for t, s in zip(ts, ts[1:] + [-1]):
        x0, eps = denoise(x, _full(x, t))
        ab_t, ab_s = ab[t], (ab[s] if s >= 0 else 1.0)
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0 and s >= 0:
            x = x + sigma * _noise(x, generator)
    return x


def dpm_solver_pp(denoise: Denoise, process: GaussianDiffusion, shape, *, steps: int, generator=None,
                  device="cpu") -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, multistep, in lambda = log(alpha / sigma):

        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,   h = lambda_s - lambda_t,
        D = (1 + 1 / 2r) x0_t - (1 / 2r) x0_prev,                   r = h_prev / h  (first order at the first
                                                                    and the last step, which goes to sigma = 0).
    """
    ab = process.alpha_bar.tolist()
    x = torch.randn(shape, generator=generator, device=device)
    ts = timesteps(process.T, steps)
    lam = lambda a: 0.5 * math.log(a / (1 - a))  # noqa: E731
    x0_prev, h_prev = None, None
    for t, s in zip(ts, ts[1:] + [-1]):
        x0, _ = denoise(x, _full(x, t))
        if s < 0:  # sigma_s = 0: the exact solution of the linear part is x0
            return x0
        ab_t, ab_s = ab[t], ab[s]
        h = lam(ab_s) - lam(ab_t)
        D = x0
        if x0_prev is not None:
            r = h_prev / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * math.expm1(-h) * D
        x0_prev, h_prev = x0, h
    return x


def edm_timesteps(process: GaussianDiffusion, steps: int, rho: float = 7.0) -> list[int]:
    """EDM eq. 5 noise levels between sigma_max and sigma_min, rounded to the nearest timestep (deduplicated)."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, not {steps}")
    sig = ((1 - process.alpha_bar) / process.alpha_bar).sqrt()  # (T,) float64, increasing in t
    lo, hi = sig[0].item() ** (1 / rho), sig[-1].item() ** (1 / rho)
    wanted = [(hi + i / max(steps - 1, 1) * (lo - hi)) ** rho for i in range(steps)]
    return sorted({int(torch.argmin((sig.log() - math.log(w)).abs())) for w in wanted}, reverse=True)


def edm(denoise: Denoise, process: GaussianDiffusion, shape, *, steps: int, heun: bool = True, rho: float = 7.0,
        generator=None, device="cpu") -> torch.Tensor:
    """Euler / Heun (Karras et al. 2022, "EDM", Algorithm 1 without churn) on the probability-flow ODE
    dx/dsigma = (x - D(x; sigma)) / sigma of x = x_t / sqrt(alpha_bar), sigma = sqrt((1 - ab) / ab).

    sigma_i follow EDM eq. 5 (rho = 7) between the process's sigma_min and sigma_max, each rounded to the
    nearest trained timestep (EDM's treatment of discrete-time models); D(x; sigma) = x0_hat.
    """
    ts = edm_timesteps(process, steps, rho)
    sig = ((1 - process.alpha_bar) / process.alpha_bar).sqrt()
    sigmas = [sig[t].item() for t in ts] + [0.0]

    def D(x, i):  # x0_hat at sigma_i; the network sees x_t = x / sqrt(1 + sigma^2)
        return denoise(x / math.sqrt(1 + sigmas[i] ** 2), _full(x, ts[i]))[0]

    x = math.sqrt(1 + sigmas[0] ** 2) * torch.randn(shape, generator=generator, device=device)
    for i in range(len(ts)):
        d = (x - D(x, i)) / sigmas[i]
        x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        if heun and sigmas[i + 1] > 0:  # second-order correction
            d2 = (x_next - D(x_next, i + 1)) / sigmas[i + 1]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * 0.5 * (d + d2)
        x = x_next
    return x


SAMPLERS = ("ddpm", "ddim", "dpm++2m", "euler", "heun")


def sample(name: str, denoise: Denoise, process: GaussianDiffusion, shape, *, steps: int, eta: float = 0.0,
           var: str = "beta_tilde", generator=None, device="cpu") -> torch.Tensor:
    """Dispatch on the sampler name (`sampler.name` in the CLI)."""
    kw = dict(steps=steps, generator=generator, device=device)
    if name == "ddpm":
        return ddpm(denoise, process, shape, var=var, **kw)
    if name == "ddim":
        return ddim(denoise, process, shape, eta=eta, **kw)
    if name == "dpm++2m":
        return dpm_solver_pp(denoise, process, shape, **kw)
    if name in ("euler", "heun"):
        return edm(denoise, process, shape, heun=name == "heun", **kw)
    raise ValueError(f"unknown sampler {name!r}; choose from: {', '.join(SAMPLERS)}")


def evaluated_timesteps(name: str, steps: int, process: GaussianDiffusion) -> list[int]:
    """The timestep of each denoise call of one sample, in order (one call batches the conditional and
    unconditional CFG branches)."""
    if name in ("euler", "heun"):
        ts = edm_timesteps(process, steps)
        return [t for i, t in enumerate(ts) for t in ([t, ts[i + 1]] if name == "heun" and i + 1 < len(ts) else [t])]
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from: {', '.join(SAMPLERS)}")
    return timesteps(process.T, steps)


def network_evaluations(name: str, steps: int, process: GaussianDiffusion) -> int:
    """Denoise calls per sample."""
    return len(evaluated_timesteps(name, steps, process))
