"""Likelihoods for 8-bit images living in [-1, 1] (256 bins of width 2/255)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BIN = 1.0 / 255.0  # half a bin width in [-1, 1] units


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per sub-pixel under a logistic discretized to 256 bins (PixelCNN++, Salimans et al. 2017, eq. 2).

    x, mean, log_scale: (B, C, H, W), x on the 8-bit grid in [-1, 1]. The edge bins absorb the tails,
    so the probabilities of the 256 values sum to 1 and -log P / (D ln 2) is bits/dim of the 8-bit image.
    """
    centered = x - mean
    inv_s = torch.exp(-log_scale)
    plus_in = inv_s * (centered + BIN)
    min_in = inv_s * (centered - BIN)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): the x = -1 edge
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): the x = +1 edge
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)  # density at the bin centre
    # where the bin mass underflows, use density * bin width (2/255)
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))


def discretized_logistic_sample(mean: torch.Tensor, log_scale: torch.Tensor,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw x ~ DiscretizedLogistic(mean, scale), on the 8-bit grid in [-1, 1]."""
    u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype).clamp(1e-5, 1 - 1e-5)
    x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return quantize(x)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] values to the nearest of the 256 8-bit levels."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def nats_to_bits_per_dim(nats: torch.Tensor, dims: int = 1) -> torch.Tensor:
    """-log p in nats over `dims` dimensions -> bits/dim (dims = 1: nats already per dimension -> bits)."""
    return nats / (dims * math.log(2.0))


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per sub-pixel under N(mean, exp(log_scale)^2) discretized to 256 bins (DDPM eq. 13).

    The edge bins take the tails (-inf, -1 + 1/255] and [1 - 1/255, inf), so the pmf sums to 1.
    """
    inv_s = torch.exp(-log_scale)
    upper, lower = inv_s * (x - mean + BIN), inv_s * (x - mean - BIN)
    log_cdf_upper = torch.special.log_ndtr(upper)  # the x = -1 edge
    log_sf_lower = torch.special.log_ndtr(-lower)  # the x = +1 edge
    delta = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    # where the bin mass underflows, use density * bin width (2/255)
    log_pdf = -0.5 * (inv_s * (x - mean)).pow(2) - log_scale - 0.5 * math.log(2 * math.pi) - math.log(127.5)
    log_mid = torch.where(delta > 1e-12, torch.log(delta.clamp(min=1e-12)), log_pdf)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))
