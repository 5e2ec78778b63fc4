"""Open a finished (or interrupted) training run for sampling and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genzoo.config import RunConfig
from genzoo.errors import CheckpointError
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
    model = get_family(cfg.family).model(cfg.model, image_shape=shape, num_classes=num_classes)
    ckpt.load_model_state(model, weights, "EMA weights" if ema else "weights")
    return Run(path, cfg, model.to(device).eval(), int(state["step"]), shape, num_classes)

