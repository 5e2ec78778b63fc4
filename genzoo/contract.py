"""The contract between a model family and the shared trainer / evaluation harness (docs/design.md §3).

Every family is a `GenerativeModel` (an `nn.Module`). What it must provide, and what it may
provide, is declared here, once, with who relies on it. Optional capabilities are class attributes
with a default of "absent": the trainer, harness and compare read them directly, never probe with
`hasattr`. `tests/test_contract.py` checks every registered family against this declaration.

Families own their math only: no prints, no optimizers, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterable

import torch
from torch import nn


@dataclass
class Batch:
    images: torch.Tensor  # (B, C, H, W) float in [-1, 1]
    labels: torch.Tensor | None  # (B,) int64, or None
    latents: torch.Tensor | None = None  # (B, c, h, w) cached first-stage latents of the images (latent families)
    text: torch.Tensor | None = None  # (B, context) int64 caption tokens, with data.captions=true

    def to(self, device: torch.device, memory_format=torch.contiguous_format) -> "Batch":
        images = self.images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels, latents, text = (None if t is None else t.to(device, non_blocking=True)
                                 for t in (self.labels, self.latents, self.text))
        return Batch(images, labels, latents, text)


class GenerativeModel(nn.Module):
    """The family contract. Constructed as `Model(cfg, image_shape=(C, H, W), num_classes=K)`
    (plus `autoencoder=` for a second stage).

    Required (every family):
      phases                 trainer: one optimizer per phase, stepped in this order each step
                             (default ("main",); a GAN declares ("disc", "gen"))
      num_classes            trainer grids, harness, compare: K when class-conditional, else 0
                             (`classes(cfg, K)` below)
      parameters_for(phase)  trainer: what that phase's optimizer updates
      loss(batch, phase)     trainer: dict with a scalar "loss"; other entries are logged
      sample(n, *, labels=None, generator=None, **knobs)
                             harness, `genzoo sample`, trainer grids, notebooks: (n, C, H, W) in
                             [-1, 1], no grad, deterministic for a given generator; knobs are the
                             family's SamplerConfig fields
      network_evaluations(**knobs)
                             harness, report: network passes per sample (1 for one-pass models)

    Optional capabilities (declare by overriding the class attribute):
      likelihood             harness `bpd`, compare's bits/dim column: None, or what
                             `log_likelihood(batch) -> (B,)` bits/dim returns ("exact", "bound (ELBO)")
      ode_likelihood         harness `bpd_ode`, a second column beside bits/dim: None, or what
                             `log_likelihood(batch, estimator="ode")` returns (a probability-flow ODE
                             estimate offered beside a declared bound, as ddpm does)
      reconstructs           harness `evaluate_reconstruction`, compare's first-stage table:
                             `reconstruct(batch) -> (B, C, H, W)`
      uses_latents           trainer: encode the training set once with the first stage, pass it as
                             `Batch.latents`, and call `set_latent_scale(latents)` on a fresh run
      autoencoder_families   runs.build_model: a second stage; `model.autoencoder` must name a
                             finished run of one of these families, passed in as `autoencoder=`
                             (the frozen first stage's model; the second stage uses that family's
                             own methods, e.g. vqvae's `encode_tokens`)
    """

    phases: ClassVar[tuple[str, ...]] = ("main",)
    num_classes: int = 0
    likelihood: ClassVar[str | None] = None
    ode_likelihood: ClassVar[str | None] = None
    reconstructs: ClassVar[bool] = False
    uses_latents: ClassVar[bool] = False
    autoencoder_families: ClassVar[tuple[str, ...]] = ()

    def parameters_for(self, phase: str) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def loss(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **knobs) -> torch.Tensor:
        raise NotImplementedError

    def network_evaluations(self, **knobs) -> int:
        return 1

    # present when the capability is declared
    def log_likelihood(self, batch: Batch, **knobs) -> torch.Tensor:  # (B,) bits/dim
        raise NotImplementedError(f"{type(self).__name__} declares no likelihood")

    def reconstruct(self, batch: Batch) -> torch.Tensor:  # (B, C, H, W) in [-1, 1]
        raise NotImplementedError(f"{type(self).__name__} is not an autoencoder")

    def set_latent_scale(self, latents: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not train on latents")

    def adapter_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """trainer: an adapter's (weights, metadata), saved alone beside each checkpoint as safetensors
        (`train.checkpoint.ADAPTER`); None for a model that is not an adapter."""
        return None

    # shared label handling
    def class_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """(n,) labels for a class-conditional model (an error without them), None for an unconditional one."""
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError(f"this {type(self).__name__} is class-conditional: pass labels")
        return labels.view(n)

    def dropped_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Label dropout for classifier-free guidance (Ho & Salimans 2022): each of the (n,) labels is replaced by
        the null label K with probability `cfg.p_uncond`, so one network learns p(x | y) and p(x). None stays None."""
        y = None if labels is None or not self.num_classes else labels.view(n)
        if y is not None and self.cfg.p_uncond > 0:
            drop = torch.rand(y.shape, device=y.device) < self.cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y


class Component(nn.Module):
    """A trained part that is not a generative model (the zoo's CLIP text encoder; next, a noise-conditional
    classifier for guidance). It trains through the same trainer, with the trainer's side of the contract
    above (phases, num_classes, parameters_for, loss, and the capabilities uses_latents and
    autoencoder_families), and it neither samples nor pretends to: the trainer draws no grids of it,
    `genzoo sample` refuses it, and `genzoo eval` scores it (`evaluation.harness.evaluate_component`).
    Components are registered in `genzoo.registry.COMPONENTS`, apart from the families."""

    phases: ClassVar[tuple[str, ...]] = ("main",)
    num_classes: int = 0
    uses_latents: ClassVar[bool] = False
    autoencoder_families: ClassVar[tuple[str, ...]] = ()

    def parameters_for(self, phase: str) -> Iterable[nn.Parameter]:
        return self.parameters()

    def loss(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Adapter(GenerativeModel):
    """A finished run's model (`base`, frozen) plus what an adapter trains (LoRA, ControlNet: models/lora.py,
    models/controlnet.py). Built as `Model(cfg, image_shape, num_classes, base=MODEL, base_family=NAME)` by
    `runs.build_model`; registered in `genzoo.registry.ADAPTERS`. It trains, samples and is scored as the base is:
    loss, sample, network_evaluations, log_likelihood and the capabilities are the base's, and every other
    attribute (autoencoder, encode, text_encoder, ...) reads through to it. A subclass says what trains
    (`parameters_for`) and may change how the base is called."""

    def __init__(self, base: GenerativeModel, base_family: str):
        super().__init__()
        from genzoo.train.latents import weights_sha256

        self.base_family = base_family
        self.base_sha256 = weights_sha256(base)  # before any change: the identity an adapter file records
        self.base = base.requires_grad_(False)
        self.num_classes = base.num_classes
        for cap in CAPABILITIES:  # what the base can do, this run can do
            setattr(self, cap, getattr(base, cap))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None:
                raise
            return getattr(base, name)

    def parameters_for(self, phase: str) -> Iterable[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, batch: Batch, phase: str = "main") -> dict[str, torch.Tensor]:
        return self.base.loss(batch, phase)

    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **knobs) -> torch.Tensor:
        return self.base.sample(n, labels=labels, generator=generator, **knobs)

    def network_evaluations(self, **knobs) -> int:
        return self.base.network_evaluations(**knobs)

    def log_likelihood(self, batch: Batch, **knobs) -> torch.Tensor:
        return self.base.log_likelihood(batch, **knobs)

    def set_latent_scale(self, latents: torch.Tensor) -> None:
        """A latent base keeps the scale it was trained with (its denoiser reads latents at that scale)."""


def classes(cfg, num_classes: int) -> int:
    """A model's `num_classes`: the dataset's K when its config asks for class conditioning, else 0."""
    return num_classes if cfg.class_cond else 0


REQUIRED = ("phases", "num_classes", "parameters_for", "loss", "sample", "network_evaluations")
CAPABILITIES = ("likelihood", "ode_likelihood", "reconstructs", "uses_latents", "autoencoder_families")

# What a family module gives the registry (`genzoo.registry.Family.from_module`), and who reads it.
MODULE_NAMES = ("DESCRIPTION",    # `genzoo list`: one line on what the family is
                "Model",          # the GenerativeModel subclass above
                "Config",         # dataclass of the model's keys (`--set model.KEY=...`)
                "SamplerConfig",  # dataclass of the sampling knobs (`--set sampler.KEY=...`), sample(**knobs)
                "PRESETS")        # {"tiny": {...}, "quick": {...}, ...} plain override dicts
OPTIONAL_MODULE_NAMES = ("SecondStage",    # the Model built instead when model.autoencoder names a run
                         "RETIRED_KEYS")   # model keys of older saved configs, ignored when they load
CONFIG_FIELDS = {"class_cond": bool}  # every Config: compare's `--set model.class_cond`, the contract test
SECOND_STAGE_FIELDS = {"autoencoder": str}  # the Config of a family with autoencoder_families: the first run
REQUIRED_PRESETS = ("tiny",      # tests and smoke runs: seconds on CPU
                    "quick",     # the default of `genzoo train` and `genzoo compare`: MNIST on 2 CPU cores
                    "standard")  # one GPU: the README's longer runs
