"""A noise-conditional classifier for classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs
on Image Synthesis", §4 and Algorithms 1-2).

p_phi(y | x_t, t) is trained on images noised by the diffusion process, x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps at t ~ U{0..T-1}, with the time as an input (its embedding added in every residual
block), by cross-entropy on the labels. At sampling, its gradient steers an eps-prediction sampler:

    eps_hat'(x_t, t) = eps_hat(x_t, t) - s sqrt(1 - alpha_bar_t) grad_{x_t} log p_phi(y | x_t, t)

which is the score of p(x_t) p_phi(y | x_t)^s: s = 0 is the model unguided, s > 1 sharpens the class (the
paper's "classifier scale"). It works with any sampler that reads (x0_hat, eps_hat) (DDIM, DPM-Solver++,
ancestral), on an unconditional or a conditional model, and with classifier-free guidance at once
(`GaussianDiffusion.classifier_guided`, `sampler.classifier=RUN sampler.classifier_scale=s`).

The classifier must see the noise levels of the model it guides: its `T` and `schedule` are checked against the
diffusion model's when it is used. It is a component (`genzoo train noisy-classifier`), not a generator.
Network: the encoder half of a small U-Net (conv, residual blocks with the time embedding, strided halvings),
then GroupNorm, SiLU, global average pooling and a linear layer to the K logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import Component
from genzoo.errors import ConfigError
from genzoo.models.diffusion.process import GaussianDiffusion
from genzoo.models.layers import Downsample, ResBlock, group_norm, halvings, timestep_embedding
from genzoo.rules import Range


class NoisyClassifier(Component):
    """p_phi(y | x_t, t): logits (B, K) of noised images at diffusion time t."""

    def __init__(self, cfg: NoisyClassifierConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        if not num_classes:
            raise ConfigError("noisy-classifier learns the classes of its dataset: choose a dataset with labels")
        C = image_shape[0]
        halvings(image_shape, cfg.ch_mult)
        self.cfg, self.image_shape, self.num_classes = cfg, tuple(image_shape), num_classes
        self.process = GaussianDiffusion(cfg.T, cfg.schedule)  # only q(x_t | x_0) is used
        widths = [cfg.channels * m for m in cfg.ch_mult]
        E = 4 * widths[0]  # time embedding width
        self.t_mlp = nn.Sequential(nn.Linear(widths[0], E), nn.SiLU(), nn.Linear(E, E))
        self.stem = nn.Conv2d(C, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        w_in = widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.blocks):
                self.blocks.append(ResBlock(w_in, w, E))
                w_in = w
            if i < len(widths) - 1:
                self.blocks.append(Downsample(w))
        self.head = nn.Sequential(group_norm(w_in), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(w_in, num_classes))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.t_mlp(timestep_embedding(t, self.stem.out_channels).to(x_t.dtype))  # (B, E)
        h = self.stem(x_t)  # (B, w0, H, W)
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.head(h)  # (B, K)

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        x0, y = batch.images, batch.labels
        t = torch.randint(0, self.cfg.T, (x0.shape[0],), device=x0.device)  # (B,)
        logits = self(self.process.q_sample(x0, t, torch.randn_like(x0)), t)
        return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(1) == y).float().mean()}

    def grad_log_prob(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} log p_phi(y | x_t, t), (B, C, H, W): each image's gradient of its own log-probability."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            log_p = self(x, t).float().log_softmax(1).gather(1, y.view(-1, 1)).sum()
            return torch.autograd.grad(log_p, x)[0]

    def check_process(self, process: GaussianDiffusion) -> None:
        """One line unless this classifier was trained on the noise levels of `process`."""
        if (process.T, process.schedule) != (self.cfg.T, self.cfg.schedule):
            raise ConfigError(f"this noisy classifier was trained on T={self.cfg.T}, schedule={self.cfg.schedule}; "
                              f"the model it guides uses T={process.T}, schedule={process.schedule}: train one with "
                              f"--set model.T={process.T} model.schedule={process.schedule}")


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class NoisyClassifierConfig:
    # the process whose noise it reads: that of the model it will guide (the defaults are ddpm quick's)
    T: Annotated[int, Range("[1, 100000]")] = 1000
    schedule: Literal["linear", "cosine"] = "cosine"
    channels: Annotated[int, Range("[1, 4096]")] = 32  # the first width
    ch_mult: tuple[int, ...] = (1, 2, 2)  # widths per resolution; 28x28 -> 7x7
    blocks: Annotated[int, Range("[1, 16]")] = 1  # residual blocks per resolution


@dataclass
class SamplerConfig:
    """A component draws no samples: no knobs."""


PRESETS = {
    # seconds on CPU: for tests and smoke runs
    "tiny": {"model": {"T": 50, "channels": 8, "ch_mult": (1, 2)},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "eval_every": 0}},
    # MNIST on 2 CPU cores in about 3 minutes, for the ddpm quick preset's process (T 1000, cosine)
    "quick": {"train": {"steps": 1500, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "weight_decay": 0.05, "log_every": 50, "sample_every": 0, "ckpt_every": 500,
                        "eval_every": 0}},
    # one GPU
    "standard": {"model": {"channels": 64, "blocks": 2},
                 "train": {"steps": 20000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 500,
                           "ema_decay": 0.999, "weight_decay": 0.05, "sample_every": 0, "ckpt_every": 2000,
                           "eval_every": 0}},
}


DESCRIPTION = "a time-conditioned classifier of noised images, for classifier guidance (a component, not a generator)"
Model, Config = NoisyClassifier, NoisyClassifierConfig
