"""The one training loop every family shares.

The trainer owns device, autocast, optimizers (one AdamW per phase), the LR schedule, clipping,
accumulation, EMA, logging, sample grids and checkpoints; the family owns only `loss(batch, phase)`.
On CPU, resuming from a checkpoint reproduces the uninterrupted run exactly: the data order is a
pure function of (seed, epoch), and the checkpoint holds every RNG state and the data position.

    p, s = setup(cfg, out_dir)      # Parts built once (model, EMA, optimizers, data, ...) and the TrainState
    while s.step < s.end:           # train(): the loop is a list of named steps over (p, s)
        train_step(p, s)            #   every phase's optimizer step(s), then the EMA
        fit_horizon(...)            #   the LR horizon, fitted to the time budget, and this session's end
        stop_check(...)             #   Ctrl-C / SIGTERM or the budget spent, agreed by every rank
        log(...); maybe_grid(...); maybe_evaluate(...); maybe_save(...)
    finish(p, s, stop)              # the last checkpoint and grid, the end event, the summary

The benchmarks time `train_step` / `forward_backward` on the same `setup()`.

A time budget (train.minutes) counts training only: sample grids and in-loop evaluations run off the
clock (`off_the_clock`) and are reported apart as `eval_s`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from genzoo.contract import Batch, GenerativeModel
from genzoo.datasets import captions, selection_key
from genzoo.errors import ConfigError, Interrupted, TrainingError
from genzoo.evaluation.grid import save_grid
from genzoo.train import checkpoint as ckpt
from genzoo.rules import Count, Count0, Decay, Fraction, NonNegative, Range
from genzoo.train.distributed import DistInfo, LossModule, any_rank, params_in_sync
from genzoo.train.ema import EMA

logger = logging.getLogger("genzoo.train")


@dataclass
class TrainConfig:
    steps: Count0 = 1000  # optimizer steps (each runs every phase once); the LR schedule's horizon
    # wall-clock budget (0 = none); with it the horizon is fitted to the measured speed
    minutes: Annotated[float, Range("[0, 1e6]")] = 0.0
    # global batch per step: all ranks and all accumulation micro-batches together
    batch_size: Annotated[int, Range("[1, 65536]")] = 128
    grad_accum: Annotated[int, Range("[1, 1024]")] = 1
    lr: Annotated[float, Range("(0, 1]")] = 2e-4
    beta1: Decay = 0.9
    beta2: Decay = 0.999
    weight_decay: Annotated[float, Range("[0, 10]")] = 0.0
    # peak LR per phase in model.phases order (two time-scale rule); () = lr
    phase_lr: Annotated[tuple[float, ...], Range("(0, 1]")] = ()
    # optimizer steps of each phase per step, fresh batch each (e.g. 2,1)
    phase_repeats: Annotated[tuple[int, ...], Range("[1, 100]")] = ()
    warmup_steps: Count0 = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: Fraction = 0.1  # cosine decays to lr * min_lr_ratio at the horizon
    grad_clip: NonNegative = 1.0  # max global grad norm per phase; 0 = off (the norm is still logged)
    ema_decay: Decay = 0.999
    seed: Annotated[int, Range("[0, 4294967295]")] = 0
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"  # auto = bf16 on CUDA, none elsewhere
    compile: bool = False  # torch.compile the loss (CUDA; helps large models)
    threads: Annotated[int, Range("[0, 1024]")] = 0  # CPU threads per process; 0 = cores / local processes
    log_every: Count = 50
    sample_every: Count0 = 500  # EMA sample grid every N steps; 0 = only at the end
    ckpt_every: Count = 500
    n_grid: Annotated[int, Range("[1, 1024]")] = 64  # images in each sample grid
    eval_every: Count0 = 0  # log FD-<classifier> of eval_n EMA samples every N steps and keep best.pt; 0 = off
    eval_n: Annotated[int, Range("[2, 1e6]")] = 1000
    # besides eval_every: this many in-loop FD evaluations spread evenly over the (fitted) horizon; 0 = off
    eval_points: Annotated[int, Range("[0, 1000]")] = 0


# keys that may change when a run is resumed (the budget, logging and hardware), all others must match
RESUMABLE_CHANGES = {"train.steps", "train.minutes", "train.log_every", "train.sample_every", "train.ckpt_every",
                     "train.device", "train.threads", "train.compile", "data.root", "data.download",
                     "train.eval_every", "train.eval_n", "train.eval_points", "train.n_grid"}

WARM_STEPS = 10  # each session's first steps, left out of the speed measurement (first kernels, allocator, compile)
REFIT_AT = (0.25, 0.5, 0.75, 0.9, 0.97)  # fractions of the fitted horizon at which a time budget refits it
clock = time.perf_counter  # the budget's clock (a test swaps in a fake one)


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


@dataclass
class TrainState:
    """What the loop changes, and what a checkpoint restores (with the RNG states and the weights)."""

    step: int = 0  # optimizer steps done (each runs every phase)
    horizon: int = 10**9  # the LR schedule's last step
    end: int = 10**9  # the step this session stops at: the horizon, or stop_after
    consumed: int = 0  # micro-batches drawn from the data order, all phases together
    elapsed_before: float = 0.0  # training seconds of the earlier sessions of this run
    eval_before: float = 0.0  # off-the-clock seconds (grids, in-loop FD) of the earlier sessions
    evals_done: int = 0  # in-loop evaluations of train.eval_points done so far
    best_fd: float = float("inf")  # lowest in-loop FD so far (best.pt)
    resumed: bool = False
    first_bad: torch.Tensor | None = None  # () long on the device: first step with a non-finite loss, -1 = none
    t_start: float = 0.0  # this session's clock
    t_log: float = 0.0  # time of the last metrics row
    paused: float = 0.0  # this session's seconds off the clock (grids, in-loop FD)
    paused_log: float = 0.0  # `paused` at the last metrics row
    session_start: int = 0  # the step this session started at
    mark: tuple[int, float] | None = None  # (step, elapsed) at the last fit (or the warm-up's end): the speed window
    next_fit: int = 10**9  # the step of the next horizon fit (train.minutes)
    sums: dict = field(default_factory=dict)  # logged terms summed on the device since the last row
    n_logged: int = 0  # steps in `sums`

    def elapsed(self, now: float | None = None) -> float:
        """Training seconds of the run so far: every session's, less the time off the clock."""
        return self.elapsed_before + (clock() if now is None else now) - self.t_start - self.paused

    def eval_s(self) -> float:
        """Seconds off the clock (sample grids, in-loop FD) of the run so far."""
        return self.eval_before + self.paused


@dataclass
class Parts:
    """What `setup` builds once: the run's config and directory, data, model, optimizers and loss."""

    cfg: object  # the RunConfig
    out: Path
    dist: DistInfo
    device: torch.device
    amp: str  # bf16 | fp16 | none
    memory_format: torch.memory_format
    data: object  # genzoo.datasets.ImageData
    order: DataOrder
    latents: torch.Tensor | None  # (N, c, h, w) cached first-stage latents (uses_latents families)
    model: torch.nn.Module
    ema: EMA
    optims: dict[str, torch.optim.Optimizer]  # one per phase
    scaler: torch.amp.GradScaler
    phase_cfg: dict[str, tuple[float, int]]  # {phase: (peak lr, repeats per step)}
    wrapped: torch.nn.Module  # LossModule, under DDP when distributed
    loss_fn: torch.nn.Module  # `wrapped`, compiled with train.compile
    autocast: torch.autocast
    evaluator: object | None  # InLoopFD on the main rank with train.eval_every, else None
    grid_labels: torch.Tensor | None  # (n_grid,) labels of the sample grids of a class-conditional model
    captions: object | None  # data.captions: dataset indices (B,) -> caption tokens (B, context), else None

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train


# ---------------------------------------------------------------------------------------------
# setup: everything built once, before the loop


def setup(cfg, out_dir: str | Path, *, dist: DistInfo = DistInfo(), resume: bool = False,
          stop_after: int | None = None) -> tuple[Parts, TrainState]:
    """Build a run's pieces and its starting state, fresh or restored from `out_dir`'s checkpoint.

    `train` runs the loop over them; the benchmarks time `train_step` / `forward_backward` on them.
    """
    from genzoo.runs import build_model, memory_format_for

    tc: TrainConfig = cfg.train
    out = Path(out_dir)
    device = pick_device(tc.device, dist)
    torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    saved, saved_steps = open_run_dir(cfg, out, resume)
    if tc.steps <= 0 and tc.minutes <= 0:
        raise ConfigError("set a budget: train.steps > 0 (--steps) or train.minutes > 0 (--minutes)")
    data, order = load_data(cfg, dist, device)
    memory_format = memory_format_for(device)

    torch.manual_seed(tc.seed)  # identical initialisation on every rank
    model = build_model(cfg, data.shape, data.num_classes)  # second stages load their frozen autoencoder here
    model = model.to(device, memory_format=memory_format)
    latents = training_latents(model, data, cfg.data.dataset + selection_key(cfg.data), device,
                               fresh=saved is None)
    ema = EMA(model, tc.ema_decay)
    phase_cfg = phase_settings(tc, model.phases)
    optims = {p: torch.optim.AdamW(list(model.parameters_for(p)), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                   weight_decay=tc.weight_decay, fused=device.type == "cuda" or None)
              for p in model.phases}
    amp = {"auto": "bf16" if device.type == "cuda" else "none"}.get(tc.amp, tc.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    s = TrainState(horizon=tc.steps if tc.steps > 0 else 10**9)
    torch.manual_seed(tc.seed + 1000 * dist.rank + 1)  # training noise differs per rank
    if saved is not None:
        restore(saved, model, ema, optims, scaler, s, restore_rng=dist.is_main)
        if tc.steps != saved_steps and not tc.minutes:  # a new step budget moves the horizon with it
            s.horizon = tc.steps
        logger.info("resumed %s from step %d", out, s.step)

    wrapped, loss_fn = wrap_loss(model, tc, dist, device)  # after restoring: DDP broadcasts rank 0's weights
    autocast = torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                              enabled=amp != "none")
    grid_labels = (torch.arange(tc.n_grid, device=device) % model.num_classes) if model.num_classes else None
    p = Parts(cfg, out, dist, device, amp, memory_format, data, order, latents, model, ema, optims, scaler,
              phase_cfg, wrapped, loss_fn, autocast,
              in_loop_fd(cfg, dist, device) if isinstance(model, GenerativeModel) else None, grid_labels,
              captions.token_fn(cfg.data.dataset, data, tc.seed) if cfg.data.captions else None)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(out / ckpt.CONFIG, cfg.to_json())
    s.first_bad = torch.full((), -1, device=device, dtype=torch.long)
    s.t_start = s.t_log = clock()
    s.session_start, s.next_fit = s.step, s.step + 2 * WARM_STEPS  # every session measures its own speed
    fit_horizon(p, s, stop_after)
    return p, s


def open_run_dir(cfg, out: Path, resume: bool) -> tuple[dict | None, int | None]:
    """(checkpoint, saved train.steps) to resume, or (None, None) for a fresh run. Never overwrites a run;
    resumes only one whose config matches except for RESUMABLE_CHANGES."""
    ckpt_path = out / ckpt.CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise ConfigError(f"nothing to resume: {ckpt_path} does not exist")
    if not resume:
        return None, None
    state = ckpt.load_checkpoint(ckpt_path)
    from genzoo.config import diff
    from genzoo.registry import load_config_json
    saved = load_config_json((out / ckpt.CONFIG).read_text())
    changed = [d for d in diff(saved, cfg) if d.split(":")[0] not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(f"--resume with a different config than {out / ckpt.CONFIG}: {'; '.join(changed)}")
    return state, saved.train.steps


def load_data(cfg, dist: DistInfo, device: torch.device):
    """The training split (on the GPU when there is one: no loader in the loop) and this rank's data order."""
    from genzoo import datasets  # late: keeps `import genzoo.train` light

    tc = cfg.train
    if tc.batch_size % (dist.world * tc.grad_accum):
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by processes x grad_accum "
                          f"= {dist.world} x {tc.grad_accum}")
    if dist.is_main:
        datasets.prepare(cfg.data.dataset, root=cfg.data.root or None, download=cfg.data.download)
    if dist.enabled:
        torch.distributed.barrier()
    data = datasets.load_from_config(cfg.data, "train")
    if device.type == "cuda":
        data.images = data.images.to(device)
    micro = tc.batch_size // (dist.world * tc.grad_accum)
    return data, DataOrder(len(data), micro, tc.seed, dist)


def training_latents(model, data, dataset: str, device: torch.device, fresh: bool) -> torch.Tensor | None:
    """Latent families: the training set encoded once by the frozen first stage (cached on disk); a fresh
    run sets the latent scale from them, a resumed one keeps the scale saved in its checkpoint."""
    if not model.uses_latents:
        return None
    from genzoo.train.latents import cached_latents
    latents = cached_latents(model, data, dataset, device)
    if fresh:
        model.set_latent_scale(latents)
    return latents.to(device) if device.type == "cuda" else latents


def wrap_loss(model, tc: TrainConfig, dist: DistInfo, device: torch.device):
    """(wrapped, loss_fn): `model.loss` as a module (under DDP when distributed), compiled with train.compile."""
    wrapped = LossModule(model)
    if dist.enabled:
        wrapped = DDP(wrapped, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=len(model.phases) > 1)
    return wrapped, torch.compile(wrapped) if tc.compile else wrapped


def restore(saved: dict, model, ema: EMA, optims: dict, scaler, s: TrainState, restore_rng: bool) -> None:
    """Load a checkpoint's weights, EMA, optimizer and scaler states, loop state and (main rank) RNG states."""
    ckpt.load_model_state(model, saved["model"], "model")
    ckpt.load_model_state(ema.module, saved["ema"], "EMA")
    for phase, opt in optims.items():
        opt.load_state_dict(saved["optimizers"][phase])
    scaler.load_state_dict(saved["scaler"])
    s.step, s.horizon, s.consumed = saved["step"], saved["horizon"], saved["consumed"]
    s.elapsed_before, s.best_fd = saved["elapsed_s"], saved.get("best_fd", float("inf"))
    s.eval_before, s.evals_done = saved.get("eval_s", 0.0), saved.get("evals_done", 0)
    s.resumed = True
    if restore_rng:
        ckpt.restore_rng(saved["rng"])


def in_loop_fd(cfg, dist: DistInfo, device: torch.device):
    """The in-loop FD evaluator (main rank, train.eval_every or train.eval_points), or None; a dataset without a
    classifier trains without it (presets turn it on)."""
    if not ((cfg.train.eval_every or cfg.train.eval_points) and dist.is_main):
        return None
    from genzoo.evaluation.harness import InLoopFD
    why = InLoopFD.unavailable(cfg.data)
    if why:
        logger.warning("in-loop FD is off: %s", why)
        return None
    return InLoopFD(cfg.data, device)


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg, out_dir: str | Path, *, dist: DistInfo = DistInfo(), resume: bool = False,
          stop_after: int | None = None, progress: bool = True) -> dict:
    """Train `cfg.family` on `cfg.data` into `out_dir`; returns a summary dict.

    `stop_after` ends this session after that many total steps (as if interrupted), keeping the
    LR horizon of the full run: `train(..., stop_after=N)` then `train(..., resume=True)` equals
    one uninterrupted run.
    """
    with ckpt.run_lock(Path(out_dir), active=dist.is_main), contextlib.ExitStack() as closing:
        p, s = setup(cfg, out_dir, dist=dist, resume=resume, stop_after=stop_after)
        stop_request = closing.enter_context(StopRequest())  # from here Ctrl-C stops at the next step, saved
        bar = closing.enter_context(tqdm(
            total=s.horizon, initial=s.step, disable=not (progress and dist.is_main), unit="step",
            dynamic_ncols=True, desc=f"{cfg.family}/{cfg.data.dataset}",
            mininterval=0.5 if sys.stderr.isatty() else 30))  # a log file gets a line every 30 s
        metrics_file = closing.enter_context(open(p.out / ckpt.METRICS, "a")) if dist.is_main else None
        p.model.train()
        stop = None
        while s.step < s.end and stop is None:
            train_step(p, s)
            fit_horizon(p, s, stop_after)
            stop = stop_check(p, s, stop_request)
            log(p, s, bar, metrics_file, force=stop is not None)
            maybe_grid(p, s)
            maybe_evaluate(p, s, metrics_file)
            maybe_save(p, s)
        return finish(p, s, stop or "done")


def train_step(p: Parts, s: TrainState) -> None:
    """One training step: each phase's optimizer steps (repeats times), then the EMA follows."""
    for phase in p.model.phases:
        peak, repeats = p.phase_cfg[phase]
        for g in p.optims[phase].param_groups:
            g["lr"] = lr_at(s.step, s.horizon, p.tc, peak)
        for _ in range(repeats):
            phase_step(p, s, phase, weight=1.0 / (repeats * p.tc.grad_accum))
    s.step += 1
    p.ema.update(p.model, s.step)
    s.n_logged += 1


def phase_step(p: Parts, s: TrainState, phase: str, weight: float) -> None:
    """One optimizer step of `phase` over grad_accum fresh micro-batches. Logged values and the
    non-finite check stay on the device (no host sync)."""
    tc, multi = p.tc, len(p.model.phases) > 1
    p.model.zero_grad(set_to_none=True)  # also clears grads another phase left on these params
    loss_sum = torch.zeros((), device=p.device)
    for j in range(tc.grad_accum):
        batch = micro_batch(p, s.consumed)
        s.consumed += 1
        last = j == tc.grad_accum - 1
        with p.wrapped.no_sync() if p.dist.enabled and not last else contextlib.nullcontext():
            loss, terms = forward_backward(p, batch, phase)
        loss_sum += loss
        for k, v in terms.items():
            key = f"{k}/{phase}" if multi else k
            s.sums[key] = s.sums.get(key, 0.0) + v.detach().float() * weight
    p.scaler.unscale_(p.optims[phase])
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [q for q in p.model.parameters_for(phase) if q.grad is not None], tc.grad_clip or float("inf"))
    key = f"grad_norm/{phase}"
    s.sums[key] = s.sums.get(key, 0.0) + grad_norm.detach() * weight * tc.grad_accum
    bad = ~torch.isfinite(loss_sum) | (~torch.isfinite(grad_norm) & (p.amp != "fp16"))  # fp16: the scaler skips
    s.first_bad = torch.where(bad & (s.first_bad < 0), s.step, s.first_bad)
    p.scaler.step(p.optims[phase])
    p.scaler.update()


def micro_batch(p: Parts, k: int) -> Batch:
    """Micro-batch k of this rank's data order, on the device (with its cached latents)."""
    idx = p.order.indices(k)
    images, labels = p.data.batch(idx)
    return Batch(images, labels, None if p.latents is None else p.latents[idx],
                 None if p.captions is None else p.captions(idx)).to(p.device, p.memory_format)


def forward_backward(p: Parts, batch: Batch, phase: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss under autocast and its (scaled) backward; returns (loss / grad_accum, detached; the terms)."""
    with p.autocast:
        terms = p.loss_fn(batch, phase)
    loss = terms["loss"].float() / p.tc.grad_accum
    p.scaler.scale(loss).backward()
    return loss.detach(), terms


def fit_horizon(p: Parts, s: TrainState, stop_after: int | None) -> None:
    """The LR horizon and this session's end.

    With train.minutes the horizon is the step at which the budget runs out at the measured speed (capped
    by train.steps). Each session leaves its first WARM_STEPS steps (one-time start-up costs) out, fits the
    horizon from the speed of the next WARM_STEPS steps, and fits it again at each REFIT_AT fraction of it
    from the speed since the previous fit, so that the schedule ends on the budget when the speed drifts. Rank 0's
    horizon is every rank's. The horizon is saved in the checkpoint, so a resumed run continues its schedule.
    """
    tc = p.tc
    if tc.minutes:
        if s.step == s.session_start + WARM_STEPS:
            s.mark = (s.step, s.elapsed())
        elif s.mark is not None and s.step >= s.next_fit and s.step > s.mark[0]:
            s.horizon = rank0(p, min(tc.steps or 10**9, measured_horizon(tc, s)))
            s.mark = (s.step, s.elapsed())  # the next fit measures the speed since this one
            s.next_fit = next((round(f * s.horizon) for f in REFIT_AT if round(f * s.horizon) > s.step), 10**9)
    s.end = min(s.horizon, stop_after) if stop_after else s.horizon


def measured_horizon(tc: TrainConfig, s: TrainState) -> int:
    """The step at which train.minutes runs out at the speed measured since the last fit (at least this step)."""
    step0, elapsed0 = s.mark
    elapsed = s.elapsed()
    per_step = (elapsed - elapsed0) / (s.step - step0)
    left = tc.minutes * 60 - elapsed
    return s.step + max(0, math.floor(left / per_step)) if per_step > 0 else 10**9


def rank0(p: Parts, value: int) -> int:
    """Rank 0's `value` on every rank (the ranks' clocks differ; their schedules must not)."""
    if not p.dist.enabled:
        return value
    t = torch.tensor([value], device=p.device, dtype=torch.long)
    torch.distributed.broadcast(t, src=0)
    return int(t.item())


@contextlib.contextmanager
def off_the_clock(s: TrainState):
    """Time spent inside is not training time: the budget does not pay for grids and in-loop evaluation."""
    t0 = clock()
    try:
        yield
    finally:
        s.paused += clock() - t0


def stop_check(p: Parts, s: TrainState, stop_request: StopRequest) -> str | None:
    """"interrupted" (Ctrl-C / SIGTERM on any rank), "time budget" (train.minutes spent), or None to go on."""
    over_time = bool(p.tc.minutes) and s.elapsed() > p.tc.minutes * 60
    flags = torch.tensor([float(stop_request.requested), float(over_time)])
    stop_now, over_time = (any_rank(flags.to(p.device), p.dist) > 0).tolist() if p.dist.enabled else flags.tolist()
    return "interrupted" if stop_now else "time budget" if over_time else None


def log(p: Parts, s: TrainState, bar, metrics_file, force: bool) -> None:
    """Advance the progress bar; every log_every steps (and at the end) write the mean logged terms,
    the LRs and images/s as one metrics.jsonl row."""
    bar.total = s.horizon
    bar.update(1)
    if not (s.step % p.tc.log_every == 0 or s.step == s.end or force):
        return
    check_finite(p, s)
    now = clock()
    many = len(p.phase_cfg) > 1
    row = {"step": s.step, **{f"lr/{ph}" if many else "lr": lr_at(s.step - 1, s.horizon, p.tc, peak)
                              for ph, (peak, _) in p.phase_cfg.items()},
           **{k: float(v) / s.n_logged for k, v in s.sums.items()},
           "img_per_s": s.n_logged * p.tc.batch_size / max(now - s.t_log - (s.paused - s.paused_log), 1e-9),
           "elapsed_s": s.elapsed(now)}
    bar.set_postfix(loss=f"{row.get('loss', row.get('loss/' + p.model.phases[0], 0.0)):.4f}",
                    img_s=f"{row['img_per_s']:.0f}")
    if metrics_file:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
    s.sums, s.n_logged, s.t_log, s.paused_log = {}, 0, now, s.paused


def maybe_grid(p: Parts, s: TrainState) -> None:
    if p.tc.sample_every and s.step % p.tc.sample_every == 0 and s.step < s.end:
        check_finite(p, s)
        with off_the_clock(s):
            grid(p, s)


def maybe_evaluate(p: Parts, s: TrainState, metrics_file) -> None:
    """Every eval_every steps, and at each of the eval_points even fractions of the horizon, log the in-loop
    FD of the EMA weights (off the clock); keep best.pt when it improves."""
    K = p.tc.eval_points
    due_point = K and s.horizon < 10**9 and s.step * K >= (s.evals_done + 1) * s.horizon  # the horizon is fitted
    if due_point:
        s.evals_done = min(K, s.step * K // s.horizon)
    if not (due_point or (p.tc.eval_every and s.step % p.tc.eval_every == 0)):
        return
    check_finite(p, s)
    if p.evaluator is None:
        return
    with off_the_clock(s):
        t0 = clock()
        fd = p.evaluator(p.ema.module, p.tc.eval_n, seed=p.tc.seed, knobs=vars(p.cfg.sampler))
        metrics_file.write(json.dumps({"step": s.step, "fd": fd, "fd_extractor": p.evaluator.extractor.name,
                                       "eval_n": p.tc.eval_n, "elapsed_s": s.elapsed(),
                                       "eval_s": clock() - t0}) + "\n")
        if fd < s.best_fd:
            s.best_fd = fd
            save(p, s, p.out / ckpt.BEST)


def maybe_save(p: Parts, s: TrainState) -> None:
    if s.step % p.tc.ckpt_every == 0 and s.step < s.end:
        check_finite(p, s)
        save(p, s)


def check_finite(p: Parts, s: TrainState) -> None:
    """Raise (on every rank alike) if any step since the last check had a non-finite loss or gradient."""
    if any_rank((s.first_bad >= 0).float().view(1), p.dist).item():
        bad_step = int(s.first_bad)
        raise TrainingError(
            f"the loss became nan or inf at step {bad_step} (grad norm included); nothing after step "
            f"{bad_step} was saved, the last good checkpoint in {p.out} is kept. Try a lower train.lr or "
            f"train.grad_clip, then continue from it with --resume")


def grid(p: Parts, s: TrainState) -> None:
    """A grid of EMA samples, the same noise every time (seeded by train.seed): samples/step_XXXXXXX.png.
    A component (not a GenerativeModel) has none."""
    if p.dist.is_main and isinstance(p.model, GenerativeModel):
        g = torch.Generator(p.device).manual_seed(p.tc.seed)
        x = p.ema.module.sample(p.tc.n_grid, labels=p.grid_labels, generator=g, **vars(p.cfg.sampler))
        save_grid(x, p.out / "samples" / f"step_{s.step:07d}.png",
                  nrow=p.model.num_classes if p.model.num_classes else None)


def save(p: Parts, s: TrainState, path: Path | None = None) -> None:
    """The whole state (main rank), atomically: weights, EMA, optimizers, scaler, loop state, RNG states."""
    if p.dist.is_main:
        ckpt.save_checkpoint(path or p.out / ckpt.CHECKPOINT, {
            "family": p.cfg.family, "config": p.cfg.to_json(), "image_shape": list(p.data.shape),
            "num_classes": p.data.num_classes, "step": s.step, "horizon": s.horizon,
            "consumed": s.consumed, "elapsed_s": s.elapsed(), "eval_s": s.eval_s(), "evals_done": s.evals_done,
            "model": p.model.state_dict(), "ema": p.ema.state_dict(),
            "optimizers": {ph: o.state_dict() for ph, o in p.optims.items()}, "scaler": p.scaler.state_dict(),
            "rng": ckpt.capture_rng(), "best_fd": s.best_fd})
        adapter = p.ema.module.adapter_state() if isinstance(p.model, GenerativeModel) else None
        if adapter is not None:  # an adapter's updates alone, from the EMA weights, beside the checkpoint
            ckpt.save_adapter(p.out / ckpt.ADAPTER, *adapter)


def finish(p: Parts, s: TrainState, stop: str) -> dict:
    """The last checkpoint and grid, the end event in metrics.jsonl, and the summary (or the stop's error)."""
    check_finite(p, s)
    save(p, s)
    if s.step >= s.horizon or stop == "time budget":
        with off_the_clock(s):
            grid(p, s)
    in_sync = params_in_sync(p.model, p.dist)
    summary = {"step": s.step, "horizon": s.horizon, "stop": stop, "ranks": p.dist.world, "ranks_in_sync": in_sync,
               "train_s": s.elapsed(), "eval_s": s.eval_s(), "images_seen": s.step * p.tc.batch_size,
               "budget_s": p.tc.minutes * 60 or None}
    if p.dist.is_main:
        with open(p.out / ckpt.METRICS, "a") as f:
            f.write(json.dumps({"event": "end", **summary}) + "\n")
    if not in_sync:
        raise TrainingError("distributed ranks ended with different parameters; please report this as a bug")
    if stop == "interrupted":
        raise Interrupted(f"stopped at step {s.step}; checkpoint saved in {p.out}. Continue with the same command "
                          f"and --resume")
    return summary
