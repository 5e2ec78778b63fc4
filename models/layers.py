"""Building blocks shared by the families: normalisation, residual blocks, resampling."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide `channels` (as in the DDPM U-Net)."""
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm -> SiLU -> conv3x3, twice, plus a 1x1 skip if widths differ.

    `emb` (B, E), if given, is projected and added after the first conv (time / class conditioning, DDPM). The
    group norm that follows subtracts each group's mean, so only the differences between the channels of a
    group reach the second conv: at one channel per group (widths up to 32, see `group_norm`) nothing of the
    embedding does. With `scale_shift` the projection is a per-channel scale and shift applied after that norm,
    h = norm2(h) (1 + s) + b (adaGN, Dhariwal & Nichol 2021, Sec. 3), which no norm undoes.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int = 0, dropout: float = 0.0, scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out) if emb_dim else None
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        e = self.emb(emb)[:, :, None, None] if self.emb is not None and emb is not None else None
        if e is not None and self.scale_shift:
            scale, shift = e.chunk(2, dim=1)  # (B, c_out, 1, 1) each
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h if e is None else h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a strided 3x3 conv (optionally changing the width)."""

    def __init__(self, channels: int, c_out: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, c_out or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour then a 3x3 conv (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int, c_out: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, c_out or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def halvings(image_shape: tuple[int, int, int], ch_mult: tuple[int, ...]) -> int:
    """2^(len(ch_mult) - 1): how much a conv_encoder with these widths shrinks H and W; an error unless it divides them."""
    down = 2 ** (len(ch_mult) - 1)
    if image_shape[1] % down or image_shape[2] % down:
        raise ValueError(f"image size {image_shape[1]}x{image_shape[2]} is not divisible by 2^{len(ch_mult) - 1}; "
                         f"change model.ch_mult")
    return down


def conv_encoder(in_channels: int, widths: list[int], blocks: int) -> list[nn.Module]:
    """The convolutional encoder of the vae and the vqvae, as a list of layers:
    conv3x3 to widths[0], then per resolution `blocks` residual blocks and a strided halving to the next width.
    (B, in_channels, H, W) -> (B, widths[-1], H / 2^(len(widths) - 1), W / 2^(len(widths) - 1))."""
    layers = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.SiLU()]
    for i, w in enumerate(widths):
        layers += [ResBlock(w, w) for _ in range(blocks)]
        if i < len(widths) - 1:
            layers += [Downsample(w, widths[i + 1]), nn.SiLU()]
    return layers


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer and DDPM: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def guidance_labels(labels: torch.Tensor | None, num_classes: int, cfg_scale: float) -> torch.Tensor | None:
    """The labels of one guided batch: (n,) -> (2n,) = [y; null] when guiding (cfg_scale != 1), else unchanged.
    An autoregressive sampler runs both halves on the same prefix and mixes their logits (`guided_logits`)."""
    if labels is None or not num_classes or cfg_scale == 1.0:
        return labels
    return torch.cat([labels, torch.full_like(labels, num_classes)])


def guided_logits(logits: torch.Tensor, n: int, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits (as Parti and MUSE apply it to token models):
        l_guided = l(. | null) + cfg_scale * (l(. | y) - l(. | null))
    logits (2n, ..., V) of a `guidance_labels` batch -> (n, ..., V); an unguided batch (n, ...) passes through."""
    if logits.shape[0] == n:
        return logits
    l_c, l_u = logits[:n], logits[n:]
    return l_u + cfg_scale * (l_c - l_u)


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
                       top_k: int = 0) -> torch.Tensor:
    """One draw per row of `logits` (..., V) from softmax(logits / temperature), restricted to the top k.

    Gumbel-max: argmax_v (logits_v / T + g_v), g_v = -log(-log u_v), u_v ~ U(0, 1), is an exact draw
    (Gumbel 1954; Maddison et al. 2014). Unlike inverting a cumulative sum, the draw only changes when
    two perturbed logits are within rounding of each other, so two computations of the same logits
    that differ in the last bits (e.g. cached and uncached sampling) give the same samples.
    temperature = 0 is greedy (argmax); top_k = 0 keeps all values.
    """
    logits = logits.float()
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    u = torch.rand(logits.shape, generator=generator, device=logits.device)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
