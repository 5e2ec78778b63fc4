"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

    p(x | y) = prod_i prod_c p(x_{i,c} | x_{<i}, x_{i,<c}, y)     pixels i in raster order, channels c (R, G, B)

Output distribution: every conditional is a 256-way categorical (a softmax over the 8-bit values, as in
the paper's Sec. 2), not PixelCNN++'s discretized logistic mixture. So `log_likelihood` is the exact
-log2 p(x) / D of the 8-bit image (bits/dim), and a model with all-zero logits scores exactly 8.

Network (paper Sec. 2.2, Fig. 1-2): a vertical stack, whose (k//2+1) x k kernels see the current row
and the rows above, and a horizontal stack, whose 1 x (k//2+1) kernels see the pixels to the left in the
current row and which receives the vertical stack shifted one row down. Together they cover the whole
causal past: no blind spot. Gated activation, eq. 2 and eq. 4 with a class embedding h:
    y = tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)
The first layer is mask "A" (the horizontal stack excludes the current pixel); later layers are "B"
with a residual connection in the horizontal stack.

Sub-pixels: the stacks see every channel of earlier pixels and nothing of the current pixel. The
output head adds the current pixel's earlier channels through a masked 1x1 conv, so R depends on
the past, G on the past and R, B on the past, R and G.

Classifier-free guidance (Ho & Salimans 2022, applied to logits as Parti does): a conditional model is
trained with the label replaced by a null label with probability `p_uncond`, and sampled from
    logits = l(x_<i, null) + cfg_scale * (l(x_<i, y) - l(x_<i, null))
with both halves in one batch of 2n on the same prefix; cfg_scale = 1 is the model as trained.

Sampling is raster order, one sub-pixel at a time, in a batch. With `cache=True` (default) the
vertical stack of row r-1 is computed once, when the row is finished (it depends on nothing later),
and for each pixel each layer of the horizontal stack runs only on the columns its output at that pixel
sees (k//2 + 2 of them), its input row kept from the earlier pixels: far less work than running the full
network H*W*C times (`cache=False`), with the same samples. benchmarks/kv_cache.py measures both,
benchmarks/pixelcnn_cache.py the column window against the whole row up to the pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import GenerativeModel, classes
from genzoo.models.distributions import nats_to_bits_per_dim
from genzoo.models.layers import guidance_labels, guided_logits, sample_categorical
from genzoo.rules import Fraction, Range

LEVELS = 256  # 8-bit sub-pixel values


def gate(a: torch.Tensor) -> torch.Tensor:
    """tanh(a_f) * sigmoid(a_g), the halves of the channel dimension (eq. 2)."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row r receives row r - 1 (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Column c receives column c - 1 (zeros in column 0)."""
    return F.pad(x, (1, 0))[..., :-1]


class GatedLayer(nn.Module):
    """One layer of both stacks (paper Fig. 2). `first` is mask A: no residual, the current pixel excluded."""

    def __init__(self, c_in: int, width: int, kernel: int, cond_dim: int, first: bool):
        super().__init__()
        self.p, self.first = kernel // 2, first
        self.v_conv = nn.Conv2d(c_in, 2 * width, (kernel // 2 + 1, kernel))
        self.h_conv = nn.Conv2d(c_in, 2 * width, (1, kernel // 2 + 1))
        self.v_to_h = nn.Conv2d(2 * width, 2 * width, 1)
        self.h_out = nn.Conv2d(width, width, 1)
        self.cond = nn.Linear(cond_dim, 4 * width, bias=False) if cond_dim else None

    def vertical(self, v: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """v (B, c_in, R + p, W), already padded with p rows on top -> pre-activation (B, 2F, R, W);
        output row r sees input rows r - p .. r."""
        a = self.v_conv(F.pad(v, (self.p, self.p, 0, 0)))
        if cond is not None:
            a = a + self.cond(cond)[:, : a.shape[1], None, None]
        return a

    def horizontal(self, h: torch.Tensor, v_above: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """h (B, c_in, R, W') and the vertical pre-activation of the row above (B, 2F, R, W') -> (B, F, R, W');
        column c sees columns c - p .. c (c - p - 1 .. c - 1 for mask A)."""
        h_in = shift_right(h) if self.first else h
        a = self.h_conv(F.pad(h_in, (self.p, 0))) + self.v_to_h(v_above)
        if cond is not None:
            a = a + self.cond(cond)[:, a.shape[1]:, None, None]
        out = self.h_out(gate(a))
        return out if self.first else h + out


class PixelCNN(GenerativeModel):
    """The family: gated layers over the causal past, a 256-way head per sub-pixel, exact bits/dim."""

    likelihood = "exact"  # log_likelihood is -log2 p(x) / D

    def __init__(self, cfg: PixelCNNConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        if cfg.kernel % 2 == 0:
            raise ValueError(f"model.kernel must be odd, got {cfg.kernel}")
        C = image_shape[0]
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = classes(cfg, num_classes)
        width = cfg.channels
        self.label_emb = nn.Embedding(self.num_classes + 1, width) if self.num_classes else None  # + the null label
        cond_dim = width if self.num_classes else 0
        self.layers = nn.ModuleList(GatedLayer(C if i == 0 else width, width, cfg.kernel, cond_dim, first=i == 0)
                                    for i in range(cfg.layers))
        # output head: context (B, F) -> C groups of `head` units, each plus the current pixel's earlier channels
        self.head_in = nn.Conv2d(width, C * cfg.head, 1)
        self.head_x = nn.Conv2d(C, C * cfg.head, 1) if C > 1 else None
        mask = (torch.arange(C)[None, :] < torch.arange(C)[:, None]).float()  # (C_out group, C_in): in < out
        self.register_buffer("head_mask", mask.repeat_interleave(cfg.head, 0)[:, :, None, None], persistent=False)
        self.head_out = nn.Conv2d(C * cfg.head, C * LEVELS, 1, groups=C)

    # -- the network ----------------------------------------------------------------------
    def _cond(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        y = self.class_labels(labels, n)
        return None if y is None else self.label_emb(y)  # (n, F)

    def head(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Context h (B, F, R, W) and the pixels x (B, C, R, W) -> logits (B, C, 256, R, W)."""
        z = self.head_in(F.relu(h))  # (B, C * head, R, W)
        if self.head_x is not None:
            z = z + F.conv2d(x, self.head_x.weight * self.head_mask, self.head_x.bias)
        logits = self.head_out(F.relu(z))  # (B, C * 256, R, W)
        return logits.view(x.shape[0], x.shape[1], LEVELS, *x.shape[2:])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> logits (B, C, 256, H, W); logits[:, c, :, i, j] sees only earlier sub-pixels."""
        cond = self._cond(labels, x.shape[0])
        v = h = x
        for layer in self.layers:
            v_pre = layer.vertical(F.pad(v, (0, 0, layer.p, 0)), cond)  # (B, 2F, H, W)
            h = layer.horizontal(h, shift_down(v_pre), cond)  # (B, F, H, W)
            v = gate(v_pre)
        return self.head(h, x)

    # -- the family contract --------------------------------------------------------------
    def parameters_for(self, phase: str):
        return self.parameters()

    def _nll_nats(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """-log p(x | y) per sub-pixel, (B, C, H, W), in nats."""
        target = torch.round((x + 1) * 127.5).long().clamp(0, LEVELS - 1)  # (B, C, H, W) in 0..255
        logits = self(x, labels)  # (B, C, 256, H, W)
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        y = self.dropped_labels(batch.labels, batch.images.shape[0])  # label dropout for guidance
        bpd = nats_to_bits_per_dim(self._nll_nats(batch.images, y).mean())
        return {"loss": bpd, "bpd": bpd.detach()}

    @torch.no_grad()
    def log_likelihood(self, batch) -> torch.Tensor:
        """Exact bits/dim per image: -sum_i log2 p(x_i | x_<i) / D."""
        return nats_to_bits_per_dim(self._nll_nats(batch.images, batch.labels).flatten(1).mean(1))

    def network_evaluations(self, cfg_scale: float = 1.0, **knobs) -> int:
        """Sequential network passes per sample: one per sub-pixel (partial passes with the cache), twice with
        classifier-free guidance (batched as one call)."""
        guided = self.num_classes and cfg_scale != 1.0
        return math.prod(self.image_shape) * (2 if guided else 1)

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, cfg_scale: float = 1.0, cache: bool = True) -> torch.Tensor:
        C, H, W = self.image_shape
        device = self.head_out.weight.device
        labels = guidance_labels(self.class_labels(labels, n), self.num_classes, cfg_scale)  # (m,): m = 2n guided
        m = n if labels is None else labels.shape[0]
        x = torch.zeros(m, C, H, W, device=device)  # both halves of a guided batch hold the same pixels
        cond = self._cond(labels, m)

        def draw(logits, r, c, ch):  # logits (m, 256) -> write sub-pixel (ch, r, c)
            value = sample_categorical(guided_logits(logits, n, cfg_scale), generator, temperature)  # (n,)
            x[:, ch, r, c] = value.float().repeat(m // n) / 127.5 - 1

        if not cache:  # the reference: the full network for every sub-pixel
            for r in range(H):
                for c in range(W):
                    for ch in range(C):
                        draw(self(x, labels)[:, ch, :, r, c], r, c, ch)
            return x[:n]

        p = self.cfg.kernel // 2
        v_in = [x] + [x.new_zeros(m, self.cfg.channels, H, W) for _ in self.layers[1:]]  # each layer's vertical input
        v_above = [x.new_zeros(m, 2 * self.cfg.channels, 1, W) for _ in self.layers]  # pre-activation of row r - 1
        h_in = [None] + [x.new_zeros(m, self.cfg.channels, 1, W) for _ in self.layers[1:]]  # horizontal inputs, row r
        for r in range(H):
            if r > 0:  # row r - 1 is final: run the vertical stack on it, layer by layer
                for i, layer in enumerate(self.layers):
                    rows = v_in[i][:, :, max(0, r - 1 - p):r]  # (n, c_in, <= p + 1, W)
                    v_above[i] = layer.vertical(F.pad(rows, (0, 0, p + 1 - rows.shape[2], 0)), cond)  # (n, 2F, 1, W)
                    if i + 1 < len(self.layers):
                        v_in[i + 1][:, :, r - 1] = gate(v_above[i])[:, :, 0]
            for c in range(W):  # horizontal stack at column c, from the window of columns it sees
                lo = max(0, c - p - 1)  # layer i at c sees layer i - 1 at c - p .. c (c - p - 1 .. c - 1: mask A)
                for i, layer in enumerate(self.layers):
                    h_row = x[:, :, r:r + 1] if i == 0 else h_in[i]  # (n, c_in, 1, W): layer i's input row
                    h = layer.horizontal(h_row[..., lo:c + 1], v_above[i][..., lo:c + 1], cond)[..., -1:]
                    if i + 1 < len(self.layers):
                        h_in[i + 1][..., c:c + 1] = h  # (n, F, 1, 1): final, later columns only read it
                for ch in range(C):
                    draw(self.head(h, x[:, :, r:r + 1, c:c + 1])[:, ch, :, 0, 0], r, c, ch)
        return x[:n]


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class PixelCNNConfig:
    channels: Annotated[int, Range("[1, 4096]")] = 32  # width of both stacks
    # gated layers; each widens the receptive field by kernel // 2 rows and columns
    layers: Annotated[int, Range("[1, 128]")] = 8
    kernel: Annotated[int, Range("[1, 31]")] = 3  # odd
    head: Annotated[int, Range("[1, 4096]")] = 64  # hidden width of the output head, per sub-pixel
    class_cond: bool = False  # a class embedding biases every gate (eq. 4)
    p_uncond: Fraction = 0.1  # label dropout for classifier-free guidance


@dataclass
class SamplerConfig:
    temperature: Annotated[float, Range("[0, 100]")] = 1.0  # softmax(logits / temperature); 0 = greedy
    cfg_scale: Annotated[float, Range("[0, 100]")] = 1.0  # classifier-free guidance; 1 = conditional model as trained
    cache: bool = True  # reuse finished rows of the vertical stack (same samples, much faster)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"channels": 8, "layers": 3, "head": 16},
             "train": {"steps": 20, "batch_size": 16, "lr": 1e-2, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 4}},
    # real MNIST, class-conditional: 32k images (1/2 epoch) in many small steps of 8, since at this budget
    # the number of steps is what counts (README)
    "quick": {"model": {"channels": 32, "layers": 6, "kernel": 5, "head": 64, "class_cond": True},
              "train": {"steps": 4000, "batch_size": 8, "lr": 5e-3, "warmup_steps": 50, "ema_decay": 0.99,
                        "log_every": 50, "sample_every": 0, "ckpt_every": 1000, "n_grid": 100}},
    # one GPU: MNIST / Fashion-MNIST
    "standard": {"model": {"channels": 128, "layers": 12, "kernel": 5, "head": 256},
                 "train": {"steps": 40000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 500, "ema_decay": 0.999,
                           "sample_every": 5000, "ckpt_every": 2500}},
    # Gated PixelCNN on CIFAR-10 (van den Oord et al. 2016, Table 1), to set beside its published bits/dim:
    # 20 layers, 384 feature maps, 5x5 kernels (Sec. 3.1); RMSProp in the paper, AdamW here.
    "paper": {"model": {"channels": 384, "layers": 20, "kernel": 5, "head": 1024},
              "data": {"dataset": "cifar10"},
              "train": {"steps": 300000, "batch_size": 64, "lr": 3e-4, "warmup_steps": 1000, "ema_decay": 0.9995,
                        "sample_every": 10000, "ckpt_every": 5000, "n_grid": 16}},
}


DESCRIPTION = "Gated PixelCNN: 256-way softmax, exact bits/dim, class-conditional option"
Model, Config = PixelCNN, PixelCNNConfig
