"""Checkpoints: plain dicts of tensors and numbers, written atomically, loaded with `weights_only=True`.

A run directory holds
    config.json      the resolved RunConfig (rewritten on resume)
    checkpoint.pt    the latest state: model, EMA, optimizers, grad scaler, step, LR horizon,
                     data position, RNG states, elapsed time
    best.pt          the same, at the step with the lowest in-loop FD (with train.eval_every)
    metrics.jsonl    one JSON object per log interval
    samples/         EMA sample grids, step_XXXXXXX.png
    .lock            held (flock) by the one process training into the directory
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from genzoo.errors import CheckpointError, ConfigError, TrainingError

FORMAT = "genzoo-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the checkpoint with the lowest in-loop FD (train.eval_every)
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"
ADAPTER = "adapter.safetensors"  # an adapter run's updates alone (models/lora.py), beside its checkpoint


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temp file behind
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file, fsync, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous checkpoint at `path` is untouched
        raise


@contextlib.contextmanager
def run_lock(out: Path, *, active: bool = True):
    """Hold an exclusive lock on `out` while training into it: a second trainer is refused with one line.

    flock is released by the OS when the process ends, however it ends, so a crash leaves no stale lock.
    A directory this call created and nothing else wrote into is removed again on the way out.
    """
    if not active:
        yield
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run directory; choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / LOCK, "a")
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {out}: {e.strerror}; choose another --out") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(f"{out} is in use by another training process; wait for it to finish or choose "
                          f"another --out") from None
    try:
        yield
    except OSError as e:  # disk full, permissions, a removed directory: writes are atomic, so nothing is lost
        where = f" ({e.filename})" if e.filename else ""
        raise TrainingError(f"could not write the run{where}: {e.strerror or e}; the last good checkpoint in {out} "
                            f"is kept. Free space or fix permissions, then continue with --resume") from None
    finally:
        f.close()
        if created and {p.name for p in out.iterdir()} <= {LOCK}:
            shutil.rmtree(out, ignore_errors=True)


def save_adapter(path: Path, weights: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Tensors and string metadata as safetensors, atomically (an earlier file is never half overwritten)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_adapter(source: str | Path, *, flag: str, family: str, fmt: str) -> tuple[dict[str, torch.Tensor],
                                                                                dict[str, str]]:
    """(weights, metadata) of an adapter file, or of a run directory's; one line, naming the option `flag`, when it
    is missing, unreadable, or not of format `fmt`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(source) / ADAPTER if Path(source).is_dir() else Path(source)
    if not path.is_file():
        raise CheckpointError(f"{flag} {source}: no adapter file there; train one with `genzoo train {family} "
                              f"--set model.base=RUN --out DIR` and pass DIR or DIR/{ADAPTER}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{flag} {source}: not a readable safetensors file ({e})") from None
    if meta.get("format") != fmt:
        raise CheckpointError(f"{flag} {source}: not a genzoo {family} adapter (format {meta.get('format')!r})")
    return weights, meta


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
