"""Latent diffusion (Rombach et al. 2022, "LDM"): the ddpm process in the latent space of a frozen autoencoder.

Stage 1 is a finished zoo run: a `vae` with a spatial latent (model.latent_channels > 0; z = the posterior
mean) or a `vqvae` (z = the encoder output before quantisation, and the decoder quantises: LDM's
"VQ-reg"). Both give the same two methods, `encode_latents(images) -> z` and `decode_latents(z) -> images`,
so this family never asks which of the two it holds. Stage 2 trains a denoiser, the U-Net or DiT, on

    z = latent_scale * E(x),   latent_scale = 1 / std(E(x_train))   (LDM §4.3.2: unit-variance latents)

The scale is computed from the training latents when training starts and saved in the checkpoint (a
buffer), never a literal. The trainer encodes the training set once and caches it on disk, keyed by the
autoencoder's weights (train/latents.py). `sample` draws z with any sampler and decodes D(z / scale).

    genzoo train vae --dataset mnist --preset quick --set model.latent_channels=4 --out runs/ae
    genzoo train ldm --dataset mnist --preset quick --set model.autoencoder=runs/ae --out runs/ldm
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn

from genzoo.contract import Batch, GenerativeModel, classes
from genzoo.errors import ConfigError
from genzoo.models import ddpm
from genzoo.models.ddpm import DDPM, DiffusionConfig
from genzoo.models.dit import DiT, DiTNetConfig, check_text_attention
from genzoo.models.distributions import quantize
from genzoo.models.unet import UNet, UNetConfig
from genzoo.rules import Multipliers, Range


class LatentDiffusion(GenerativeModel):
    """The family: a frozen first stage (encode, decode) and a DDPM over its scaled latents."""

    autoencoder_families = ("vae", "vqvae")
    uses_latents = True
    reconstructs = True  # the first stage's reconstruction
    process_model: type = DDPM  # the model over the latents; the flow family's LatentFlow puts RectifiedFlow here

    def __init__(self, cfg: LDMConfig, image_shape: tuple[int, int, int], num_classes: int = 0,
                 autoencoder: nn.Module | None = None, text_encoder: nn.Module | None = None):
        super().__init__()
        if autoencoder is None:
            raise ConfigError("ldm needs a first stage: train one (`genzoo train vae --set model.latent_channels=4 "
                              "--out runs/ae`, or a vqvae) and pass --set model.autoencoder=runs/ae")
        if autoencoder.num_classes:
            raise ConfigError("the autoencoder of an ldm must be unconditional (model.class_cond=false)")
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        with torch.no_grad():
            self.latent_shape = tuple(self.encode(torch.zeros(1, *image_shape)).shape[1:])  # (c, h, w)
        if len(self.latent_shape) != 3:
            raise ConfigError("this vae has a vector latent; ldm needs a spatial one: train the vae with "
                              "--set model.latent_channels=4")
        c, h, w = self.latent_shape
        K = 0 if text_encoder is not None else classes(cfg, num_classes)  # a caption replaces the label
        context = {"text_encoder": text_encoder} if text_encoder is not None else {}
        d_ctx = text_encoder.cfg.d_model if text_encoder is not None else 0
        check_text_attention(cfg)
        net = UNet(cfg, c, h, K, context_dim=d_ctx) if cfg.denoiser == "unet" else DiT(cfg, c, (h, w), K,
                                                                                        context_dim=d_ctx)
        self.diffusion = self.process_model(cfg, self.latent_shape, num_classes, net=net, **context)
        self.num_classes = self.diffusion.num_classes
        self.register_buffer("latent_scale", torch.ones(()))

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen, always in inference mode
        return self

    # -- the first stage ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> unscaled latents (B, c, h, w)."""
        return self.autoencoder.encode_latents(images)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> images in [-1, 1] on the 8-bit grid."""
        return quantize(self.autoencoder.decode_latents(z))

    @torch.no_grad()
    def set_latent_scale(self, latents: torch.Tensor) -> None:
        """1 / std of the training latents, so that the diffusion sees unit-variance data."""
        self.latent_scale.fill_(1.0 / latents.float().std().item())

    # -- the family contract --------------------------------------------------------------
    def parameters_for(self, phase: str):
        return self.diffusion.parameters_for(phase)

    @property
    def text_encoder(self) -> nn.Module | None:
        return self.diffusion.text_encoder

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        z = batch.latents if batch.latents is not None else self.encode(batch.images)
        return self.diffusion.loss(Batch(z * self.latent_scale, batch.labels, text=batch.text), phase)

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               text: torch.Tensor | None = None, **knobs) -> torch.Tensor:
        z = self.diffusion.sample_x0(n, labels=labels, generator=generator, text=text, **knobs)  # (n, c, h, w)
        return self.decode(z / self.latent_scale)

    def network_evaluations(self, **knobs) -> int:
        """Denoiser passes per sample (the single decoder pass is not counted)."""
        return self.diffusion.network_evaluations(**knobs)

    @torch.no_grad()
    def reconstruct(self, batch) -> torch.Tensor:
        """The first stage's reconstruction: the best an ldm on this autoencoder can do."""
        return self.decode(self.encode(batch.images))


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class LDMConfig(DiffusionConfig, DiTNetConfig, UNetConfig):
    """The first stage, the choice of denoiser, both denoisers' keys (`heads` is shared) and the process's."""

    autoencoder: str = ""  # the first stage: a finished vae (latent_channels > 0) or vqvae run directory
    text_encoder: str = ""  # a finished clip run: condition on captions through cross-attention (as ddpm)
    denoiser: Literal["unet", "dit"] = "unet"
    # defaults sized for 7x7 latents: the U-Net's (models/unet.py) ...
    channels: Annotated[int, Range("[1, 4096]")] = 64
    ch_mult: Multipliers = (1, 2)
    attn_res: Annotated[tuple[int, ...], Range("[1, 4096]")] = (4,)
    heads: Annotated[int, Range("[1, 64]")] = 1
    dropout: Annotated[float, Range("[0, 1)")] = 0.0
    # ... and the DiT's (models/dit.py)
    patch: Annotated[int, Range("[1, 64]")] = 1
    hidden: Annotated[int, Range("[1, 8192]")] = 128
    depth: Annotated[int, Range("[1, 128]")] = 6


@dataclass
class SamplerConfig(ddpm.SamplerConfig):
    """ddpm's knobs, without clipping: latents are not bounded like pixels."""

    clip_x0: bool = False


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"channels": 8, "ch_mult": (1,), "blocks": 1, "attn_res": (), "hidden": 32, "depth": 2,
                       "heads": 2, "T": 50},
             "sampler": {"steps": 5},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # MNIST latents of the vae quick preset with latent_channels=4 (4 x 7 x 7): no downsampling, 49 positions;
    # minutes on 2 CPU cores with either denoiser (README, notebook 05). scale_shift: the U-Net reads time, class
    # and the pooled text as adaGN's scale and shift, since a group norm of two channels per group removes most
    # of an embedding added before it (layers.ResBlock; docs/diffusion.md)
    "quick": {"model": {"channels": 64, "ch_mult": (1,), "blocks": 2, "attn_res": (7,), "hidden": 128, "depth": 6,
                        "heads": 4, "T": 1000, "schedule": "cosine", "objective": "v", "min_snr_gamma": 5.0,
                        "class_cond": True, "scale_shift": True},
              "sampler": {"name": "ddim", "steps": 50},
              "train": {"steps": 1100, "batch_size": 128, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 275, "ckpt_every": 275}},
    # one GPU; 7x7 MNIST latents cannot be halved: ch_mult (1, 2) suits 8x8 latents (CIFAR-10 at f = 4); adaGN
    # as in quick (Dhariwal & Nichol 2021's ablation found it better than adding the embedding; not measured here)
    "standard": {"model": {"channels": 128, "ch_mult": (1,), "blocks": 2, "attn_res": (7,), "dropout": 0.1,
                           "hidden": 384, "depth": 12, "heads": 4, "scale_shift": True},
                 "train": {"steps": 50000, "batch_size": 256, "lr": 2e-4, "warmup_steps": 1000, "ema_decay": 0.9999,
                           "sample_every": 5000, "ckpt_every": 5000, "eval_every": 5000}},
}


DESCRIPTION = "latent diffusion on a finished vae / vqvae run (model.autoencoder=RUN), U-Net or DiT"
Model, Config = LatentDiffusion, LDMConfig
