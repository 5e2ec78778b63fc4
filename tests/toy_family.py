"""A deterministic family (no noise in its loss) for tests where floating-point equality matters."""

import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from genzoo.contract import GenerativeModel
from genzoo.registry import FAMILIES, Family


@dataclass
class ToyConfig:
    width: int = 4
    class_cond: bool = False


@dataclass
class ToySampler:
    pass


class Toy(GenerativeModel):
    """A two-conv autoencoder with an MSE loss: the gradient is a deterministic function of the batch."""

    phases = ("main",)

    def __init__(self, cfg, image_shape, num_classes=0):
        super().__init__()
        self.num_classes, self.image_shape = 0, image_shape
        C = image_shape[0]
        self.enc = nn.Conv2d(C, cfg.width, 3, padding=1)
        self.dec = nn.Conv2d(cfg.width, C, 3, padding=1)

    def parameters_for(self, phase):
        return self.parameters()

    def loss(self, batch, phase="main"):
        recon = self.dec(torch.tanh(self.enc(batch.images)))
        return {"loss": (recon - batch.images).pow(2).mean()}

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None):
        device = self.dec.weight.device
        z = torch.randn(n, self.enc.out_channels, *self.image_shape[1:], generator=generator, device=device)
        return torch.tanh(self.dec(z))


# the names a family module gives the registry (genzoo.contract.MODULE_NAMES)
DESCRIPTION = "test-only deterministic autoencoder"
Model, Config, SamplerConfig = Toy, ToyConfig, ToySampler
PRESETS = {"tiny": {"train": {"steps": 4, "batch_size": 16, "lr": 1e-2, "warmup_steps": 2, "log_every": 1,
                              "sample_every": 0, "ckpt_every": 100, "n_grid": 4}}}
TOY = Family.from_module("toy", sys.modules[__name__])


def register():
    FAMILIES["toy"] = TOY
