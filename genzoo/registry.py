"""The families of the zoo, in one literal dict, and how a run's config is resolved.

Each family is one module in `genzoo.models` with the module-level names of `genzoo.contract.MODULE_NAMES`
(DESCRIPTION, Model, Config, SamplerConfig, PRESETS; optionally SecondStage and RETIRED_KEYS), so that
registering it is one line: `"name": Family.from_module("name", module)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from genzoo.config import DataConfig, RunConfig, apply_dict, apply_overrides
from genzoo.contract import MODULE_NAMES, OPTIONAL_MODULE_NAMES
from genzoo.errors import ConfigError
from genzoo.models import (clip, controlnet, ddpm, dit, flow, gan, ip_adapter, ldm, lora, noisy_classifier, pixelcnn,
                           transformer, vae, vqvae)
from genzoo.rules import validate
from genzoo.train.trainer import TrainConfig


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model: type  # constructed as `model(cfg, image_shape=(C, H, W), num_classes=K)`
    config: type
    sampler: type
    presets: dict[str, dict[str, dict[str, Any]]]
    second_stage: type | None = None  # built instead of `model` when model.autoencoder names a finished run
    retired_keys: tuple[str, ...] = ()  # model keys of older saved configs, dropped when they load

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> "Family":
        """The entry of a family module that defines the names of `genzoo.contract.MODULE_NAMES`."""
        missing = [n for n in MODULE_NAMES if n not in vars(module)]
        if missing:
            raise TypeError(f"{module.__name__} is not a family module: it lacks {', '.join(missing)}")
        optional = {n: vars(module).get(n) for n in OPTIONAL_MODULE_NAMES}
        return cls(name, module.DESCRIPTION, module.Model, module.Config, module.SamplerConfig, module.PRESETS,
                   optional["SecondStage"], tuple(optional["RETIRED_KEYS"] or ()))

    def model_for(self, model_cfg) -> type:
        """The class to build for this run's model config: the second stage when it names a first stage."""
        if self.second_stage is not None and model_cfg.autoencoder:
            return self.second_stage
        return self.model


FAMILIES: dict[str, Family] = {
    "vae": Family.from_module("vae", vae),
    "gan": Family.from_module("gan", gan),
    "ddpm": Family.from_module("ddpm", ddpm),
    "dit": Family.from_module("dit", dit),
    "ldm": Family.from_module("ldm", ldm),
    "flow": Family.from_module("flow", flow),
    "vqvae": Family.from_module("vqvae", vqvae),
    "pixelcnn": Family.from_module("pixelcnn", pixelcnn),
    "transformer": Family.from_module("transformer", transformer),
}


# Trained parts that are not generative models (genzoo.contract.Component): trained by `genzoo train NAME`,
# scored by `genzoo eval`; compare, the family contract test and `genzoo sample` leave them out.
COMPONENTS: dict[str, Family] = {
    "clip": Family.from_module("clip", clip),
    "noisy-classifier": Family.from_module("noisy-classifier", noisy_classifier),
}


# Runs that wrap a finished run of a family (`model.base`), train only what they add, and sample as that run does:
# trained by `genzoo train NAME --set model.base=RUN`, sampled like any run; compare and the family contract test
# leave them out. Their sampler knobs are the base family's (`base_config`).
ADAPTERS: dict[str, Family] = {
    "lora": Family.from_module("lora", lora),
    "controlnet": Family.from_module("controlnet", controlnet),
    "ip-adapter": Family.from_module("ip-adapter", ip_adapter),
}


def get_family(name: str) -> Family:
    """A family, a component or an adapter by name."""
    for registry in (FAMILIES, COMPONENTS, ADAPTERS):
        if name in registry:
            return registry[name]
    raise ConfigError(f"unknown family {name!r}; choose from: {', '.join(FAMILIES)} (or the components: "
                      f"{', '.join(COMPONENTS)}; the adapters: {', '.join(ADAPTERS)})")


def base_config(source: str, adapter: str) -> RunConfig:
    """The config of the finished run an adapter wraps (`model.base`), or one line saying what to pass."""
    from genzoo.train.checkpoint import CONFIG

    if not source:
        raise ConfigError(f"{adapter} adapts a finished run: pass --set model.base=RUN (a ddpm, ldm, dit, flow or "
                          f"transformer run directory)")
    path = Path(source) / CONFIG
    if not path.is_file():
        raise ConfigError(f"model.base={source} is not a finished genzoo run (no {CONFIG}); train it first")
    return load_config_json(path.read_text())


def resolve_config(family: str, *, dataset: str | None = None, preset: str = "quick",
                   overrides: list[str] = ()) -> RunConfig:
    """Defaults -> preset -> `--dataset` -> `--set` overrides, all strict. An adapter takes its base run's data
    and sampler settings after its model.* overrides (which name the base), then `--dataset` and the rest."""
    fam = get_family(family)
    if preset not in fam.presets:
        raise ConfigError(f"unknown preset {preset!r} for {family}; choose from: {', '.join(fam.presets)}")
    cfg = RunConfig(family=family, model=fam.config(), sampler=fam.sampler(), data=DataConfig(), train=TrainConfig())
    apply_dict(cfg, fam.presets[preset])
    overrides = list(overrides)
    if family in ADAPTERS:
        apply_overrides(cfg, [o for o in overrides if o.startswith("model.")])
        overrides = [o for o in overrides if not o.startswith("model.")]
        base = base_config(cfg.model.base, family)
        if base.family not in cfg.model.BASE_FAMILIES:
            raise ConfigError(f"model.base={cfg.model.base} is a {base.family!r} run; {family} adapts one of: "
                              f"{', '.join(cfg.model.BASE_FAMILIES)}")
        cfg.sampler, cfg.data = base.sampler, base.data
    if dataset is not None:
        cfg.data.dataset = dataset
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its JSON dict (as saved beside every checkpoint), strictly."""
    try:
        fam = get_family(d["family"])
        sampler = (base_config(d["model"]["base"], d["family"]).sampler if d["family"] in ADAPTERS
                   else fam.sampler())  # an adapter samples with its base family's knobs
        cfg = RunConfig(family=d["family"], model=fam.config(), sampler=sampler, data=DataConfig(),
                        train=TrainConfig())
        model = d["model"]
        if isinstance(model, dict):  # a key an older version saved and this one retired is dropped
            model = {k: v for k, v in model.items() if k not in fam.retired_keys}
        apply_dict(cfg, {"model": model, **{k: d[k] for k in ("sampler", "data", "train")}})
    except (KeyError, TypeError) as e:
        raise ConfigError(f"not a genzoo run config (missing {e})") from None
    validate(cfg)
    return cfg


def load_config_json(text: str) -> RunConfig:
    try:
        return config_from_dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config.json is not valid JSON: {e}") from None

