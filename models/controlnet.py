"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models",
arXiv:2302.05543) on a finished U-Net run (`ddpm`, or `ldm` in its latents).

The finished denoiser eps_theta stays frozen. A trainable copy of its encoder and middle block reads the noisy
input plus a control image c (an edge map, a 4x smaller image, an image with a missing part), and hands each of
its feature maps through a zero-initialised 1 x 1 convolution Z to the frozen model's skip connections and middle:

    y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2)        (paper, eq. 2)

At initialisation both Z are zero, so the controlled model is the base bit for bit, and the copy starts from
the base's weights instead of from noise: training cannot damage the base, and gradients reach the copy as soon
as Z moves (paper, Sec. 3.1). The control image passes a small convolutional encoder first (paper: 4 convs
from 512 x 512 to the 64 x 64 latent; here 28 x 28 pixels, to the 7 x 7 latents of `ldm` by two stride-2 convs).
At sampling, `control_scale` multiplies every residual (0 = the base). Classifier-free guidance keeps the control
on both branches.

    genzoo train controlnet --set model.base=RUN model.control=edges --out runs/edges
    genzoo sample runs/edges --control-from digits.npz --n 16        # controls computed from images
    genzoo sample runs/edges --control edges.png --set sampler.control_scale=0.5

Controls, computed from the images themselves (`control_image`): `edges` (the ink's one-pixel outline),
`low-res` (4 x 4 average pooling, repeated back to full size), `masked` (the lower half replaced by background:
complete the digit).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import Adapter, GenerativeModel
from genzoo.errors import ConfigError
from genzoo.models.unet import UNet, zero_
from genzoo.rules import Range

CONTROLS = ("edges", "low-res", "masked")


# ----------------------------------------------------------------------------------------
# control images, computed from images in [-1, 1]


def edges(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 1, H, W) in {-1, 1}: the outline of the ink, 1 on every ink pixel (above half
    intensity, channel mean) with a background 4-neighbour. One pixel wide, as Canny's edges are after non-maximum
    suppression: on these clean digits the same map, without its hysteresis thresholds."""
    ink = images.float().mean(1) > 0  # (B, H, W): above half intensity
    p = F.pad(ink, (1, 1, 1, 1))  # no ink outside the image
    inside = ink & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    return torch.where(ink & ~inside, 1.0, -1.0)[:, None]


def low_res(images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """(B, C, H, W) -> the same size, each factor x factor block replaced by its mean (the 4x smaller image)."""
    return F.interpolate(F.avg_pool2d(images.float(), factor, ceil_mode=True), size=images.shape[-2:],
                         mode="nearest")


def masked(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with the lower half set to the background (-1): what is left to complete."""
    out = images.float().clone()
    out[..., images.shape[-2] // 2:, :] = -1.0
    return out


def control_image(kind: str, images: torch.Tensor) -> torch.Tensor:
    """The control of `kind` computed from images in [-1, 1]."""
    return {"edges": edges, "low-res": low_res, "masked": masked}[kind](images)


def control_channels(kind: str, image_channels: int) -> int:
    return 1 if kind == "edges" else image_channels


# ----------------------------------------------------------------------------------------
# the trainable copy and the frozen model it steers


class HintEncoder(nn.Module):
    """The control image (B, c, H, W) -> features of the U-Net's first width at its input size, ending in a zero
    convolution (Z(c; Theta_z1)): convs with SiLU, one stride-2 conv per halving from image to latent size."""

    def __init__(self, c_in: int, c_out: int, halvings: int, width: int):
        super().__init__()
        layers, c = [nn.Conv2d(c_in, width, 3, padding=1), nn.SiLU()], width
        for _ in range(halvings):
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU()]
            c *= 2
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), zero_(nn.Conv2d(c, c_out, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class ControlBranch(nn.Module):
    """The trainable copy of a U-Net's embedding, encoder and middle (weights copied), with the hint encoder and one
    zero 1 x 1 convolution per skip and for the middle: (x_t, t, y, c) -> residuals for `UNet.forward(control=)`."""

    def __init__(self, unet: UNet, hint_channels: int, halvings: int, hint_width: int):
        super().__init__()
        self.copy = copy.deepcopy(unet).requires_grad_(True)
        del self.copy.up, self.copy.out  # the decoder stays the frozen model's alone
        self.hint = HintEncoder(hint_channels, unet.conv_in.out_channels, halvings, hint_width)
        self.zero = nn.ModuleList(zero_(nn.Conv2d(c, c, 1)) for c in unet.skip_channels())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y, c: torch.Tensor) -> list[torch.Tensor]:
        emb, text = self.copy.embed(t, y)
        h, hs = self.copy.encode(x_t, emb, text, hint=self.hint(c))
        return [z(f) for z, f in zip(self.zero, [*hs, h])]


class ControlledUNet(nn.Module):
    """The frozen U-Net steered by a ControlBranch: forward(x_t, t, y) as the U-Net's, reading the control image
    set in `c` (B, c, H, W) by the ControlNet model around each loss or sampling call, times `scale`."""

    def __init__(self, unet: UNet, branch: ControlBranch):
        super().__init__()
        self.unet, self.branch = unet, branch
        self.c: torch.Tensor | None = None
        self.scale = 1.0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        if self.c is None or self.scale == 0:
            return self.unet(x_t, t, y)
        c = self.c.repeat(x_t.shape[0] // self.c.shape[0], 1, 1, 1)  # guidance batches [cond; uncond]: both
        return self.unet(x_t, t, y, control=[self.scale * r for r in self.branch(x_t, t, y, c)])


# ----------------------------------------------------------------------------------------
# the run


class ControlNet(Adapter):
    """A finished ddpm or ldm run (frozen) whose U-Net is steered by a trained ControlBranch. Trains and samples
    as the base does, with a control image per sample: `loss` computes it from the batch's images,
    `sample(..., control=c, control_scale=s)` takes it."""

    def __init__(self, cfg: ControlNetConfig, image_shape: tuple[int, int, int], num_classes: int = 0, *,
                 base: GenerativeModel, base_family: str = ""):
        super().__init__(base, base_family)
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.likelihood = self.ode_likelihood = None  # the control is not part of the declared likelihood
        holder = base.diffusion if base_family == "ldm" else base  # whose `net` is the U-Net
        if not isinstance(holder.net, UNet):
            raise ConfigError(f"controlnet steers a U-Net; model.base={cfg.base} has a {type(holder.net).__name__} "
                              f"denoiser (a DiT): use a ddpm or ldm run with the U-Net")
        size = base.latent_shape[-1] if base_family == "ldm" else image_shape[-1]  # the U-Net's input size
        halvings = round(math.log2(image_shape[-1] / size))
        if size * 2 ** halvings != image_shape[-1]:
            raise ConfigError(f"controlnet halves the control image down to the U-Net's input: {image_shape[-1]} "
                              f"pixels to {size} latents is not a power of 2")
        branch = ControlBranch(holder.net, control_channels(cfg.control, image_shape[0]), halvings, cfg.hint_width)
        holder.net = ControlledUNet(holder.net, branch)
        self.controlled = holder.net

    def parameters_for(self, phase: str):
        return list(self.controlled.branch.parameters())

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        self.controlled.c, self.controlled.scale = control_image(self.cfg.control, batch.images), 1.0
        try:
            return self.base.loss(batch, phase)
        finally:
            self.controlled.c = None

    def sample(self, n: int, *, labels=None, generator=None, control: torch.Tensor | None = None,
               control_scale: float = 1.0, **knobs) -> torch.Tensor:
        """`control` (n, c, H, W) in [-1, 1]: the control image of each sample (`control_image`); None samples the
        base."""
        if control is not None and tuple(control.shape) != (n, control_channels(self.cfg.control, self.image_shape[0]),
                                                             *self.image_shape[1:]):
            raise ConfigError(f"{self.cfg.control} controls for {n} samples have shape "
                              f"(n, {control_channels(self.cfg.control, self.image_shape[0])}, "
                              f"{self.image_shape[1]}, {self.image_shape[2]}); got {tuple(control.shape)}")
        self.controlled.c = None if control is None else control.to(next(self.parameters()).device)
        self.controlled.scale = control_scale
        try:
            return self.base.sample(n, labels=labels, generator=generator, **knobs)
        finally:
            self.controlled.c, self.controlled.scale = None, 1.0


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class ControlNetConfig:
    base: str = ""  # the finished run to steer (ddpm or ldm, with the U-Net); required
    control: Literal["edges", "low-res", "masked"] = "edges"  # what the control image is (computed from images)
    hint_width: Annotated[int, Range("[1, 1024]")] = 16  # first width of the control image's encoder

    BASE_FAMILIES: ClassVar[tuple[str, ...]] = ("ddpm", "ldm")


@dataclass
class SamplerConfig:
    """Placeholder: a ControlNet run samples with its base family's knobs (genzoo.registry puts them here)."""


PRESETS = {
    # seconds on CPU: for tests and smoke runs
    "tiny": {"train": {"steps": 10, "batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 5, "eval_every": 0}},
    # MNIST on 2 CPU cores within 10 minutes: the copy starts trained, so a short run steers it
    "quick": {"train": {"steps": 1000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.99,
                        "weight_decay": 0.0, "log_every": 50, "sample_every": 250, "ckpt_every": 250,
                        "eval_every": 0}},
    # one GPU
    "standard": {"train": {"steps": 10000, "batch_size": 128, "lr": 1e-4, "warmup_steps": 200, "ema_decay": 0.999,
                           "weight_decay": 0.0, "sample_every": 1000, "ckpt_every": 1000, "eval_every": 0}},
}


DESCRIPTION = "a trainable copy of a finished U-Net's encoder, steered by an edge map, a low-res or a masked image"
Model, Config = ControlNet, ControlNetConfig
