"""The one training loop every family shares.

The trainer owns device, autocast, optimizers (one AdamW per phase), the LR schedule, clipping,
accumulation, EMA, logging, sample grids and checkpoints; the family owns only `loss(batch, phase)`.
On CPU, resuming from a checkpoint reproduces the uninterrupted run exactly: the data order is a
pure function of (seed, epoch), and the checkpoint holds every RNG state and the data position.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from genzoo.contract import Batch
from genzoo.errors import ConfigError, Interrupted, TrainingError
from genzoo.evaluation.grid import save_grid
from genzoo.train import checkpoint as ckpt
from genzoo.train.distributed import DistInfo, LossModule, any_rank, params_in_sync
from genzoo.train.ema import EMA

log = logging.getLogger("genzoo.train")


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps (each runs every phase once); the LR schedule's horizon
    minutes: float = 0.0  # wall-clock budget (0 = none); with it the horizon is fitted to the measured speed
    batch_size: int = 128  # global batch per step: all ranks and all accumulation micro-batches together
    grad_accum: int = 1
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    phase_lr: tuple[float, ...] = ()  # peak LR per phase in model.phases order (two time-scale rule); () = lr
    phase_repeats: tuple[int, ...] = ()  # optimizer steps of each phase per step, fresh batch each (e.g. 2,1)
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the horizon
    grad_clip: float = 1.0  # max global grad norm per phase; 0 = off (the norm is still logged)
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"  # auto = bf16 on CUDA, none elsewhere
    compile: bool = False  # torch.compile the loss (CUDA; helps large models)
    threads: int = 0  # CPU threads per process; 0 = cores / local processes
    log_every: int = 50
    sample_every: int = 500  # EMA sample grid every N steps; 0 = only at the end
    ckpt_every: int = 500
    n_grid: int = 64  # images in each sample grid
    eval_every: int = 0  # log FD-<classifier> of eval_n EMA samples every N steps and keep best.pt; 0 = off
    eval_n: int = 1000


# keys that may change when a run is resumed (the budget, logging and hardware), all others must match
RESUMABLE_CHANGES = {"train.steps", "train.minutes", "train.log_every", "train.sample_every", "train.ckpt_every",
                     "train.device", "train.threads", "train.compile", "data.root", "data.download",
                     "train.eval_every", "train.eval_n"}


def lr_at(step: int, horizon: int, tc: TrainConfig, peak: float | None = None) -> float:
    """Linear warm-up to `peak` (default `lr`), then cosine decay to `peak * min_lr_ratio` at `horizon`."""
    peak = tc.lr if peak is None else peak
    if step < tc.warmup_steps:
        return peak * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return peak
    progress = min(1.0, (step - tc.warmup_steps) / max(1, horizon - tc.warmup_steps))
    return peak * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def phase_settings(tc: TrainConfig, phases: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """{phase: (peak lr, repeats per step)} from train.phase_lr / train.phase_repeats."""
    for name, values in (("phase_lr", tc.phase_lr), ("phase_repeats", tc.phase_repeats)):
        if values and len(values) != len(phases):
            raise ConfigError(f"train.{name} needs one value per phase {phases}, got {values}")
    lrs = tc.phase_lr or (tc.lr,) * len(phases)
    repeats = tc.phase_repeats or (1,) * len(phases)
    if min(repeats) < 1:
        raise ConfigError(f"train.phase_repeats must be >= 1, got {repeats}")
    return {p: (lr, r) for p, lr, r in zip(phases, lrs, repeats)}


def pick_device(name: str, dist: DistInfo) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=auto or cpu")
    return torch.device(name)


class DataOrder:
    """Micro-batch k of this rank: epoch k // per_epoch of `DistributedSampler`'s (seed, epoch) permutation.

    A rank's shard interleaves the permutation, so the union over ranks of micro-batch k is exactly
    the single-process micro-batch k of the same global batch.
    """

    def __init__(self, n: int, micro: int, seed: int, dist: DistInfo):
        self.sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.micro, self.per_epoch = micro, len(self.sampler) // micro
        if self.per_epoch == 0:
            raise ConfigError(f"train.batch_size is larger than the dataset ({n} images); lower it")
        self.epoch, self.perm = -1, None

    def indices(self, k: int) -> torch.Tensor:
        epoch, i = divmod(k, self.per_epoch)
        if epoch != self.epoch:
            self.sampler.set_epoch(epoch)
            self.epoch, self.perm = epoch, torch.tensor(list(self.sampler))
        return self.perm[i * self.micro:(i + 1) * self.micro]


class StopRequest:
    """First Ctrl-C (or SIGTERM) asks the loop to save and stop at the next step; a second one aborts."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(cfg, out_dir: str | Path, *, dist: DistInfo = DistInfo(), resume: bool = False,
          stop_after: int | None = None, progress: bool = True) -> dict:
    """Train `cfg.family` on `cfg.data` into `out_dir`; returns a summary dict.

    `stop_after` ends this session after that many total steps (as if interrupted), keeping the
    LR horizon of the full run: `train(..., stop_after=N)` then `train(..., resume=True)` equals
    one uninterrupted run.
    """
    from genzoo import datasets  # late: keeps `import genzoo.train` light
    from genzoo.runs import build_model, memory_format_for

    tc: TrainConfig = cfg.train
    out = Path(out_dir)
    device = pick_device(tc.device, dist)
    threads = tc.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    amp = {"auto": "bf16" if device.type == "cuda" else "none"}.get(tc.amp, tc.amp)
    cuda = device.type == "cuda"
    memory_format = memory_format_for(device)

    # -- run directory: never overwrite a run, resume only a matching one ------------------------
    ckpt_path = out / ckpt.CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise ConfigError(f"nothing to resume: {ckpt_path} does not exist")
    state = ckpt.load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        from genzoo.config import diff
        from genzoo.registry import load_config_json
        saved = load_config_json((out / ckpt.CONFIG).read_text())
        changed = [d for d in diff(saved, cfg) if d.split(":")[0] not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(f"--resume with a different config than {out / ckpt.CONFIG}: {'; '.join(changed)}")

    # -- data, model, optimizers ---------------------------------------------------------------
    if tc.batch_size % (dist.world * tc.grad_accum):
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by processes x grad_accum "
                          f"= {dist.world} x {tc.grad_accum}")
    micro = tc.batch_size // (dist.world * tc.grad_accum)
    load = dict(root=cfg.data.root or None, download=cfg.data.download, image_size=cfg.data.image_size or None,
                channels=cfg.data.channels or None)
    if dist.is_main:
        datasets.prepare(cfg.data.dataset, root=load["root"], download=load["download"])
    if dist.enabled:
        torch.distributed.barrier()
    data = datasets.load(cfg.data.dataset, "train", **load)
    if cuda:
        data.images = data.images.to(device)  # whole split on the GPU: no loader in the loop
    order = DataOrder(len(data), micro, tc.seed, dist)

    torch.manual_seed(tc.seed)  # identical initialisation on every rank
    model = build_model(cfg, data.shape, data.num_classes)  # second stages load their frozen autoencoder here
    model = model.to(device, memory_format=memory_format)
    latents = None
    if model.uses_latents:  # latent diffusion: encode the training set once, cached on disk
        from genzoo.train.latents import cached_latents
        latents = cached_latents(model, data, cfg.data.dataset, device)
        if state is None:
            model.set_latent_scale(latents)  # a resumed run keeps the scale saved in its checkpoint
        if cuda:
            latents = latents.to(device)
    ema = EMA(model, tc.ema_decay)
    phase_cfg = phase_settings(tc, model.phases)
    optims = {p: torch.optim.AdamW(list(model.parameters_for(p)), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                   weight_decay=tc.weight_decay, fused=cuda or None) for p in model.phases}
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    if tc.steps <= 0 and tc.minutes <= 0:
        raise ConfigError("set a budget: train.steps > 0 (--steps) or train.minutes > 0 (--minutes)")
    step, horizon, consumed, elapsed_before = 0, tc.steps if tc.steps > 0 else 10**9, 0, 0.0
    best_fd = float("inf")
    torch.manual_seed(tc.seed + 1000 * dist.rank + 1)  # training noise differs per rank
    if state is not None:
        ckpt.load_model_state(model, state["model"], "model")
        ckpt.load_model_state(ema.module, state["ema"], "EMA")
        for p, opt in optims.items():
            opt.load_state_dict(state["optimizers"][p])
        scaler.load_state_dict(state["scaler"])
        step, horizon, consumed = state["step"], state["horizon"], state["consumed"]
        elapsed_before, best_fd = state["elapsed_s"], state.get("best_fd", float("inf"))
        if dist.is_main:
            ckpt.restore_rng(state["rng"])
        horizon = tc.steps if (tc.steps != saved.train.steps and not tc.minutes) else horizon
        log.info("resumed %s from step %d", out, step)

    wrapped = LossModule(model)
    if dist.enabled:
        wrapped = DDP(wrapped, device_ids=[device.index] if cuda else None,
                      find_unused_parameters=len(model.phases) > 1)
    loss_fn = torch.compile(wrapped) if tc.compile else wrapped
    autocast = torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                              enabled=amp != "none")

    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(out / ckpt.CONFIG, cfg.to_json())
    grid_labels = (torch.arange(tc.n_grid, device=device) % model.num_classes) if model.num_classes else None

    evaluator = None
    if tc.eval_every and dist.is_main:
        from genzoo.evaluation.harness import InLoopFD
        why = InLoopFD.unavailable(cfg.data)
        if why:  # presets turn it on; a dataset without a classifier simply trains without it
            log.warning("in-loop FD is off: %s", why)
        else:
            evaluator = InLoopFD(cfg.data, device)

    def save(path=ckpt_path):
        if dist.is_main:
            ckpt.save_checkpoint(path, {
                "family": cfg.family, "config": cfg.to_json(), "image_shape": list(data.shape),
                "num_classes": data.num_classes, "step": step, "horizon": horizon,
                "consumed": consumed, "elapsed_s": elapsed_before + time.time() - t_start,
                "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizers": {p: o.state_dict() for p, o in optims.items()}, "scaler": scaler.state_dict(),
                "rng": ckpt.capture_rng(), "best_fd": best_fd})

    def evaluate():
        """Log the in-loop FD of the EMA weights; keep best.pt when it improves."""
        nonlocal best_fd
        if evaluator is None:
            return
        fd = evaluator(ema.module, tc.eval_n, seed=tc.seed, knobs=vars(cfg.sampler))
        metrics_file.write(json.dumps({"step": step, "fd": fd, "fd_extractor": evaluator.extractor.name,
                                       "eval_n": tc.eval_n, "elapsed_s": elapsed_before + time.time() - t_start})
                           + "\n")
        if fd < best_fd:
            best_fd = fd
            save(out / ckpt.BEST)

    def grid():
        if dist.is_main:
            g = torch.Generator(device).manual_seed(tc.seed)
            x = ema.module.sample(tc.n_grid, labels=grid_labels, generator=g, **vars(cfg.sampler))
            save_grid(x, out / "samples" / f"step_{step:07d}.png",
                      nrow=model.num_classes if model.num_classes else None)

    def one_step():
        """One training step: each phase's optimizer steps. Logged values stay on the device (no host sync)."""
        for phase in model.phases:
            peak, repeats = phase_cfg[phase]
            for g in optims[phase].param_groups:
                g["lr"] = lr_at(step, horizon, tc, peak)
            for _ in range(repeats):
                phase_step(phase, weight=1.0 / (repeats * tc.grad_accum))

    def phase_step(phase: str, weight: float):
        """One optimizer step of `phase` over grad_accum fresh micro-batches."""
        nonlocal consumed, first_bad
        model.zero_grad(set_to_none=True)  # also clears grads another phase left on these params
        loss_sum = torch.zeros((), device=device)
        for j in range(tc.grad_accum):
            idx = order.indices(consumed)
            images, labels = data.batch(idx)
            consumed += 1
            batch = Batch(images, labels, None if latents is None else latents[idx]).to(device, memory_format)
            sync = wrapped.no_sync() if dist.enabled and j < tc.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    terms = loss_fn(batch, phase)
                loss = terms["loss"].float() / tc.grad_accum
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
            for k, v in terms.items():
                key = f"{k}/{phase}" if len(model.phases) > 1 else k
                sums[key] = sums.get(key, 0.0) + v.detach().float() * weight
        scaler.unscale_(optims[phase])
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters_for(phase) if p.grad is not None], tc.grad_clip or float("inf"))
        sums[f"grad_norm/{phase}"] = sums.get(f"grad_norm/{phase}", 0.0) + grad_norm.detach() * weight * tc.grad_accum
        bad = ~torch.isfinite(loss_sum) | (~torch.isfinite(grad_norm) & (amp != "fp16"))
        first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
        scaler.step(optims[phase])
        scaler.update()

    def check_finite():
        """Raise (on every rank alike) if any step since the last check had a non-finite loss or gradient."""
        if any_rank((first_bad >= 0).float().view(1), dist).item():
            bad_step = int(first_bad)
            raise TrainingError(
                f"the loss became nan or inf at step {bad_step} (grad norm included); nothing after step "
                f"{bad_step} was saved, the last good checkpoint in {out} is kept. Try a lower train.lr or "
                f"train.grad_clip, then continue from it with --resume")

    # -- the loop ------------------------------------------------------------------------------
    t_start = t_log = time.time()
    sums, n_logged, calibrate_at = {}, 0, step + 10
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
    end = min(horizon, stop_after) if stop_after else horizon
    bar = tqdm(total=horizon, initial=step, disable=not (progress and dist.is_main), unit="step",
               dynamic_ncols=True, desc=f"{cfg.family}/{cfg.data.dataset}",
               mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line every 30 s
    metrics_file = open(out / ckpt.METRICS, "a") if dist.is_main else None
    model.train()
    stop_reason = "done"
    with StopRequest() as stop_request, contextlib.ExitStack() as closing:
        closing.callback(bar.close)
        if metrics_file:
            closing.callback(metrics_file.close)
        while step < end:
            one_step()
            step += 1
            ema.update(model, step)
            n_logged += 1
            bar.update(1)

            if tc.minutes and step == calibrate_at and state is None:  # fit the LR horizon to the budget
                per_step = (time.time() - t_start) / 10
                horizon = min(tc.steps or 10**9, int(tc.minutes * 60 / per_step))
                end, bar.total = (min(horizon, stop_after) if stop_after else horizon), horizon
            over_time = bool(tc.minutes) and elapsed_before + time.time() - t_start > tc.minutes * 60
            flags = torch.tensor([float(stop_request.requested), float(over_time)])
            stop_now, over_time = (any_rank(flags.to(device), dist) > 0).tolist() if dist.enabled else flags.tolist()
            if step % tc.log_every == 0 or step == end or stop_now or over_time:
                check_finite()
                now = time.time()
                row = {"step": step, **{f"lr/{p}" if len(phase_cfg) > 1 else "lr": lr_at(step - 1, horizon, tc, peak)
                                        for p, (peak, _) in phase_cfg.items()},
                       **{k: float(v) / n_logged for k, v in sums.items()},
                       "img_per_s": n_logged * tc.batch_size / max(now - t_log, 1e-9),
                       "elapsed_s": elapsed_before + now - t_start}
                bar.set_postfix(loss=f"{row.get('loss', row.get('loss/' + model.phases[0], 0.0)):.4f}",
                                img_s=f"{row['img_per_s']:.0f}")
                if metrics_file:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                sums, n_logged, t_log = {}, 0, now
            if tc.sample_every and step % tc.sample_every == 0 and step < end:
                check_finite()
                grid()
            if tc.eval_every and step % tc.eval_every == 0:
                check_finite()
                evaluate()
            if step % tc.ckpt_every == 0 and step < end:
                check_finite()
                save()
            if stop_now or over_time:
                stop_reason = "interrupted" if stop_now else "time budget"
                break

    check_finite()
    save()
    if step >= horizon or stop_reason == "time budget":
        grid()
    in_sync = params_in_sync(model, dist)
    summary = {"step": step, "horizon": horizon, "stop": stop_reason, "ranks": dist.world, "ranks_in_sync": in_sync,
               "train_s": elapsed_before + time.time() - t_start, "images_seen": step * tc.batch_size}
    if metrics_file is not None:
        with open(out / ckpt.METRICS, "a") as f:
            f.write(json.dumps({"event": "end", **summary}) + "\n")
    if not in_sync:
        raise TrainingError("distributed ranks ended with different parameters; please report this as a bug")
    if stop_reason == "interrupted":
        raise Interrupted(f"stopped at step {step}; checkpoint saved in {out}. Continue with the same command "
                          f"and --resume")
    return summary
