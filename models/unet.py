"""The DDPM U-Net (Ho et al. 2020, App. B; the PixelCNN++ backbone with Wide-ResNet blocks and attention).

    unet(x_t, t, y) -> prediction (eps, x0 or v, per the process's objective), same shape as x_t

Per resolution: `blocks` residual blocks (group norm, SiLU, time/class embedding added, dropout), with
self-attention at the resolutions listed in `attn_res`; then a strided downsampling. A middle block
(res, attention, res). The decoder mirrors it with `blocks + 1` residual blocks per resolution fed by skip
connections, and nearest-neighbour upsampling. Output and residual branches start at zero (iDDPM), so the
network is the zero function at initialisation. The class embedding has one extra row, the null label
used by classifier-free guidance (Ho & Salimans 2022).

Text conditioning (Rombach et al. 2022, Sec. 3.3), with `context_dim` > 0: y is a `Text` pair, the frozen
text encoder's token embeddings (B, L, d_ctx) and its pooled embedding (B, d_ctx). Each attention resolution
(and the middle) gets a cross-attention after its self-attention, queries from the feature map and keys and
values from the tokens,

    h <- h + W_o softmax(Q(h) K(tokens)^T / sqrt(d)) V(tokens)        (zero-initialised W_o)

and the pooled embedding is projected and added to the time embedding (as SDXL does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, NamedTuple

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


class Text(NamedTuple):
    """A text condition: the frozen encoder's token embeddings (B, L, d_ctx) and pooled embedding (B, d_ctx)."""

    tokens: torch.Tensor
    pooled: torch.Tensor


class CrossAttention(nn.Module):
    """The feature map's positions attend to the text tokens, with a residual connection. `keep_maps=True`
    keeps the last attention weights (B, heads, H W, L) in `maps`, for pictures of which word each pixel reads."""

    def __init__(self, channels: int, context_dim: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by model.heads={heads}")
        self.heads, self.keep_maps, self.maps = heads, False, None
        self.norm, self.q = group_norm(channels), nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.queries(x)
        return self.output(x, self.attend(q, tokens, self.kv, keep_maps=self.keep_maps))

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the queries (B, heads, H W, C / heads)."""
        B, C, H, W = x.shape
        return self.q(self.norm(x)).reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2)

    def attend(self, q: torch.Tensor, tokens: torch.Tensor, kv: nn.Linear, keep_maps: bool = False) -> torch.Tensor:
        """softmax(Q K^T / sqrt(d)) V with keys and values kv(tokens): q (B, h, HW, c), tokens (B, L, d_ctx) ->
        (B, h, HW, c). IP-Adapter (models/ip_adapter.py) calls it a second time with its own kv."""
        B, h, _, c = q.shape
        k, v = kv(tokens).view(B, -1, 2, h, c).permute(2, 0, 3, 1, 4)  # (B, h, L, c) each
        if keep_maps:
            self.maps = torch.softmax(q @ k.transpose(-1, -2) / c ** 0.5, -1)  # (B, h, HW, L)
        return F.scaled_dot_product_attention(q, k, v)

    def output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The residual: x + W_o out, out (B, h, HW, c) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class TimestepBlock(nn.Module):
    """A residual block optionally followed by attention (and cross-attention to text); takes the embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attn: bool, heads: int,
                 context_dim: int = 0, scale_shift: bool = False):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout, scale_shift)
        zero_(self.res.conv2)
        self.attn = Attention(c_out, heads) if attn else None
        self.cross = CrossAttention(c_out, context_dim, heads) if attn and context_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, text: Text | None = None) -> torch.Tensor:
        x = self.res(x, emb)
        x = self.attn(x) if self.attn is not None else x
        return self.cross(x, text.tokens) if self.cross is not None else x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig, in_channels: int, image_size: int, num_classes: int = 0,
                 out_channels: int | None = None, context_dim: int = 0):
        super().__init__()
        down = 2 ** (len(cfg.ch_mult) - 1)
        if image_size % down:
            raise ValueError(f"image size {image_size} is not divisible by 2^{len(cfg.ch_mult) - 1}; "
                             f"change model.ch_mult (or pad the data with data.image_size)")
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.ch, self.num_classes = ch, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # row K = null label
        self.pooled_proj = nn.Linear(context_dim, emb_dim) if context_dim else None  # text: pooled -> time emb
        blk = functools.partial(TimestepBlock, emb_dim=emb_dim, dropout=cfg.dropout, heads=cfg.heads,
                                context_dim=context_dim, scale_shift=cfg.scale_shift)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        self.down, skips, c, res = nn.ModuleList(), [ch], ch, image_size
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.blocks):
                self.down.append(blk(c, ch * mult, attn=res in cfg.attn_res))
                c = ch * mult
                skips.append(c)
            if i < len(cfg.ch_mult) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([blk(c, c, attn=True), blk(c, c, attn=False)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.blocks + 1):
                self.up.append(blk(c + skips.pop(), ch * mult, attn=res in cfg.attn_res))
                c = ch * mult
            if i > 0:
                self.up.append(Upsample(c))
                res *= 2
        self.out = nn.Sequential(group_norm(c), nn.SiLU(), zero_(nn.Conv2d(c, out_channels or in_channels, 3,
                                                                            padding=1)))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | Text | None = None,
                control: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) timesteps, y (B,) labels in 0..K (K = null label), a `Text`, or None.
        `control`: ControlNet's residuals (models/controlnet.py), one per skip connection and one for the middle."""
        emb, text = self.embed(t, y)
        h, hs = self.encode(x_t, emb, text)
        if control is not None:  # added to what the encoder hands the decoder (Zhang et al. 2023, Fig. 3)
            *skips, middle = control
            hs, h = [s + c for s, c in zip(hs, skips)], h + middle
        for layer in self.up:
            if isinstance(layer, TimestepBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb, text)
            else:
                h = layer(h)
        return self.out(h)  # (B, out_channels, H, W)

    def embed(self, t: torch.Tensor, y: torch.Tensor | Text | None) -> tuple[torch.Tensor, Text | None]:
        """The embedding every block reads (B, 4ch): time, plus the class or the pooled text; and the Text, if any."""
        emb = self.time_mlp(timestep_embedding(t, self.ch))  # (B, 4ch)
        text = y if self.pooled_proj is not None else None
        if self.label_emb is not None:
            emb = emb + self.label_emb(y if y is not None else torch.full_like(t, self.num_classes).long())
        if text is not None:
            emb = emb + self.pooled_proj(text.pooled)
        return F.silu(emb), text  # DDPM applies the nonlinearity before each block's projection; once is enough

    def encode(self, x_t: torch.Tensor, emb: torch.Tensor, text: Text | None,
               hint: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder and the middle block: h (B, c, h, w) and the skips hs (each block's output). `hint`
        (B, ch, H, W): a ControlNet's control features, added to the first feature map."""
        h = self.conv_in(x_t)  # (B, ch, H, W)
        if hint is not None:
            h = h + hint
        hs = [h]
        for layer in self.down:
            h = layer(h, emb, text) if isinstance(layer, TimestepBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb, text)
        return h, hs

    def skip_channels(self) -> list[int]:
        """The channels of each skip of `encode` and, last, of the middle's output."""
        channels = [self.conv_in.out_channels]
        for layer in self.down:
            channels.append(layer.res.conv2.out_channels if isinstance(layer, TimestepBlock) else channels[-1])
        return channels + [channels[-1]]


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
    # the time / class embedding as a scale and shift after each block's second norm (adaGN), instead of added
    # before it, where a group norm of one channel per group (widths up to 32) removes it (layers.ResBlock)
    scale_shift: bool = False
