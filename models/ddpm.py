"""DDPM: a denoising network (the U-Net) + the Gaussian diffusion process + samplers (Ho et al. 2020).

Training is Algorithm 1 of DDPM with the chosen objective (eps, x0 or v) and optional min-SNR weighting.
Class conditioning uses classifier-free guidance (Ho & Salimans 2022): during training the label is
replaced by the null label with probability `p_uncond`; at sampling

    eps_guided = eps(x_t, t, null) + cfg_scale * (eps(x_t, t, y) - eps(x_t, t, null))

so cfg_scale = 1 is the plain conditional model and 0 the unconditional one. The two branches run as one
batch. Guidance can be limited to an interval of noise levels (Kynkaanniemi et al. 2024, "Applying guidance in a
limited interval"): with `cfg_t_max` < 1 the noisiest steps (t / T above it) run the conditional model alone and
save their second branch; the paper found this keeps diversity that guidance at high noise removes (docs/text.md
measures where it helps and where it does not). `log_likelihood` is the variational bound (eq. 5) in bits/dim,
estimated over timesteps.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from genzoo.contract import GenerativeModel, classes
from genzoo.errors import ConfigError
from genzoo.models.diffusion import ode, samplers
from genzoo.models.diffusion.process import GaussianDiffusion
from genzoo.models.unet import Text, UNet, UNetConfig
from genzoo.rules import Fraction, NonNegative, Range


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU ($CXX, else g++ / c++ / clang++ on PATH), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


class Denoised(GenerativeModel):
    """What the diffusion and flow families share around their network `net(x_t, t, y)`: the condition y (class
    labels, or a caption through a frozen text encoder), its dropout for classifier-free guidance, the guided
    network and its compiled forward.

    With a text encoder (`model.text_encoder=CLIP_RUN`, the zoo's CLIP) y is a `Text`: the encoder's token
    embeddings and pooled embedding of the caption tokens (Batch.text, `data.captions=true`). The null condition
    of guidance is the empty caption, as in Stable Diffusion: training replaces a caption by "" with probability
    p_uncond, and a model sampled without a prompt draws from the empty one."""

    net: torch.nn.Module

    @property
    def text_encoder(self) -> torch.nn.Module | None:
        """The frozen text encoder (a submodule added by `use_text_encoder`), or None."""
        return self._modules.get("text_encoder")

    def use_text_encoder(self, text_encoder: torch.nn.Module) -> None:
        self._modules["text_encoder"] = text_encoder.eval().requires_grad_(False)  # frozen; .to() moves it

    def parameters_for(self, phase: str):
        return [p for name, p in self.named_parameters() if not name.startswith("text_encoder.")]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.eval()  # frozen
        return self

    def _labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:  # a conditional model samples unconditionally with the null label
            return None
        return labels.view(n)

    # -- text ----------------------------------------------------------------------------
    def empty_text(self, n: int) -> torch.Tensor:
        """(n, context) tokens of the empty caption, the null condition of a text model."""
        return self.text_encoder.tokenizer.encode("").to(self.text_encoder.tau.device).expand(n, -1)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> Text:
        """(n, context) caption tokens -> the frozen encoder's Text: token embeddings and the pooled one (at <eos>)."""
        enc = self.text_encoder
        hidden = enc.text_tokens(tokens)  # (n, L, d)
        eos = (tokens == enc.tokenizer.eos).float().argmax(1)  # (n,)
        return Text(hidden, hidden[torch.arange(len(tokens), device=tokens.device), eos])

    def condition(self, labels: torch.Tensor | None, text: torch.Tensor | None, n: int):
        """The sampler's condition: a Text of the caption tokens (the empty caption without), else the labels."""
        if self.text_encoder is not None:
            return self.encode_text(text.view(n, -1) if text is not None else self.empty_text(n))
        return self._labels(labels, n)

    def train_condition(self, batch):
        """The training condition: captions (each replaced by "" with probability p_uncond) or dropped labels."""
        n = batch.images.shape[0]
        if self.text_encoder is None:
            return self.dropped_labels(batch.labels, n)
        if batch.text is None:
            raise ConfigError("a model with model.text_encoder trains on captions: set data.captions=true")
        drop = torch.rand(n, device=batch.text.device) < self.cfg.p_uncond
        return self.encode_text(torch.where(drop[:, None], self.empty_text(n), batch.text))

    def null_condition(self, cond):
        if isinstance(cond, Text):
            return self.encode_text(self.empty_text(len(cond.pooled)))
        return torch.full_like(cond, self.num_classes)

    time_scale = 1.0  # the network's time input at pure noise: t / time_scale is the fraction of the process

    def guided(self, cond, cfg_scale: float = 1.0, compile: bool = False, t_min: float = 0.0, t_max: float = 1.0):
        """(x_t, t) -> the network's output under classifier-free guidance: out_u + s (out_c - out_u), at the
        steps with t_min <= t / time_scale <= t_max (the conditional output out_c elsewhere).
        `cond`: labels (B,), a Text, or None (unconditional)."""
        guided = cond is not None and cfg_scale != 1.0
        both = cat_conditions(cond, self.null_condition(cond)) if guided else None
        net = self.compiled_net() if compile else self.net
        limited = t_min > 0 or t_max < 1

        def out(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided or limited and not t_min <= float(t[0]) / self.time_scale <= t_max:  # one t per call
                return net(x_t, t, cond)
            out_c, out_u = net(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)  # one batch of 2B
            return out_u + cfg_scale * (out_c - out_u)  # linear: valid for eps, x0, v and velocity outputs

        return out

    def compiled_net(self):
        """The network's forward under `torch.compile` (inductor), built on first use and kept.

        A sampler calls the same network `steps` times on tensors of one shape, so one compilation serves
        them all (benchmarks/peers.py, model `ours_compiled`, measures the speed-up and the compile time).
        The parameters stay inputs of the compiled
        graph (no freezing), so EMA updates and `load_state_dict` are seen. On CPU inductor builds C++
        kernels and needs a C++ compiler."""
        fn = self.__dict__.get("_compiled_forward")
        if fn is None:
            if next(self.parameters()).device.type == "cpu" and not cxx_compiler():
                raise ConfigError("sampler.compile=true on CPU needs a C++ compiler (torch.compile builds C++ "
                                  "kernels): install g++ (e.g. apt install g++), or set sampler.compile=false")
            fn = self.__dict__["_compiled_forward"] = torch.compile(self.net.forward)
        return fn


def cat_conditions(a, b):
    """Two conditions as one batch: labels concatenated, or each part of two Texts."""
    return Text(*(torch.cat(pair) for pair in zip(a, b))) if isinstance(a, Text) else torch.cat([a, b])


class DDPM(Denoised):
    """The family: a denoiser `net(x_t, t, y)` (the U-Net unless given) trained and sampled by the process."""

    likelihood = "bound (VLB, estimated over timesteps)"
    ode_likelihood = ode.LIKELIHOOD_LABEL  # log_likelihood(batch, estimator="ode")

    def __init__(self, cfg: DiffusionConfig, image_shape: tuple[int, int, int], num_classes: int = 0, net=None,
                 text_encoder: torch.nn.Module | None = None):
        super().__init__()
        C, H, W = image_shape
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = 0 if text_encoder is not None else classes(cfg, num_classes)  # a caption replaces the label
        self.process = GaussianDiffusion(cfg.T, cfg.schedule, cfg.objective)
        if text_encoder is not None:
            self.use_text_encoder(text_encoder)
        context_dim = text_encoder.cfg.d_model if text_encoder is not None else 0
        self.net = net if net is not None else UNet(cfg, C, H, self.num_classes, context_dim=context_dim)

    @property
    def time_scale(self) -> float:
        return float(self.cfg.T)  # t = 0..T-1

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        y = self.train_condition(batch)
        loss, _ = self.process.loss(self.net, batch.images, y, self.cfg.min_snr_gamma)
        return {"loss": loss}

    def denoiser(self, labels: torch.Tensor | None, cfg_scale: float = 1.0, clip_x0: bool = True,
                 compile: bool = False, guide=None, t_min: float = 0.0, t_max: float = 1.0):
        """The callable the samplers use: (x_t, t) -> (x0_hat, eps_hat), with classifier-free guidance (on
        t / T in [t_min, t_max]), and with classifier guidance when `guide` (x_t, t) -> s grad log p(y | x_t) is
        given (`classifier_guide`)."""
        out = self.guided(labels, cfg_scale, compile, t_min, t_max)
        if guide is None:
            return lambda x_t, t: self.process.predict(out(x_t, t), x_t, t, clip_x0)

        def denoise(x_t: torch.Tensor, t: torch.Tensor):
            _, eps = self.process.predict(out(x_t, t), x_t, t)
            return self.process.classifier_guided(eps, x_t, t, guide(x_t, t), clip_x0)

        return denoise

    def classifier_guide(self, classifier: str, scale: float, labels: torch.Tensor | None, n: int):
        """(x_t, t) -> scale * grad_{x_t} log p_phi(labels | x_t, t) from the noisy-classifier run `classifier`
        (loaded once, frozen, kept out of this model's weights), or None without one or at scale 0."""
        if not classifier or scale == 0:
            return None
        if labels is None:
            raise ConfigError("classifier guidance steers towards requested classes: sample with labels (a text "
                              "model takes the class its prompt names)")
        cache = self.__dict__.setdefault("_classifiers", {})
        if classifier not in cache:
            from genzoo.runs import frozen_run  # a run directory, as model.text_encoder is

            clf = frozen_run(classifier, ("noisy-classifier",), "sampler.classifier", "classifier guidance").model
            if tuple(clf.image_shape) != self.image_shape:
                raise ConfigError(f"sampler.classifier={classifier} reads {tuple(clf.image_shape)} images; this model "
                                  f"samples {self.image_shape} (classifier guidance of a latent model needs a "
                                  f"classifier of its latents, which the zoo does not train yet)")
            clf.check_process(self.process)
            cache[classifier] = clf
        clf = cache[classifier].to(next(self.parameters()).device)
        y = labels.view(n)
        return lambda x_t, t: scale * clf.grad_log_prob(x_t, t, y)

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               text: torch.Tensor | None = None, **knobs) -> torch.Tensor:
        return self.sample_x0(n, labels=labels, generator=generator, text=text, **knobs).clamp(-1, 1)

    @torch.no_grad()
    def sample_x0(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  text: torch.Tensor | None = None, name: str = "ddim", steps: int = 50, eta: float = 0.0,
                  var: str = "beta_tilde", cfg_scale: float = 1.0, clip_x0: bool = True,
                  compile: bool = False, classifier: str = "", classifier_scale: float = 0.0,
                  cfg_t_min: float = 0.0, cfg_t_max: float = 1.0) -> torch.Tensor:
        """x_0 from the sampler, unclamped (latent diffusion decodes it); `text` (n, context) caption tokens.
        With `classifier` (a noisy-classifier run) and `classifier_scale` s, classifier guidance towards `labels`
        (for a text model, the classes its prompts name)."""
        device = next(self.parameters()).device
        guide = self.classifier_guide(classifier, classifier_scale, labels, n)
        if cfg_t_min > cfg_t_max:
            raise ConfigError(f"sampler.cfg_t_min={cfg_t_min:g} is above sampler.cfg_t_max={cfg_t_max:g}: guidance "
                              f"applies on t / T in [cfg_t_min, cfg_t_max]")
        denoise = self.denoiser(self.condition(labels, text, n), cfg_scale, clip_x0, compile, guide, cfg_t_min,
                                cfg_t_max)
        return samplers.sample(name, denoise, self.process, (n, *self.image_shape), steps=steps, eta=eta, var=var,
                               generator=generator, device=device)

    def network_evaluations(self, name: str = "ddim", steps: int = 50, cfg_scale: float = 1.0,
                            cfg_t_min: float = 0.0, cfg_t_max: float = 1.0, **_) -> int:
        """Network passes per sample; classifier-free guidance doubles those of the steps it applies to (the two
        branches batched as one call)."""
        ts = samplers.evaluated_timesteps(name, steps, self.process)
        if not (self.num_classes or self.text_encoder is not None) or cfg_scale == 1.0:
            return len(ts)
        return len(ts) + sum(cfg_t_min <= t / self.time_scale <= cfg_t_max for t in ts)

    @torch.no_grad()
    def log_likelihood(self, batch, terms: int = 32, estimator: Literal["vlb", "ode"] = "vlb",
                       steps: int = ode.LIKELIHOOD_STEPS, probes: int = ode.LIKELIHOOD_PROBES,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Bits/dim per image, conditional on the label for a conditional model. estimator="vlb" (the default,
        the `likelihood` declared above): the variational bound of eq. 5, its T-1 KL terms estimated from `terms`
        stratified timesteps (all of them with terms=0). estimator="ode": the probability-flow ODE estimate
        (`GaussianDiffusion.ode_log_likelihood`, `steps` Heun steps, `probes` Hutchinson probes) of the
        uniformly dequantised images, in the same 8-bit bits/dim (docs/flow.md, Likelihood)."""
        y = self.condition(batch.labels, batch.text, batch.images.shape[0])
        if estimator == "vlb":
            return self.process.bits_per_dim(self.denoiser(y), batch.images, terms=terms)
        if estimator != "ode":
            raise ValueError(f"unknown likelihood estimator {estimator!r}; choose vlb or ode")
        x = ode.dequantize(batch.images, generator)
        log_p = self.process.ode_log_likelihood(self.denoiser(y, clip_x0=False), x, steps, probes, generator)
        return ode.dequantized_bits_per_dim(log_p, x[0].numel())


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class DiffusionConfig:
    """The process and the conditioning, shared by the three diffusion families (ddpm, dit, ldm): each
    family's config extends it with its network's keys, so every key stays flat (`--set model.T=...`)."""

    T: Annotated[int, Range("[2, 100000]")] = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    objective: Literal["eps", "x0", "v"] = "eps"
    min_snr_gamma: NonNegative = 0.0  # 0 = L_simple; 5 = min-SNR-5 weighting
    class_cond: bool = False
    p_uncond: Fraction = 0.1  # label (or caption) dropout for classifier-free guidance


@dataclass
class DDPMConfig(DiffusionConfig, UNetConfig):
    """The U-Net's keys (models/unet.py) and the process's (DiffusionConfig)."""

    # a finished clip run: condition on captions (data.captions=true) through cross-attention to its frozen text
    # encoder, instead of class labels
    text_encoder: str = ""


@dataclass
class SamplerConfig:
    """The sampling knobs of the three diffusion families (`DDPM.sample_x0`)."""

    name: Literal["ddpm", "ddim", "dpm++2m", "euler", "heun"] = "ddim"
    steps: Annotated[int, Range("[1, 100000]")] = 50
    eta: Fraction = 0.0  # DDIM stochasticity: 0 deterministic, 1 ancestral
    var: Literal["beta_tilde", "beta"] = "beta_tilde"  # ancestral sampler's variance
    cfg_scale: Annotated[float, Range("[0, 100]")] = 1.0  # classifier-free guidance; 1 = conditional model as trained
    cfg_t_min: Fraction = 0.0  # guidance only on the steps with cfg_t_min <= t / T <= cfg_t_max (the conditional
    cfg_t_max: Fraction = 1.0  # model elsewhere): an interval of noise levels (Kynkaanniemi et al. 2024)
    clip_x0: bool = True  # clip x0_hat to [-1, 1] at every step
    compile: bool = False  # torch.compile the network for sampling (see DDPM.compiled_net)
    classifier: str = ""  # classifier guidance: a finished noisy-classifier run (models/noisy_classifier.py)
    classifier_scale: Annotated[float, Range("[0, 1000]")] = 0.0  # its scale s; 0 = no classifier guidance


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"channels": 8, "ch_mult": (1, 2), "blocks": 1, "attn_res": (8,), "dropout": 0.0, "T": 50},
             "sampler": {"steps": 5},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 16}},
    # real MNIST on 2 CPU cores in about 10 minutes of training: recognisable digits of every class.
    # v-prediction: eps-prediction's x0 estimate at the cosine schedule's last step divides the error by
    # sqrt(alpha_bar_T), and DDIM's first step then writes that speckle into every sample (README, Diffusion)
    "quick": {"model": {"channels": 16, "ch_mult": (1, 2, 4), "blocks": 1, "attn_res": (7,), "dropout": 0.0,
                        "T": 1000, "schedule": "cosine", "objective": "v", "min_snr_gamma": 5.0,
                        "class_cond": True},
              "sampler": {"name": "ddim", "steps": 50},
              "train": {"steps": 1200, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "sample_every": 400, "ckpt_every": 400}},
    # one GPU: MNIST / Fashion-MNIST (28x28) or CIFAR-10 with ch_mult (1, 2, 2, 2)
    "standard": {"model": {"channels": 64, "ch_mult": (1, 2, 2), "blocks": 2, "attn_res": (14, 7), "dropout": 0.1},
                 "train": {"steps": 50000, "batch_size": 128, "lr": 2e-4, "warmup_steps": 1000, "ema_decay": 0.9999,
                           "grad_clip": 1.0, "sample_every": 5000, "ckpt_every": 5000, "eval_every": 5000}},
    # the DDPM paper's CIFAR-10 model (Ho et al. 2020, App. B), to set beside its published FID
    "paper": {"model": {"channels": 128, "ch_mult": (1, 2, 2, 2), "blocks": 2, "attn_res": (16,), "dropout": 0.1,
                        "T": 1000, "schedule": "linear", "objective": "eps"},
              "sampler": {"name": "ddpm", "steps": 1000},
              "data": {"dataset": "cifar10"},
              "train": {"steps": 800000, "batch_size": 128, "lr": 2e-4, "warmup_steps": 5000, "ema_decay": 0.9999,
                        "grad_clip": 1.0, "schedule": "constant", "weight_decay": 0.0,
                        "sample_every": 10000, "ckpt_every": 10000, "eval_every": 0}},
}

DESCRIPTION = "pixel diffusion with the DDPM U-Net: eps/x0/v, DDPM/DDIM/DPM-Solver++/Heun, CFG"
Model, Config = DDPM, DDPMConfig
