"""Checkpoints: plain dicts of tensors and numbers, written atomically, loaded with `weights_only=True`.

A run directory holds
    config.json      the resolved RunConfig (rewritten on resume)
    checkpoint.pt    the latest state: model, EMA, optimizers, grad scaler, step, LR horizon,
                     data position, RNG states, elapsed time
    best.pt          the same, at the step with the lowest in-loop FD (with train.eval_every)
    metrics.jsonl    one JSON object per log interval
    samples/         EMA sample grids, step_XXXXXXX.png
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from genzoo.errors import CheckpointError

FORMAT = "genzoo-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the checkpoint with the lowest in-loop FD (train.eval_every)
CONFIG = "config.json"
METRICS = "metrics.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file, fsync, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load safely (`weights_only=True`: no arbitrary code runs); a clear error when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: is this the directory of a genzoo training run?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign classes, random bytes...
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is corrupt or not a genzoo checkpoint ({msg}). It was left untouched; "
                              f"restore it from a copy or start a new run with another --out") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a genzoo checkpoint (expected format {FORMAT!r})")
    return state


def load_model_state(model: torch.nn.Module, state: dict, what: str) -> None:
    """`load_state_dict(strict=True)`, turning shape / key mismatches into a one-line CheckpointError."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:3]
        raise CheckpointError(f"the checkpoint's {what} does not match the model built from config.json "
                              f"({'; '.join(first)[:300]})") from None


# ----------------------------------------------------------------------------------------
# RNG states: stored as tensors / lists so that weights_only loading accepts them


def capture_rng() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))
