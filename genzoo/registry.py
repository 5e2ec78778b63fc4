"""The families of the zoo, in one literal dict, and how a run's config is resolved.

Each family module in `genzoo.models` provides:
    <Name>Config    dataclass of the network / process hyper-parameters
    SamplerConfig   dataclass of sampling knobs, passed to `model.sample(**knobs)`
    PRESETS         {"quick": {...}, "standard": {...}, ...} plain override dicts
    the model class, constructed as `Model(cfg, image_shape=(C, H, W), num_classes=K)`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from genzoo.config import DataConfig, RunConfig, apply_dict, apply_overrides
from genzoo.errors import ConfigError
from genzoo.models import ddpm, dit, gan, ldm, pixelcnn, transformer, vae, vqvae
from genzoo.train.trainer import TrainConfig


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model: type
    config: type
    sampler: type
    presets: dict[str, dict[str, dict[str, Any]]]


FAMILIES: dict[str, Family] = {
    "vae": Family("vae", "Gaussian VAE: ELBO, beta, IWAE bound, class-conditional option",
                  vae.VAE, vae.VAEConfig, vae.SamplerConfig, vae.PRESETS),
    "gan": Family("gan", "DCGAN: non-saturating or hinge loss, spectral norm, R1, projection discriminator",
                  gan.GAN, gan.GANConfig, gan.SamplerConfig, gan.PRESETS),
    "ddpm": Family("ddpm", "pixel diffusion with the DDPM U-Net: eps/x0/v, DDPM/DDIM/DPM-Solver++/Heun, CFG",
                   ddpm.DDPM, ddpm.DDPMConfig, ddpm.SamplerConfig, ddpm.PRESETS),
    "dit": Family("dit", "diffusion transformer (adaLN-Zero) on pixels: the ddpm process and samplers",
                  dit.DiTDiffusion, dit.DiTConfig, dit.SamplerConfig, dit.PRESETS),
    "ldm": Family("ldm", "latent diffusion on a finished vae / vqvae run (model.autoencoder=RUN), U-Net or DiT",
                  ldm.LatentDiffusion, ldm.LDMConfig, ldm.SamplerConfig, ldm.PRESETS),
    "vqvae": Family("vqvae", "VQ-VAE: EMA codebook, commitment loss, dead-code restart; prior = transformer",
                    vqvae.VQVAE, vqvae.VQVAEConfig, vqvae.SamplerConfig, vqvae.PRESETS),
    "pixelcnn": Family("pixelcnn", "Gated PixelCNN: 256-way softmax, exact bits/dim, class-conditional option",
                       pixelcnn.PixelCNN, pixelcnn.PixelCNNConfig, pixelcnn.SamplerConfig, pixelcnn.PRESETS),
    "transformer": Family("transformer", "causal transformer over pixels (ImageGPT) or VQ-VAE tokens, KV cache",
                          transformer.Transformer, transformer.TransformerConfig, transformer.SamplerConfig,
                          transformer.PRESETS),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown family {name!r}; choose from: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def resolve_config(family: str, *, dataset: str | None = None, preset: str = "quick",
                   overrides: list[str] = ()) -> RunConfig:
    """Defaults -> preset -> `--dataset` -> `--set` overrides, all strict."""
    fam = get_family(family)
    if preset not in fam.presets:
        raise ConfigError(f"unknown preset {preset!r} for {family}; choose from: {', '.join(fam.presets)}")
    cfg = RunConfig(family=family, model=fam.config(), sampler=fam.sampler(), data=DataConfig(), train=TrainConfig())
    apply_dict(cfg, fam.presets[preset])
    if dataset is not None:
        cfg.data.dataset = dataset
    apply_overrides(cfg, list(overrides))
    return cfg


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its JSON dict (as saved beside every checkpoint), strictly."""
    try:
        fam = get_family(d["family"])
        cfg = RunConfig(family=d["family"], model=fam.config(), sampler=fam.sampler(), data=DataConfig(),
                        train=TrainConfig())
        apply_dict(cfg, {k: d[k] for k in ("model", "sampler", "data", "train")})
    except (KeyError, TypeError) as e:
        raise ConfigError(f"not a genzoo run config (missing {e})") from None
    return cfg


def load_config_json(text: str) -> RunConfig:
    try:
        return config_from_dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config.json is not valid JSON: {e}") from None

