"""Flow matching: a rectified flow on the zoo's diffusion networks (Liu et al. 2023; Lipman et al. 2023; SD3).

The network `net(x_t, 1000 t, y)` (the ddpm family's U-Net, or the DiT with model.denoiser=dit) predicts the
velocity v = eps - x_0 of the straight path x_t = (1 - t) x_0 + t eps (models/diffusion/flow.py); samples are
the ODE dx/dt = v solved from t = 1 to 0 by Euler, midpoint or Heun (models/diffusion/ode.py). Classifier-free
guidance is ddpm's (`Denoised.guided`): v_guided = v(x, t, null) + s (v(x, t, y) - v(x, t, null)).

    genzoo train flow --preset quick --out runs/flow                      # the U-Net of ddpm's quick preset
    genzoo train flow --preset quick --set model.denoiser=dit ...         # the DiT
    genzoo train flow --preset latent-quick --set model.autoencoder=runs/ae --out runs/lflow   # latent
    genzoo train flow --preset quick --set model.pairs=runs/flow/pairs.npz --out runs/reflow  # reflow

Reflow (Liu et al. 2023, §2.3): with model.pairs naming an npz of (noise, sample) pairs drawn from a trained
flow (benchmarks/reflow.py), training uses those fixed couplings instead of independent (x_0, eps): the
batch's images then give only the batch size (docs/flow.md, Reflow). `log_likelihood` is the probability-flow
ODE estimate in 8-bit bits/dim (docs/flow.md, Likelihood).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch

from genzoo.contract import classes
from genzoo.errors import ConfigError
from genzoo.models import ldm
from genzoo.models.diffusion import flow, ode
from genzoo.models.ddpm import Denoised
from genzoo.models.dit import DiT, DiTNetConfig, check_text_attention
from genzoo.models.unet import UNet, UNetConfig
from genzoo.rules import Fraction, Range


class RectifiedFlow(Denoised):
    """The family: a velocity network trained by flow matching and sampled by an ODE solver."""

    likelihood = ode.LIKELIHOOD_LABEL

    time_scale = flow.TIME_SCALE  # the network reads TIME_SCALE * t

    def __init__(self, cfg: FlowConfig, image_shape: tuple[int, int, int], num_classes: int = 0, net=None,
                 text_encoder: torch.nn.Module | None = None):
        super().__init__()
        C, H, W = image_shape
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = 0 if text_encoder is not None else classes(cfg, num_classes)  # a caption replaces the label
        if text_encoder is not None:
            if cfg.pairs:
                raise ConfigError("model.pairs (reflow) draws its pairs with class labels; a text-conditioned flow "
                                  "trains on captions: drop one of model.pairs and model.text_encoder")
            self.use_text_encoder(text_encoder)
        d_ctx = text_encoder.cfg.d_model if text_encoder is not None else 0
        check_text_attention(cfg)
        if net is None:
            net = (UNet(cfg, C, H, self.num_classes, context_dim=d_ctx) if cfg.denoiser == "unet"
                   else DiT(cfg, C, (H, W), self.num_classes, context_dim=d_ctx))
        self.net = net
        self._pairs = None  # reflow's (eps, x0, labels), read from cfg.pairs on the first loss

    # -- training ------------------------------------------------------------------------
    def couplings(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x_0, eps, labels) of a training batch: independent noise, or B of reflow's fixed pairs at random."""
        x0 = batch.images
        if not self.cfg.pairs:
            return x0, torch.randn_like(x0), batch.labels
        eps_all, x0_all, y_all = self.pairs()
        i = torch.randint(0, len(x0_all), (x0.shape[0],))  # (B,) from the global RNG, as the trainer's noise is
        y = None if y_all is None else y_all[i].to(x0.device)
        return x0_all[i].to(x0.device, x0.dtype), eps_all[i].to(x0.device, x0.dtype), y

    def pairs(self):
        """Reflow's pairs from cfg.pairs (written by benchmarks/reflow.py), loaded once: (eps, x0, labels|None)."""
        if self._pairs is None:
            try:
                with np.load(self.cfg.pairs) as f:
                    eps, x0 = torch.from_numpy(f["eps"]).float(), torch.from_numpy(f["x0"]).float()
                    labels = torch.from_numpy(f["labels"]).long() if "labels" in f.files else None
            except (OSError, KeyError, ValueError) as e:
                raise ConfigError(f"model.pairs={self.cfg.pairs}: not a reflow pairs file ({e}); make one with "
                                  f"`python benchmarks/reflow.py RUN_DIR --out PAIRS.npz`") from None
            if tuple(x0.shape[1:]) != self.image_shape or eps.shape != x0.shape:
                raise ConfigError(f"model.pairs={self.cfg.pairs} holds images of shape {tuple(x0.shape[1:])}, "
                                  f"this model makes {self.image_shape}")
            if self.num_classes and labels is None:
                raise ConfigError(f"model.pairs={self.cfg.pairs} has no labels, and this model is class-conditional")
            self._pairs = (eps, x0, labels)
        return self._pairs

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        x0, eps, labels = self.couplings(batch)
        y = self.train_condition(batch) if self.text_encoder is not None else self.dropped_labels(labels, x0.shape[0])
        t = flow.sample_time(x0.shape[0], self.cfg.timesteps, self.cfg.logit_mean, self.cfg.logit_std,
                             self.cfg.shift, x0.device)  # (B,)
        return {"loss": flow.loss(self.net, x0, eps, t, y)}

    # -- sampling ------------------------------------------------------------------------
    def velocity(self, labels: torch.Tensor | None, cfg_scale: float = 1.0, compile: bool = False):
        """The ODE's vector field (x, t float) -> v_hat (B, C, H, W), with classifier-free guidance."""
        out = self.guided(labels, cfg_scale, compile)

        def v(x: torch.Tensor, t: float) -> torch.Tensor:
            return out(x, torch.full((x.shape[0],), flow.TIME_SCALE * t, device=x.device))

        return v

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               text: torch.Tensor | None = None, **knobs) -> torch.Tensor:
        return self.sample_x0(n, labels=labels, generator=generator, text=text, **knobs).clamp(-1, 1)

    @torch.no_grad()
    def sample_x0(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  text: torch.Tensor | None = None, name: str = "euler", steps: int = 10, cfg_scale: float = 1.0,
                  compile: bool = False, eps: torch.Tensor | None = None) -> torch.Tensor:
        """x_0 from the ODE solver started at eps ~ N(0, I) (drawn with `generator` unless given), unclamped;
        `text` (n, context) caption tokens for a text-conditioned model."""
        if name not in ode.SOLVERS:
            raise ValueError(f"unknown sampler {name!r}; choose from: {', '.join(ode.SOLVERS)}")
        device = next(self.parameters()).device
        if eps is None:
            eps = torch.randn((n, *self.image_shape), generator=generator, device=device)  # x_1
        v = self.velocity(self.condition(labels, text, n), cfg_scale, compile)
        return ode.SOLVERS[name](v, eps, flow.time_grid(steps, self.cfg.shift))

    def network_evaluations(self, name: str = "euler", steps: int = 10, cfg_scale: float = 1.0, **_) -> int:
        """Network passes per sample; classifier-free guidance doubles them (batched as one call)."""
        guided = (self.num_classes or self.text_encoder is not None) and cfg_scale != 1.0
        return ode.EVALUATIONS_PER_STEP[name] * steps * (2 if guided else 1)

    # -- likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, batch, steps: int = ode.LIKELIHOOD_STEPS, probes: int = ode.LIKELIHOOD_PROBES,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Bits/dim per image (B,): the uniformly dequantised images carried by dx/dt = v_hat from t = 0 to 1 on
        a uniform grid, log p_0(x) = log N(x_1; 0, I) + int_0^1 div v_hat dt (ode.log_likelihood), in 8-bit
        bits/dim (ode.dequantized_bits_per_dim); conditional on the label for a conditional model."""
        x = ode.dequantize(batch.images, generator)
        v = self.velocity(self.condition(batch.labels, batch.text, x.shape[0]))
        ts = [i / steps for i in range(steps + 1)]  # 0 (data) .. 1 (noise)
        log_p = ode.log_likelihood(v, x, ts, ode.gaussian_log_prob, probes, generator)
        return ode.dequantized_bits_per_dim(log_p, x[0].numel())


@torch.no_grad()
def reflow_pairs(model: RectifiedFlow, n: int, *, generator: torch.Generator | None = None, batch_size: int = 500,
                 **knobs) -> dict[str, torch.Tensor]:
    """Reflow's couplings (Liu et al. 2023, Algorithm 1): n noises eps ~ N(0, I) and the model's ODE solutions
    x_0 = ODE(eps) (unclamped, float32, on the CPU), labels cycling 0..K-1 for a class-conditional model."""
    device = next(model.parameters()).device
    K = model.num_classes
    labels = torch.arange(n) % K if K else None
    eps, x0 = [], []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        e = torch.randn((b, *model.image_shape), generator=generator, device=device)  # (b, C, H, W)
        y = None if labels is None else labels[i:i + b].to(device)
        eps.append(e.cpu()), x0.append(model.sample_x0(b, labels=y, eps=e, **knobs).float().cpu())
    out = {"eps": torch.cat(eps), "x0": torch.cat(x0)}
    return out if labels is None else {**out, "labels": labels}


class LatentFlow(ldm.LatentDiffusion):
    """Flow matching in the latent space of a finished vae / vqvae run: ldm's first stage and latent scale,
    with the rectified flow in place of the DDPM (built when model.autoencoder names a run)."""

    process_model = RectifiedFlow


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class FlowConfig(DiTNetConfig, UNetConfig):
    """The path's keys, the denoiser's (the U-Net's or the DiT's; `heads` is shared) and the conditioning."""

    denoiser: Literal["unet", "dit"] = "unet"
    heads: Annotated[int, Range("[1, 64]")] = 1
    timesteps: Literal["uniform", "logit_normal"] = "uniform"  # training times (SD3 §3.1)
    logit_mean: Annotated[float, Range("[-10, 10]")] = 0.0  # m of the logit-normal times
    logit_std: Annotated[float, Range("(0, 10]")] = 1.0  # s of the logit-normal times
    shift: Annotated[float, Range("(0, 100]")] = 1.0  # SD3's timestep shift, training and sampling; 1 = none
    class_cond: bool = False
    p_uncond: Fraction = 0.1  # label dropout for classifier-free guidance
    pairs: str = ""  # reflow: an npz of (noise, sample) pairs from benchmarks/reflow.py; "" = flow matching
    text_encoder: str = ""  # a finished clip run: condition on captions (as ddpm; model.text_attention for the DiT)
    autoencoder: str = ""  # latent flow: a finished vae (latent_channels > 0) or vqvae run directory


@dataclass
class SamplerConfig:
    """The ODE solver and guidance (`RectifiedFlow.sample_x0`)."""

    name: Literal["euler", "midpoint", "heun"] = "euler"
    steps: Annotated[int, Range("[1, 100000]")] = 10  # solver steps; midpoint and heun evaluate twice per step
    cfg_scale: Annotated[float, Range("[0, 100]")] = 1.0  # classifier-free guidance; 1 = conditional model as trained
    compile: bool = False  # torch.compile the network for sampling (see Denoised.compiled_net)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality; ch_mult (1,) also fits 4x4 latents
    "tiny": {"model": {"channels": 8, "ch_mult": (1,), "blocks": 1, "attn_res": (), "dropout": 0.0,
                       "hidden": 32, "depth": 2, "heads": 2, "patch": 4},
             "sampler": {"steps": 4},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # real MNIST on 2 CPU cores in about 10 minutes: ddpm's quick U-Net and training settings (models/ddpm.py),
    # so that `flow` and `ddpm` compare on the same network, steps and batch (one attention head, as ddpm's);
    # with model.denoiser=dit the DiT's keys are dit's quick, whose model.heads=4 is then set by hand
    "quick": {"model": {"channels": 16, "ch_mult": (1, 2, 4), "blocks": 1, "attn_res": (7,), "dropout": 0.0,
                        "patch": 4, "hidden": 128, "depth": 6, "heads": 1, "timesteps": "logit_normal",
                        "class_cond": True},
              "sampler": {"name": "euler", "steps": 10},
              "train": {"steps": 1200, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 400, "ckpt_every": 400}},
    # ldm's quick (4 x 7 x 7 latents of the vae quick preset with latent_channels=4): set model.autoencoder
    "latent-quick": {"model": {"channels": 64, "ch_mult": (1,), "blocks": 2, "attn_res": (7,), "dropout": 0.0,
                               "patch": 1, "hidden": 128, "depth": 6, "heads": 4, "timesteps": "logit_normal",
                               "class_cond": True},
                     "sampler": {"name": "euler", "steps": 10},
                     "train": {"steps": 1100, "batch_size": 128, "lr": 1e-3, "warmup_steps": 100,
                               "ema_decay": 0.995, "sample_every": 275, "ckpt_every": 275}},
    # one GPU: ddpm's standard U-Net (or, with model.denoiser=dit and model.heads=6, DiT-S/2 widths)
    "standard": {"model": {"channels": 64, "ch_mult": (1, 2, 2), "blocks": 2, "attn_res": (14, 7), "dropout": 0.1,
                           "patch": 2, "hidden": 384, "depth": 12, "heads": 1, "timesteps": "logit_normal"},
                 "sampler": {"name": "heun", "steps": 25},
                 "train": {"steps": 50000, "batch_size": 128, "lr": 2e-4, "warmup_steps": 1000, "ema_decay": 0.9999,
                           "grad_clip": 1.0, "sample_every": 5000, "ckpt_every": 5000, "eval_every": 5000}},
}

DESCRIPTION = "rectified flow / flow matching on the U-Net or DiT (model.denoiser), Euler/midpoint/Heun, CFG, reflow"
Model, Config, SecondStage = RectifiedFlow, FlowConfig, LatentFlow
