"""Convolutional Gaussian VAE (Kingma & Welling 2014) with a discretized-logistic decoder.

    q(z|x) = N(mu(x), diag sigma(x)^2)      encoder
    p(z)   = N(0, I)                         prior
    p(x|z) = prod_i DiscLogistic(x_i; m_i(z), s_i(z))   decoder, a proper pmf over 8-bit values

ELBO (eq. 3 of the paper):  log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z)).
With beta != 1 the KL term is weighted (beta-VAE, Higgins et al. 2017); the reported bound
always uses beta = 1. `log_likelihood(k > 1)` gives the importance-weighted bound
(IWAE, Burda et al. 2016, eq. 8), which tightens as k grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn

from genzoo.contract import GenerativeModel, classes
from genzoo.models.distributions import (discretized_logistic_log_prob, discretized_logistic_sample,
                                         nats_to_bits_per_dim, quantize)
from genzoo.models.layers import ResBlock, conv_encoder, group_norm, halvings
from genzoo.rules import Multipliers, Range


class VAE(GenerativeModel):
    """The family: a conv encoder to q(z|x), a conv decoder to p(x|z), optionally class-conditional."""

    reconstructs = True
    likelihood = "bound (ELBO)"  # what log_likelihood returns: an upper bound on bits/dim

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        C, H, W = image_shape
        down = halvings(image_shape, cfg.ch_mult)
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = classes(cfg, num_classes)
        widths = [cfg.channels * m for m in cfg.ch_mult]
        self.h, self.w, c_top = H // down, W // down, widths[-1]
        emb = 64 if self.num_classes else 0
        self.label_emb = nn.Embedding(self.num_classes, emb) if self.num_classes else None

        # encoder: x (B, C, H, W) -> h (B, c_top, H/down, W/down) -> (mu, logvar)
        self.encoder = nn.Sequential(*conv_encoder(C, widths, cfg.blocks))
        lc = cfg.latent_channels
        if lc:  # spatial: z (B, lc, h, w), as in the LDM autoencoders (Rombach et al. 2022)
            self.z_shape = (lc, self.h, self.w)
            self.enc_out = nn.Sequential(group_norm(c_top), nn.SiLU(), nn.Conv2d(c_top, 2 * lc, 1))
            self.dec_in = nn.Conv2d(lc, c_top, 3, padding=1)
        else:  # a vector: z (B, z_dim)
            self.z_shape = (cfg.z_dim,)
            self.enc_out = nn.Sequential(group_norm(c_top), nn.SiLU(), nn.Flatten(),
                                         nn.Linear(c_top * self.h * self.w, 2 * cfg.z_dim))
            self.dec_in = nn.Linear(cfg.z_dim, c_top * self.h * self.w)
        self.enc_label = nn.Linear(emb, 2 * self.z_shape[0]) if emb else None
        self.dec_label = nn.Linear(emb, c_top * self.h * self.w) if emb else None

        # decoder: z [+ label embedding] -> (mean, log_scale), each (B, C, H, W)
        dec = []
        for i in reversed(range(len(widths))):
            dec += [ResBlock(widths[i], widths[i]) for _ in range(cfg.blocks)]
            if i > 0:
                dec += [nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1), nn.SiLU()]
        c = widths[0]
        out_channels = 2 * C if cfg.scale == "pixel" else C
        self.decoder = nn.Sequential(*dec, group_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))
        self.log_scale = nn.Parameter(torch.zeros(1, C, 1, 1)) if cfg.scale == "shared" else None

    # -- the networks ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.enc_out(self.encoder(x))  # (B, 2 * z_dim) or (B, 2 * lc, h, w)
        if self.enc_label is not None:
            label = self.enc_label(self.label_emb(y))  # (B, 2 * z_shape[0])
            stats = stats + label.view(*label.shape, *([1] * (stats.dim() - 2)))
        mu, logvar = stats.chunk(2, dim=1)  # z_shape each
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dec_in(z).view(z.shape[0], -1, self.h, self.w)  # (B, c_top, h, w)
        if self.dec_label is not None:
            h = h + self.dec_label(self.label_emb(y)).view_as(h)
        out = self.decoder(h)
        if self.log_scale is not None:  # sigma-VAE (Rybkin et al. 2021): one learned scale per channel
            mean, log_scale = out, self.log_scale.expand_as(out)  # (B, C, H, W)
        else:
            mean, log_scale = out.chunk(2, dim=1)  # (B, C, H, W) each
        return mean, log_scale.clamp(min=self.cfg.min_log_scale)

    # -- the latent space of a second stage (ldm): unconditional, z = the posterior mean -----------
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> mu (B, *z_shape)."""
        return self.encode(images, None)[0]

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, *z_shape) -> the decoder mean (B, C, H, W), unclamped."""
        return self.decode(z, None)[0]

    # -- the family contract --------------------------------------------------------------
    def parameters_for(self, phase: str):
        return self.parameters()

    def _elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-image log p(x|z) and KL in nats, with one reparameterised z ~ q(z|x)."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation trick
        mean, log_scale = self.decode(z, y)
        log_px_z = discretized_logistic_log_prob(x, mean, log_scale).flatten(1).sum(1)  # (B,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)  # (B,) closed form, K&W App. B
        return {"log_px_z": log_px_z, "kl": kl}

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        x, y = batch.images, self.class_labels(batch.labels, batch.images.shape[0])
        t = self._elbo_terms(x, y)
        D = x[0].numel()
        recon, kl = nats_to_bits_per_dim(-t["log_px_z"].mean(), D), nats_to_bits_per_dim(t["kl"].mean(), D)
        return {"loss": recon + self.cfg.beta * kl, "recon_bpd": recon.detach(), "kl_bpd": kl.detach(),
                "elbo_bpd": (recon + kl).detach()}

    @torch.no_grad()
    def log_likelihood(self, batch, k: int = 1) -> torch.Tensor:
        """Bits/dim per image, an upper bound on -log2 p(x) / D: the ELBO (k = 1) or the IWAE bound (k > 1)."""
        x, y = batch.images, self.class_labels(batch.labels, batch.images.shape[0])
        B, D = x.shape[0], x[0].numel()
        mu, logvar = self.encode(x, y)
        std = torch.exp(0.5 * logvar)
        log_w = []
        for _ in range(k):
            eps = torch.randn_like(mu)
            z = mu + std * eps
            mean, log_scale = self.decode(z, y)
            log_px_z = discretized_logistic_log_prob(x, mean, log_scale).flatten(1).sum(1)
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)
            log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).flatten(1).sum(1)
            log_w.append(log_px_z + log_pz - log_qz)  # (B,)
        log_px = torch.logsumexp(torch.stack(log_w), dim=0) - math.log(k)  # (B,)
        return nats_to_bits_per_dim(-log_px, D)

    def network_evaluations(self, **knobs) -> int:
        """Decoder passes per sample."""
        return 1

    @torch.no_grad()
    def reconstruct(self, batch) -> torch.Tensor:
        mu, _ = self.encode(batch.images, self.class_labels(batch.labels, batch.images.shape[0]))
        mean, _ = self.decode(mu, self.class_labels(batch.labels, batch.images.shape[0]))
        return mean.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, decode: str = "mean") -> torch.Tensor:
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, *self.z_shape, generator=generator, device=device)  # (n, *z_shape)
        mean, log_scale = self.decode(z, self.class_labels(labels, n))
        if decode == "sample":
            return discretized_logistic_sample(mean, log_scale, generator)
        if decode != "mean":
            raise ValueError(f"decode must be 'mean' or 'sample', not {decode!r}")
        return quantize(mean)


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class VAEConfig:
    channels: Annotated[int, Range("[1, 4096]")] = 32  # width at full resolution
    ch_mult: Multipliers = (1, 2)  # width multiplier per resolution; len-1 downsamplings
    # residual blocks per resolution (0 = a plain strided-conv encoder/decoder)
    blocks: Annotated[int, Range("[0, 16]")] = 1
    z_dim: Annotated[int, Range("[1, 4096]")] = 16  # size of the latent vector (when latent_channels = 0)
    # > 0: a spatial latent (latent_channels, H/down, W/down), the LDM first stage
    latent_channels: Annotated[int, Range("[0, 1024]")] = 0
    beta: Annotated[float, Range("[0, 1000]")] = 1.0  # weight of the KL term in the training loss (1 = the ELBO)
    class_cond: bool = False  # condition encoder and decoder on the label
    scale: Literal["pixel", "shared"] = "pixel"  # decoder scale: per pixel, or one learned per channel (sigma-VAE)
    min_log_scale: Annotated[float, Range("[-20, 0]")] = -7.0  # floor of the decoder's log-scale (PixelCNN++)


@dataclass
class SamplerConfig:
    temperature: Annotated[float, Range("[0, 100]")] = 1.0  # z ~ N(0, temperature^2 I)
    decode: Literal["mean", "sample"] = "mean"  # decoder mean (usual figure) or a draw from p(x|z)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"channels": 8, "ch_mult": (1, 2), "blocks": 0, "z_dim": 4},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # real MNIST on 2 CPU cores in a few minutes: recognisable digits of every class, no residual blocks
    "quick": {"model": {"channels": 16, "ch_mult": (1, 2, 4), "blocks": 0, "z_dim": 16, "scale": "pixel"},
              "train": {"steps": 2100, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 500, "ckpt_every": 500}},
    # one GPU: a wider, deeper model trained longer
    "standard": {"model": {"channels": 64, "ch_mult": (1, 2, 2), "blocks": 2, "z_dim": 32},
                 "train": {"steps": 30000, "batch_size": 128, "lr": 1e-3, "warmup_steps": 500, "ema_decay": 0.999,
                           "sample_every": 2000, "ckpt_every": 2000}},
}


DESCRIPTION = "Gaussian VAE: ELBO, beta, IWAE bound, class-conditional option"
Model, Config = VAE, VAEConfig
