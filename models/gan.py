"""DCGAN-style GAN (Radford et al. 2016) with the losses and regularisers that made GANs train.

The generator normalises with GroupNorm instead of DCGAN's BatchNorm so that its EMA (used for
every sample) is valid: BatchNorm's running statistics belong to the live weights, not the average.

Two phases for the shared trainer, each with its own optimizer:
    "disc"   max_D  E[log D(x)] + E[log(1 - D(G(z)))]       (Goodfellow et al. 2014, eq. 1), or the hinge
             loss E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018, eq. 16)
    "gen"    the non-saturating loss -E[log D(G(z))] (Goodfellow et al. 2014, Sec. 3), or -E[D(G(z))] (hinge)
Options: spectral normalisation of D (SNGAN, Miyato et al. 2018), the R1 penalty (gamma/2) E||grad_x D(x)||^2
on real data (Mescheder et al. 2018, eq. 9), and class conditioning: a label embedding concatenated to z
in G and a projection discriminator D(x, y) = psi(h) + <embed(y), h> (Miyato & Koyama 2018, eq. 3).
Two time-scale learning rates and D steps per G step are trainer settings (train.phase_lr, train.phase_repeats).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from genzoo.contract import GenerativeModel, classes
from genzoo.models.layers import group_norm
from genzoo.rules import NonNegative, Range


class Generator(nn.Module):
    """z (B, z_dim) [+ label embedding] -> x (B, C, H, W) in [-1, 1] by transposed convolutions."""

    def __init__(self, cfg: GANConfig, image_shape, emb_dim: int):
        super().__init__()
        C, H, W = image_shape
        self.h, self.w = H >> cfg.levels, W >> cfg.levels
        widths = [cfg.channels * 2 ** (cfg.levels - i) for i in range(cfg.levels + 1)]  # e.g. 128, 64, 32
        self.fc = nn.Linear(cfg.z_dim + emb_dim, widths[0] * self.h * self.w)
        # GroupNorm, not DCGAN's BatchNorm: no running statistics, so the EMA generator (whose weights
        # differ from the live ones) normalises its own activations, and a sample does not depend on its batch
        layers = [group_norm(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), group_norm(c_out), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], C, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], -1, self.h, self.w))


class Discriminator(nn.Module):
    """x (B, C, H, W) -> logit (B,), with an optional projection term for the label."""

    def __init__(self, cfg: GANConfig, image_shape, num_classes: int):
        super().__init__()
        C, H, W = image_shape
        sn = spectral_norm if cfg.d_norm == "spectral" else (lambda m: m)
        widths = [cfg.channels * 2 ** i for i in range(cfg.levels + 1)]  # e.g. 32, 64, 128
        layers = [sn(nn.Conv2d(C, widths[0], 3, padding=1)), nn.LeakyReLU(0.1)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers.append(sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)))
            if cfg.d_norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.1))
        self.net = nn.Sequential(*layers)
        features = widths[-1] * (H >> cfg.levels) * (W >> cfg.levels)
        self.out = sn(nn.Linear(features, 1))
        self.embed = sn(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.net(x).flatten(1)  # (B, c_top * h * w), as in SNGAN's "standard CNN"
        logit = self.out(h).squeeze(1)  # (B,)
        if self.embed is not None:
            logit = logit + (self.embed(y) * h).sum(1)  # projection
        return logit


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Record a forward pass through `module` with no gradient to its parameters (they stay in the graph's path)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class GAN(GenerativeModel):
    """The family: generator and discriminator, one optimizer phase each."""

    phases = ("disc", "gen")

    def __init__(self, cfg: GANConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        C, H, W = image_shape
        if H % 2 ** cfg.levels or W % 2 ** cfg.levels:
            raise ValueError(f"image size {H}x{W} is not divisible by 2^{cfg.levels}; change model.levels")
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = classes(cfg, num_classes)
        emb = 32 if self.num_classes else 0
        self.label_emb = nn.Embedding(self.num_classes, emb) if self.num_classes else None
        self.G = Generator(cfg, image_shape, emb)
        self.D = Discriminator(cfg, image_shape, self.num_classes)

    def parameters_for(self, phase: str):
        if phase == "disc":
            return self.D.parameters()
        if phase == "gen":
            return [*self.G.parameters(), *([] if self.label_emb is None else self.label_emb.parameters())]
        raise ValueError(f"unknown phase {phase!r}; phases are {self.phases}")

    def generate(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.label_emb is not None:
            z = torch.cat([z, self.label_emb(y)], dim=1)  # (B, z_dim + emb)
        return self.G(z)

    def loss(self, batch, phase: str) -> dict[str, torch.Tensor]:
        x = batch.images
        B = x.shape[0]
        y = self.class_labels(batch.labels, B)
        z = torch.randn(B, self.cfg.z_dim, device=x.device)
        if phase == "disc":
            with torch.no_grad():
                fake = self.generate(z, y)
            if self.cfg.r1_gamma:
                x = x.detach().requires_grad_(True)
            d_real, d_fake = self.D(x, y), self.D(fake, y)
            if self.cfg.loss == "hinge":
                loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
                loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            out = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
                   "d_acc": 0.5 * ((d_real > 0).float().mean() + (d_fake < 0).float().mean()).detach()}
            if self.cfg.r1_gamma:
                (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                loss = loss + 0.5 * self.cfg.r1_gamma * r1
                out["r1"] = r1.detach()
            return {"loss": loss, **out}
        if phase == "gen":
            with frozen(self.D):  # gradients flow through D to G, but not into D's parameters
                d_fake = self.D(self.generate(z, y), y)
            loss = -d_fake.mean() if self.cfg.loss == "hinge" else F.softplus(-d_fake).mean()
            return {"loss": loss, "d_fake": d_fake.detach().mean()}
        raise ValueError(f"unknown phase {phase!r}; phases are {self.phases}")

    def network_evaluations(self, **knobs) -> int:
        return 1

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               truncation: float = 1.0) -> torch.Tensor:
        device = self.G.fc.weight.device
        z = truncation * torch.randn(n, self.cfg.z_dim, generator=generator, device=device)  # (n, z_dim)
        return self.generate(z, self.class_labels(labels, n)).clamp(-1, 1)


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class GANConfig:
    z_dim: Annotated[int, Range("[1, 4096]")] = 64
    channels: Annotated[int, Range("[1, 4096]")] = 32  # G's last / D's first width; widths double per level
    # x2 upsamplings in G (and downsamplings in D): images start at H / 2^levels
    levels: Annotated[int, Range("[1, 8]")] = 2
    loss: Literal["ns", "hinge"] = "ns"
    d_norm: Literal["spectral", "batch", "none"] = "spectral"
    r1_gamma: NonNegative = 0.0  # weight of the R1 penalty on real data; 0 = off
    class_cond: bool = False


@dataclass
class SamplerConfig:
    truncation: Annotated[float, Range("(0, 100]")] = 1.0  # z ~ N(0, truncation^2 I); < 1 trades diversity for fidelity


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"z_dim": 16, "channels": 8},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-4, "beta1": 0.5, "warmup_steps": 0,
                       "schedule": "constant", "ema_decay": 0.9, "grad_clip": 0.0, "log_every": 5,
                       "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # real MNIST on 2 CPU cores in under five minutes: hinge loss, Adam 2e-4 beta1 0.5, and the R1 penalty
    # instead of spectral norm (with SN the conditional model collapsed within each class: benchmarks/README.md)
    "quick": {"model": {"z_dim": 64, "channels": 16, "levels": 2, "loss": "hinge", "d_norm": "none",
                        "r1_gamma": 10.0},
              "train": {"steps": 2000, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "warmup_steps": 0,
                        "schedule": "constant", "ema_decay": 0.999, "grad_clip": 0.0, "sample_every": 500,
                        "ckpt_every": 500, "eval_every": 250}},
    # one GPU, MNIST / Fashion-MNIST / CIFAR-10: hinge + SN with two time-scales (SNGAN / TTUR settings)
    "standard": {"model": {"z_dim": 128, "channels": 64, "levels": 2, "loss": "hinge", "d_norm": "spectral"},
                 "train": {"steps": 50000, "batch_size": 64, "lr": 2e-4, "phase_lr": (4e-4, 1e-4), "beta1": 0.0,
                           "beta2": 0.9, "warmup_steps": 0, "schedule": "constant", "ema_decay": 0.999,
                           "grad_clip": 0.0, "sample_every": 2500, "ckpt_every": 2500}},
    # DCGAN on CIFAR-10 (Radford et al. 2016; 4x4 -> 32x32, widths 512..64, BN in both nets, non-saturating,
    # Adam 2e-4 beta1 0.5, batch 128), to set beside a published reimplementation's FID
    "paper": {"model": {"z_dim": 100, "channels": 64, "levels": 3, "loss": "ns", "d_norm": "batch"},
              "data": {"dataset": "cifar10"},
              "train": {"steps": 50000, "batch_size": 128, "lr": 2e-4, "beta1": 0.5, "warmup_steps": 0,
                        "schedule": "constant", "ema_decay": 0.999, "grad_clip": 0.0, "sample_every": 2500,
                        "ckpt_every": 2500}},
}


DESCRIPTION = "DCGAN: non-saturating or hinge loss, spectral norm, R1, projection discriminator"
Model, Config = GAN, GANConfig
