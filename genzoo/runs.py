"""Open a finished (or interrupted) training run for sampling and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genzoo.config import RunConfig
from genzoo.errors import CheckpointError, ConfigError
from genzoo.registry import get_family, load_config_json
from genzoo.train import checkpoint as ckpt


@dataclass
class Run:
    path: Path
    config: RunConfig
    model: torch.nn.Module  # EMA weights (or raw with ema=False), eval mode
    step: int
    image_shape: tuple[int, int, int]
    num_classes: int  # of the dataset; model.num_classes is 0 when unconditional


def build_model(cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    """Construct `cfg.family`'s model. A second-stage family (its config has a non-empty
    `model.autoencoder` run directory) gets that finished run's EMA model, frozen, as `autoencoder=`;
    the model class lists which first-stage families it accepts in `autoencoder_families`. A family that
    is a first or a second stage (`transformer`: on pixels, or a VQ-VAE prior) builds its `second_stage`
    class when `model.autoencoder` is set."""
    from genzoo.registry import ADAPTERS

    cls = get_family(cfg.family).model_for(cfg.model)
    if cfg.family in ADAPTERS:  # a finished run, frozen, with what the adapter adds
        base = frozen_run(cfg.model.base, cfg.model.BASE_FAMILIES, "model.base", cfg.family)
        if tuple(base.image_shape) != tuple(image_shape) or base.num_classes != num_classes:
            raise ConfigError(f"model.base={cfg.model.base} was trained on {base.image_shape} images of "
                              f"{base.num_classes} classes; this run's data has {tuple(image_shape)} images of "
                              f"{num_classes}: choose a dataset of the same shape")
        return cls(cfg.model, image_shape=image_shape, num_classes=num_classes, base=base.model,
                   base_family=base.config.family)
    kwargs = {}
    if getattr(cfg.model, "text_encoder", ""):  # a finished clip run: its frozen text encoder
        if not cfg.data.captions:
            raise ConfigError("model.text_encoder conditions on captions: add data.captions=true")
        kwargs["text_encoder"] = frozen_run(cfg.model.text_encoder, ("clip",), "model.text_encoder", cfg.family).model
    source = cfg.model.autoencoder if cls.autoencoder_families else ""
    if not source:
        return cls(cfg.model, image_shape=image_shape, num_classes=num_classes, **kwargs)
    first = frozen_run(source, cls.autoencoder_families, "model.autoencoder", cfg.family)
    if tuple(first.image_shape) != tuple(image_shape):
        raise ConfigError(f"model.autoencoder={source} was trained on {first.image_shape} images, this run's data is "
                          f"{tuple(image_shape)}; use the same dataset for both stages")
    return cls(cfg.model, image_shape=image_shape, num_classes=num_classes, autoencoder=first.model, **kwargs)


def frozen_run(source: str, accepted: tuple[str, ...], key: str, family: str) -> Run:
    """The finished run in `source` (config key `key` of a `family` run names it), one of the `accepted`
    families, with its EMA model frozen (in eval mode, no gradients)."""
    if not (Path(source) / ckpt.CONFIG).is_file():
        raise CheckpointError(f"{key}={source} is not a finished genzoo run; train it first, e.g. "
                              f"`genzoo train {accepted[0] if accepted else 'vae'} --out {source}`")
    run = open_run(source)
    if run.config.family not in accepted:
        raise ConfigError(f"{key}={source} is a {run.config.family!r} run; {family} needs one of: "
                          f"{', '.join(accepted)}")
    run.model.eval().requires_grad_(False)
    return run


def memory_format_for(device: str | torch.device) -> torch.memory_format:
    """channels_last on CUDA (cuDNN's fast layout, measured by benchmarks/peers.py), contiguous elsewhere
    (slower on CPU, measured by benchmarks/memory_format.py)."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def open_run(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
             best: bool = False) -> Run:
    """Rebuild the model from `config.json` and load the EMA (default) or raw weights of the latest
    checkpoint, or of `best.pt` (lowest in-loop FD) with best=True."""
    path = Path(run_dir)
    if not (path / ckpt.CONFIG).is_file():
        raise CheckpointError(f"{path} is not a genzoo run (no {ckpt.CONFIG}); train one with "
                              f"`genzoo train FAMILY --dataset NAME --out {path}`")
    cfg = load_config_json((path / ckpt.CONFIG).read_text())
    state = ckpt.load_checkpoint(path / (ckpt.BEST if best else ckpt.CHECKPOINT))
    weights = state["ema" if ema else "model"]
    shape, num_classes = tuple(state["image_shape"]), int(state["num_classes"])
    model = build_model(cfg, shape, num_classes)
    ckpt.load_model_state(model, weights, "EMA weights" if ema else "weights")
    model = model.to(device, memory_format=memory_format_for(device)).eval()  # the layout the trainer used
    return Run(path, cfg, model, int(state["step"]), shape, num_classes)

