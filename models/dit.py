"""DiT: the diffusion transformer (Peebles & Xie 2023), a denoiser with the U-Net's signature.

    dit(x_t, t, y) -> prediction, same shape as x_t

x_t (B, C, H, W) is cut into p x p patches, linearly embedded to (B, N, D), N = HW / p^2, plus fixed sin-cos
(or learned) positions. A patch that does not divide the image (7 x 7 patches of a 32 x 32 image) is allowed:
the input is zero-padded at the bottom and right to whole patches and the output cropped back. Each block is
pre-norm attention + MLP whose LayerNorms are modulated by the conditioning c = embed(t) + embed(y) (adaLN,
§3.2): shift, scale and a residual gate per branch, all regressed from c by a linear layer initialised to
zero ("adaLN-Zero"), so every block starts as the identity. The final layer (adaLN + linear,
zero-initialised) maps each token back to a p x p x C patch.
The `dit` family is the same Gaussian diffusion, samplers and classifier-free guidance as `ddpm`
(models/ddpm.py) with this network in place of the U-Net.

Text (`context_dim` > 0, y a `Text`, as in the U-Net), two ways (`model.text_attention`):

- `cross` (PixArt-alpha, Chen et al. 2023): each block gets a cross-attention to the text tokens between its
  self-attention and its MLP, x + W_o Attn(LN(x), tokens) with W_o zero-initialised.
- `joint` (MM-DiT, Stable Diffusion 3, Esser et al. 2024, Fig. 2): the text tokens, projected to D, are a second
  stream of tokens s that runs through every block beside the image tokens x. Each stream has its own weights
  (adaLN-Zero modulation, QKV, output projection, MLP); one attention runs over the concatenation [x; s], so
  image attends to text, text to image, and each to itself:

      [q; k; v]_x = W_x modulate(LN(x)),   [q; k; v]_s = W_s modulate(LN(s))
      o = Attn([q_x; q_s], [k_x; k_s], [v_x; v_s]),   x += g_x W_o,x o[:N],   s += g_s W_o,s o[N:]
      then each stream its own modulated MLP. The last block keeps only the image stream's output.

In both the pooled embedding is projected and added to c (SD3: pooled CLIP + time through adaLN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import classes
from genzoo.errors import ConfigError
from genzoo.models.ddpm import DDPM, DiffusionConfig, SamplerConfig  # noqa: F401  (SamplerConfig: ddpm's knobs)
from genzoo.models.layers import timestep_embedding
from genzoo.models.unet import Text
from genzoo.rules import Range


def sincos_2d(D: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (MAE / DiT): half the channels encode the row, half the column. (h*w, D)"""
    def one_d(pos, dim):  # (n,) -> (n, dim)
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
        out = pos[:, None].double() * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([one_d(rows.flatten(), D // 2), one_d(cols.flatten(), D // 2)], dim=1).float()


def check_text_attention(cfg) -> None:
    """One line when model.text_attention=joint is set on a config whose denoiser is not the DiT (ldm, flow)."""
    if cfg.text_attention == "joint" and cfg.denoiser != "dit":
        raise ConfigError("model.text_attention=joint is the DiT's MM-DiT: set model.denoiser=dit as well")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]  # x (B, N, D), shift/scale (B, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block (DiT Fig. 3): x + gate * Attn(modulate(LN(x))), [x + CrossAttn(LN(x), text),] then the
    MLP as the attention."""

    def __init__(self, D: int, heads: int, mlp_ratio: float, context_dim: int = 0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        nn.init.zeros_(self.ada[1].weight), nn.init.zeros_(self.ada[1].bias)  # adaLN-Zero
        if context_dim:  # cross-attention to the text tokens, zero at the start
            self.norm_x, self.q, self.kv = nn.LayerNorm(D), nn.Linear(D, D), nn.Linear(context_dim, 2 * D)
            self.cross_proj = nn.Linear(D, D)
            nn.init.zeros_(self.cross_proj.weight), nn.init.zeros_(self.cross_proj.bias)
        self.context_dim = context_dim

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))

    def cross_attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q(self.norm_x(x)).view(B, N, self.heads, D // self.heads).transpose(1, 2)  # (B, h, N, d)
        k, v = self.kv(tokens).view(B, -1, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
        return self.cross_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: Text | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)  # (B, D) each
        x = x + gate1[:, None] * self.attention(modulate(self.norm1(x), shift1, scale1))
        if self.context_dim:
            x = x + self.cross_attention(x, text.tokens)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class Stream(nn.Module):
    """One modality's weights in an MM-DiT block: adaLN-Zero modulation, QKV and output projection, the MLP.
    The names are DiTBlock's, so an image stream with no text tokens computes exactly a DiTBlock (tested)."""

    def __init__(self, D: int, heads: int, mlp_ratio: float, last: bool = False):
        super().__init__()
        self.heads, self.last = heads, last  # last: the text stream of the last block gives only K and V (SD3)
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(D, 3 * D)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(D, (2 if last else 6) * D))
        nn.init.zeros_(self.ada[1].weight), nn.init.zeros_(self.ada[1].bias)  # adaLN-Zero
        if not last:
            self.proj = nn.Linear(D, D)
            self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
            hidden = int(D * mlp_ratio)
            self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))

    def qkv_of(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return self.qkv(modulate(self.norm1(x), shift, scale)).view(B, N, 3, self.heads, D // self.heads) \
            .permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)

    def post(self, x: torch.Tensor, o: torch.Tensor, gate1, shift2, scale2, gate2) -> torch.Tensor:
        """x + gate1 W_o o, then the modulated MLP; o (B, N, D) is this stream's rows of the joint attention."""
        x = x + gate1[:, None] * self.proj(o)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class MMDiTBlock(nn.Module):
    """SD3's MM-DiT block: an image stream and a text stream, each with its own weights, one joint attention."""

    def __init__(self, D: int, heads: int, mlp_ratio: float, last: bool = False):
        super().__init__()
        self.heads = heads
        self.x, self.s = Stream(D, heads, mlp_ratio), Stream(D, heads, mlp_ratio, last=last)

    def forward(self, x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D) image tokens, s (B, L, D) text tokens, c (B, D) -> (x, s); s is None after the last block."""
        B, N, D = x.shape
        mx = self.x.ada(c).chunk(6, dim=1)  # shift1, scale1, gate1, shift2, scale2, gate2: (B, D) each
        ms = self.s.ada(c).chunk(2 if self.s.last else 6, dim=1)
        q, k, v = torch.cat([self.x.qkv_of(x, *mx[:2]), self.s.qkv_of(s, *ms[:2])], dim=3)  # (B, h, N + L, d)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, D)  # (B, N + L, D)
        x = self.x.post(x, o[:, :N], *mx[2:])
        return x, (None if self.s.last else self.s.post(s, o[:, N:], *ms[2:]))


class DiT(nn.Module):
    """The denoiser: patchify, + positions, adaLN-Zero blocks conditioned on embed(t) + embed(y), unpatchify."""

    def __init__(self, cfg: DiTNetConfig, in_channels: int, image_size: tuple[int, int], num_classes: int = 0,
                 out_channels: int | None = None, context_dim: int = 0):
        super().__init__()
        H, W = image_size
        p, D = cfg.patch, cfg.hidden
        if D % cfg.heads or D % 4:
            raise ValueError(f"model.hidden={D} must be divisible by model.heads={cfg.heads} and by 4")
        self.p, self.h, self.w, self.C_out = p, -(-H // p), -(-W // p), out_channels or in_channels  # h, w: ceil
        self.pad = (0, self.w * p - W, 0, self.h * p - H)  # F.pad's (left, right, top, bottom): to whole patches
        self.num_classes = num_classes
        self.patchify = nn.Conv2d(in_channels, D, p, stride=p)  # (B, C, H, W) -> (B, D, H/p, W/p)
        if cfg.pos == "sincos":
            self.register_buffer("pos", sincos_2d(D, self.h, self.w)[None], persistent=False)  # (1, N, D)
        else:
            self.pos = nn.Parameter(0.02 * torch.randn(1, self.h * self.w, D))
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.y_emb = nn.Embedding(num_classes + 1, D) if num_classes else None  # row K = null label
        self.pooled_proj = nn.Linear(context_dim, D) if context_dim else None  # text: pooled -> c
        self.joint = cfg.text_attention == "joint"
        if self.joint and not context_dim:
            raise ConfigError("model.text_attention=joint (MM-DiT) joins text tokens to the image tokens: it needs "
                              "model.text_encoder=CLIP_RUN (and data.captions=true)")
        if self.joint:  # MM-DiT: the text tokens become a stream of their own, width D
            self.context_in = nn.Linear(context_dim, D)
            self.blocks = nn.ModuleList([MMDiTBlock(D, cfg.heads, cfg.mlp_ratio, last=i == cfg.depth - 1)
                                         for i in range(cfg.depth)])
        else:
            self.blocks = nn.ModuleList([DiTBlock(D, cfg.heads, cfg.mlp_ratio, context_dim)
                                         for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.out = nn.Linear(D, p * p * self.C_out)
        for m in (self.ada_out[1], self.out):  # the final layer starts at zero too
            nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W); the inverse of cutting into p x p patches in raster order."""
        B, p, C = x.shape[0], self.p, self.C_out
        x = x.view(B, self.h, self.w, p, p, C)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(B, C, self.h * p, self.w * p)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | Text | None = None) -> torch.Tensor:
        H, W = x_t.shape[-2:]
        x = self.patchify(F.pad(x_t, self.pad)).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        c = self.t_mlp(timestep_embedding(t, 256))  # (B, D)
        text = y if self.pooled_proj is not None else None
        if self.y_emb is not None:
            c = c + self.y_emb(y if y is not None else torch.full_like(t, self.num_classes).long())
        if text is not None:
            c = c + self.pooled_proj(text.pooled)
        if self.joint:
            s = self.context_in(text.tokens)  # (B, L, D)
            for block in self.blocks:
                x, s = block(x, s, c)
        else:
            for block in self.blocks:
                x = block(x, c, text)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        return self.unpatchify(self.out(modulate(self.norm_out(x), shift, scale)))[..., :H, :W]  # (B, C, H, W)


class DiTDiffusion(DDPM):
    """The ddpm family's process, samplers and guidance with a DiT denoiser."""

    def __init__(self, cfg: DiTConfig, image_shape: tuple[int, int, int], num_classes: int = 0,
                 text_encoder: nn.Module | None = None):
        C, H, W = image_shape
        K = 0 if text_encoder is not None else classes(cfg, num_classes)  # a caption replaces the label
        net = DiT(cfg, C, (H, W), K, context_dim=text_encoder.cfg.d_model if text_encoder is not None else 0)
        super().__init__(cfg, image_shape, num_classes, net=net, text_encoder=text_encoder)


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class DiTNetConfig:
    """The network's keys (also part of LDMConfig, for model.denoiser=dit)."""

    patch: Annotated[int, Range("[1, 64]")] = 2
    hidden: Annotated[int, Range("[1, 8192]")] = 384  # D
    depth: Annotated[int, Range("[1, 128]")] = 12
    heads: Annotated[int, Range("[1, 64]")] = 6
    mlp_ratio: Annotated[float, Range("(0, 64]")] = 4.0
    pos: Literal["sincos", "learned"] = "sincos"
    # with a text encoder: a cross-attention per block (PixArt-alpha), or SD3's MM-DiT joint attention
    text_attention: Literal["cross", "joint"] = "cross"


@dataclass
class DiTConfig(DiffusionConfig, DiTNetConfig):
    """The network's keys and the process's (DiffusionConfig, as in ddpm)."""

    text_encoder: str = ""  # a finished clip run: condition on captions through cross-attention (as ddpm)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"patch": 4, "hidden": 32, "depth": 2, "heads": 2, "T": 50},
             "sampler": {"steps": 5},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # real MNIST on 2 CPU cores in about 10 minutes: a DiT-S-like model at small scale, 4x4 patches (49 tokens);
    # many small steps rather than fewer large ones, since at this budget the number of steps is what counts
    # (README, Diffusion; benchmarks/results/sweep_quick_h100.jsonl)
    "quick": {"model": {"patch": 4, "hidden": 128, "depth": 6, "heads": 4, "T": 1000, "schedule": "cosine",
                        "objective": "v", "min_snr_gamma": 5.0, "class_cond": True},
              "sampler": {"name": "ddim", "steps": 50},
              "train": {"steps": 2400, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 800, "ckpt_every": 400}},
    # a few CPU minutes (the comparison's `dit` entry at its quick preset): the quick network on 7x7 patches, 16
    # tokens on 28x28 (padded to whole patches elsewhere), trains 2.2x the steps of 4x4 patches in the same
    # minutes, and only then draws the requested digits (benchmarks/results/dit_patch_cpu.jsonl)
    "short": {"model": {"patch": 7, "hidden": 128, "depth": 6, "heads": 4, "T": 1000, "schedule": "cosine",
                        "objective": "v", "min_snr_gamma": 5.0, "class_cond": True},
              "sampler": {"name": "dpm++2m", "steps": 20},
              "train": {"steps": 2400, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 800, "ckpt_every": 400}},
    # one GPU: DiT-S/2 widths (D 384, 12 blocks, 6 heads) on 28x28, 196 tokens
    "standard": {"model": {"patch": 2, "hidden": 384, "depth": 12, "heads": 6},
                 "train": {"steps": 100000, "batch_size": 256, "lr": 1e-4, "warmup_steps": 1000, "ema_decay": 0.9999,
                           "weight_decay": 0.0, "sample_every": 5000, "ckpt_every": 5000, "eval_every": 5000}},
}


RETIRED_KEYS = ("dropout",)  # an unused key that configs saved before its removal still carry
DESCRIPTION = "diffusion transformer (adaLN-Zero) on pixels: the ddpm process and samplers"
Model, Config = DiTDiffusion, DiTConfig
