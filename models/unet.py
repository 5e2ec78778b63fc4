"""The DDPM U-Net (Ho et al. 2020, App. B; the PixelCNN++ backbone with Wide-ResNet blocks and attention).

    unet(x_t, t, y) -> prediction (eps, x0 or v, per the process's objective), same shape as x_t

Per resolution: `blocks` residual blocks (group norm, SiLU, time/class embedding added, dropout), with
self-attention at the resolutions listed in `attn_res`; then a strided downsampling. A middle block
(res, attention, res). The decoder mirrors it with `blocks + 1` residual blocks per resolution fed by skip
connections, and nearest-neighbour upsampling. Output and residual branches start at zero (iDDPM), so the
network is the zero function at initialisation. The class embedding has one extra row, the null label
used by classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.models.layers import Downsample, ResBlock, Upsample, group_norm, timestep_embedding
from genzoo.rules import Multipliers, Range


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Attention(nn.Module):
    """Spatial self-attention with a residual connection: every position attends to every other."""

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by model.heads={heads}")
        self.heads = heads
        self.norm, self.qkv = group_norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))  # (B, heads, HW, C/heads) -> (B, C, H, W)


class TimestepBlock(nn.Module):
    """A residual block optionally followed by attention; takes the embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attn: bool, heads: int):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        zero_(self.res.conv2)
        self.attn = Attention(c_out, heads) if attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig, in_channels: int, image_size: int, num_classes: int = 0,
                 out_channels: int | None = None):
        super().__init__()
        down = 2 ** (len(cfg.ch_mult) - 1)
        if image_size % down:
            raise ValueError(f"image size {image_size} is not divisible by 2^{len(cfg.ch_mult) - 1}; "
                             f"change model.ch_mult (or pad the data with data.image_size)")
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.ch, self.num_classes = ch, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # row K = null label
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        self.down, skips, c, res = nn.ModuleList(), [ch], ch, image_size
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.blocks):
                self.down.append(TimestepBlock(c, ch * mult, emb_dim, cfg.dropout, res in cfg.attn_res, cfg.heads))
                c = ch * mult
                skips.append(c)
            if i < len(cfg.ch_mult) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([TimestepBlock(c, c, emb_dim, cfg.dropout, True, cfg.heads),
                                  TimestepBlock(c, c, emb_dim, cfg.dropout, False, cfg.heads)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.blocks + 1):
                self.up.append(TimestepBlock(c + skips.pop(), ch * mult, emb_dim, cfg.dropout, res in cfg.attn_res,
                                             cfg.heads))
                c = ch * mult
            if i > 0:
                self.up.append(Upsample(c))
                res *= 2
        self.out = nn.Sequential(group_norm(c), nn.SiLU(), zero_(nn.Conv2d(c, out_channels or in_channels, 3,
                                                                            padding=1)))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) timesteps, y (B,) labels in 0..K (K = null label) or None."""
        emb = self.time_mlp(timestep_embedding(t, self.ch))  # (B, 4ch)
        if self.label_emb is not None:
            emb = emb + self.label_emb(y if y is not None else torch.full_like(t, self.num_classes).long())
        emb = F.silu(emb)  # DDPM applies the nonlinearity before each block's projection; once is enough
        h = self.conv_in(x_t)  # (B, ch, H, W)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, TimestepBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, TimestepBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)  # (B, out_channels, H, W)


# ----------------------------------------------------------------------------------------
# config


@dataclass
class UNetConfig:
    """The network's keys (part of DDPMConfig and LDMConfig)."""

    channels: Annotated[int, Range("[1, 4096]")] = 128  # width at full resolution
    ch_mult: Multipliers = (1, 2, 2, 2)  # per resolution; len-1 downsamplings
    blocks: Annotated[int, Range("[1, 16]")] = 2  # residual blocks per resolution (encoder)
    attn_res: Annotated[tuple[int, ...], Range("[1, 4096]")] = (16,)  # feature-map sizes (H) with self-attention
    heads: Annotated[int, Range("[1, 64]")] = 1  # DDPM: one head
    dropout: Annotated[float, Range("[0, 1)")] = 0.1
