"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning") with an EMA codebook.

    z_e = E(x)                                   (B, D, h, w) continuous encoder output
    k   = argmin_j ||z_e - e_j||                 (B, h, w) token grid, eq. 1
    z_q = e_k,  x_hat = G(z_q)                   decoder
    L   = ||x - x_hat||^2 + beta ||z_e - sg(e_k)||^2          eq. 3 without the codebook term

The decoder's gradient is copied straight through the quantiser to the encoder (Sec. 3.2). The
codebook is not learned by gradient: it is an exponential moving average of the encoder outputs
assigned to each code (App. A.1, eqs. 6-8), with Laplace smoothing of the counts:
    N_j <- gamma N_j + (1 - gamma) n_j,    m_j <- gamma m_j + (1 - gamma) sum_{i: k_i = j} z_e_i,    e_j = m_j / N_j
A code whose average count per batch N_j falls below `restart_threshold` is dead: it is re-initialised
from a random encoder output of the current batch (as in Jukebox, Dhariwal et al. 2020, Sec. 2.2).
The codebook and its statistics are buffers, updated in `loss()` in training mode only.
Logged: `perplexity` (exp of the entropy of the batch's code usage; K when all codes are used equally)
and `usage` (the fraction of the codebook used by the batch).

Sampling: a VQ-VAE alone has no learned prior. `sample` draws every token i.i.d. from the codebook's
usage frequencies (a unigram prior: a baseline that shows texture, not digits; per class when
class-conditional). The learned prior is the `transformer` family trained on this run's tokens:
`genzoo train transformer --set model.autoencoder=RUN_DIR`.

For second stages: `encode_tokens(images) -> (B, h, w)` and `decode_tokens(tokens) -> images`; for
latent diffusion `encode_latents(images) -> z_e` (continuous, before quantisation) and `decode_latents(z)`,
which snaps z to the nearest codes first (the "VQ-reg" use of Rombach et al. 2022, Sec. 3.1).

The trainer's EMA copies buffers from the live model, so the EMA model carries the live codebook
with EMA-averaged encoder and decoder weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import GenerativeModel, classes
from genzoo.models.layers import ResBlock, Upsample, conv_encoder, group_norm, halvings
from genzoo.rules import Decay, Multipliers, NonNegative, Range


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA codebook and dead-code restarts. All state is buffers."""

    def __init__(self, size: int, dim: int, decay: float, restart_threshold: float, eps: float = 1e-5):
        super().__init__()
        self.size, self.decay, self.threshold, self.eps = size, decay, restart_threshold, eps
        self.register_buffer("embed", torch.randn(size, dim))  # e_j, (K, D)
        self.register_buffer("cluster_size", torch.ones(size))  # N_j, EMA of the count per batch
        self.register_buffer("embed_sum", self.embed.clone())  # m_j, EMA of the sum of assigned z_e
        self.register_buffer("initialized", torch.tensor(False))  # codes start from the first batch's z_e
        self._ready = False

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> (N,) index of the nearest code (squared Euclidean distance)."""
        d = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.embed.t() + self.embed.pow(2).sum(1)  # (N, K)
        return d.argmin(1)

    @staticmethod
    def _random_rows(z: torch.Tensor, n: int) -> torch.Tensor:
        return z[torch.randint(0, z.shape[0], (n,), device=z.device)]

    @torch.no_grad()
    def update(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """EMA codebook step (App. A.1) on encoder outputs z (N, D) with codes idx (N,); returns the number
        of restarted codes."""
        z = z.float()  # the statistics stay fp32 under bf16 autocast
        if not self._ready:  # a host sync only until the first batch has initialised the codes
            self._ready = bool(self.initialized)
            if not self._ready:
                self.embed.copy_(self._random_rows(z, self.size))
                self.embed_sum.copy_(self.embed)
                self.cluster_size.fill_(1.0)
                self.initialized.fill_(True)
                self._ready = True
                return torch.zeros((), device=z.device)
        onehot = F.one_hot(idx, self.size).type_as(z)  # (N, K)
        with torch.autocast(z.device.type, enabled=False):  # fp32 statistics under bf16 autocast
            n, s = onehot.sum(0), onehot.t() @ z  # (K,), (K, D)
        if dist.is_available() and dist.is_initialized():  # every rank sees the global statistics
            dist.all_reduce(n), dist.all_reduce(s)
            n, s = n / dist.get_world_size(), s / dist.get_world_size()
        self.cluster_size.lerp_(n, 1 - self.decay)  # eq. 6
        self.embed_sum.lerp_(s, 1 - self.decay)  # eq. 7
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.size * self.eps) * total  # Laplace smoothing
        self.embed.copy_(self.embed_sum / smoothed[:, None])  # eq. 8
        dead = (self.cluster_size < self.threshold)[:, None]  # (K, 1), no host sync
        fresh = self._random_rows(z, self.size)  # (K, D)
        self.embed.copy_(torch.where(dead, fresh, self.embed))
        self.embed_sum.copy_(torch.where(dead, fresh, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead[:, 0], 1.0, self.cluster_size))
        return dead.sum().float()


class VQVAE(GenerativeModel):
    """The family: conv encoder, EMA-codebook quantiser, conv decoder; a unigram prior to sample."""

    reconstructs = True

    def __init__(self, cfg: VQVAEConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        C, H, W = image_shape
        down = halvings(image_shape, cfg.ch_mult)
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = classes(cfg, num_classes)
        self.latent_shape, self.codebook_size, self.code_dim = (H // down, W // down), cfg.codebook_size, cfg.code_dim
        widths = [cfg.channels * m for m in cfg.ch_mult]

        self.encoder = nn.Sequential(*conv_encoder(C, widths, cfg.blocks), group_norm(widths[-1]), nn.SiLU(),
                                     nn.Conv2d(widths[-1], cfg.code_dim, 1))

        dec = [nn.Conv2d(cfg.code_dim, widths[-1], 3, padding=1), nn.SiLU()]
        for i in reversed(range(len(widths))):
            dec += [ResBlock(widths[i], widths[i]) for _ in range(cfg.blocks)]
            if i > 0:
                dec += [Upsample(widths[i], widths[i - 1]), nn.SiLU()]
        self.decoder = nn.Sequential(*dec, group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], C, 3, padding=1))

        self.vq = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.decay, cfg.restart_threshold)
        if self.num_classes:  # EMA of each class's code counts, for the per-class unigram prior
            self.register_buffer("class_usage", torch.ones(self.num_classes, cfg.codebook_size))

    # -- the autoencoder ------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> z_e (B, D, h, w), the continuous encoder output."""
        return self.encoder(images)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, D, h, w) -> (z_q (B, D, h, w), tokens (B, h, w))."""
        B, D, h, w = z.shape
        idx = self.vq.codes(z.permute(0, 2, 3, 1).reshape(-1, D)).view(B, h, w)
        return self.embed_tokens(idx), idx

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 -> z_q (B, D, h, w)."""
        return F.embedding(tokens, self.vq.embed).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h, w) int64 code indices."""
        return self.quantize(self.encode(images))[1]

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """z (B, D, h, w) -> images (B, C, H, W) clamped to [-1, 1]; `quantize` snaps z to its nearest codes."""
        if quantize:
            z = self.quantize(z)[0]
        return self.decoder(z).clamp(-1, 1)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 -> images (B, C, H, W) in [-1, 1]."""
        return self.decoder(self.embed_tokens(tokens)).clamp(-1, 1)

    # -- the latent space of a second stage (ldm): z_e before quantisation ("VQ-reg") ------------
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> z_e (B, D, h, w)."""
        return self.encode(images)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> images (B, C, H, W) in [-1, 1], through the nearest codes."""
        return self.decode(z, quantize=True)

    # -- the family contract --------------------------------------------------------------
    def parameters_for(self, phase: str):
        return self.parameters()  # encoder and decoder; the codebook is buffers, updated by EMA

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        x = batch.images
        z_e = self.encode(x)  # (B, D, h, w)
        z_q, idx = self.quantize(z_e.detach())
        commit = F.mse_loss(z_e, z_q)  # ||z_e - sg(e)||^2 (z_q carries no gradient)
        z_st = z_e + (z_q - z_e).detach()  # straight-through estimator: dL/dz_q is copied to z_e
        recon = F.mse_loss(self.decoder(z_st), x)
        restarted = torch.zeros((), device=x.device)
        if self.training:
            flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (B h w, D)
            restarted = self.vq.update(flat, idx.flatten())
            if self.num_classes and batch.labels is not None:
                counts = F.one_hot(batch.labels, self.num_classes).float().t() @ \
                    F.one_hot(idx.flatten(1), self.codebook_size).float().sum(1)  # (classes, K)
                self.class_usage.lerp_(counts, 1 - self.cfg.decay)
        p = torch.bincount(idx.flatten(), minlength=self.codebook_size).float() / idx.numel()  # (K,)
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())
        return {"loss": recon + self.cfg.beta * commit, "recon": recon.detach(), "commit": commit.detach(),
                "perplexity": perplexity, "usage": (p > 0).float().mean(), "restarted": restarted}

    @torch.no_grad()
    def reconstruct(self, batch) -> torch.Tensor:
        return self.decode(self.encode(batch.images))

    def network_evaluations(self, **knobs) -> int:
        """Decoder passes per sample (tokens are drawn i.i.d.)."""
        return 1

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """Baseline without a learned prior: tokens i.i.d. from the codebook's usage frequencies."""
        h, w = self.latent_shape
        if self.num_classes:
            if labels is None:
                raise ValueError("this VQ-VAE is class-conditional: pass labels")
            usage = self.class_usage[labels.view(n)]  # (n, K)
        else:
            usage = self.vq.cluster_size.expand(n, -1)  # (n, K)
        probs = usage.clamp(min=1e-8) ** (1.0 / temperature)
        tokens = torch.multinomial(probs, h * w, replacement=True, generator=generator)  # (n, h * w)
        return self.decode_tokens(tokens.view(n, h, w))


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class VQVAEConfig:
    channels: Annotated[int, Range("[1, 4096]")] = 32  # width at full resolution
    ch_mult: Multipliers = (1, 2, 2)  # width multiplier per resolution; len-1 downsamplings (28 -> 7)
    blocks: Annotated[int, Range("[0, 16]")] = 1  # residual blocks per resolution
    code_dim: Annotated[int, Range("[1, 4096]")] = 16  # D, the dimension of a code vector
    codebook_size: Annotated[int, Range("[2, 65536]")] = 256  # K
    beta: Annotated[float, Range("[0, 1000]")] = 0.25  # commitment weight (paper Sec. 4: 0.25)
    decay: Decay = 0.99  # gamma of the EMA codebook (App. A.1: 0.99)
    restart_threshold: NonNegative = 1.0  # codes used fewer times per batch (EMA) are restarted; 0 = never
    class_cond: bool = False  # only the baseline unigram prior is per class; the autoencoder is unconditional


@dataclass
class SamplerConfig:
    temperature: Annotated[float, Range("(0, 100]")] = 1.0  # unigram prior p_j ~ usage_j^(1 / temperature)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"channels": 8, "ch_mult": (1, 2), "blocks": 0, "code_dim": 4, "codebook_size": 16},
             "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 4}},
    # real MNIST in minutes on CPU: 7x7 token grids (a short sequence for the transformer prior),
    # sharp reconstructions (README)
    "quick": {"model": {"channels": 32, "ch_mult": (1, 2, 2), "blocks": 0, "code_dim": 16, "codebook_size": 128},
              "train": {"steps": 700, "batch_size": 32, "lr": 2e-3, "warmup_steps": 50, "ema_decay": 0.99,
                        "log_every": 25, "sample_every": 0, "ckpt_every": 250}},
    # one GPU: MNIST / Fashion-MNIST / CIFAR-10
    "standard": {"model": {"channels": 128, "ch_mult": (1, 2, 2), "blocks": 2, "code_dim": 64, "codebook_size": 512},
                 "train": {"steps": 30000, "batch_size": 128, "lr": 3e-4, "warmup_steps": 500, "ema_decay": 0.999,
                           "sample_every": 2500, "ckpt_every": 2500}},
}


DESCRIPTION = "VQ-VAE: EMA codebook, commitment loss, dead-code restart; prior = transformer"
Model, Config = VQVAE, VQVAEConfig
