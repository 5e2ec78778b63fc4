"""The shared trainer: learning, exact resume, accumulation, budgets, and losing nothing on failure."""

import json

import pytest
import torch

from conftest import tiny_config
from genzoo.errors import CheckpointError, ConfigError, TrainingError
from genzoo.models.vae import VAE
from genzoo.runs import open_run
from genzoo.train import checkpoint as ckpt
from genzoo.train import trainer
from genzoo.train.trainer import lr_at, train, train_step


def metrics(run):
    return [json.loads(line) for line in (run / ckpt.METRICS).read_text().splitlines()]


def state(run):
    return ckpt.load_checkpoint(run / ckpt.CHECKPOINT)


def test_the_loss_falls(tmp_path):
    cfg = tiny_config("vae", "train.steps=60", "train.log_every=10", "train.ckpt_every=1000")
    train(cfg, tmp_path, progress=False)
    rows = [r for r in metrics(tmp_path) if "loss" in r]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert (tmp_path / "samples" / "step_0000060.png").is_file()


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    """Bit-for-bit on CPU (GPU kernels may be non-deterministic)."""
    cfg = tiny_config("vae", "train.steps=12", "train.ckpt_every=4", "train.device=cpu")
    train(cfg, tmp_path / "straight", progress=False)
    summary = train(cfg, tmp_path / "split", progress=False, stop_after=6)
    assert summary["step"] == 6 and summary["stop"] == "done"
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a, b = state(tmp_path / "straight"), state(tmp_path / "split")
    assert a["step"] == b["step"] == 12
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    sa = open_run(tmp_path / "straight").model.sample(8, generator=g())
    sb = open_run(tmp_path / "split").model.sample(8, generator=g())
    assert torch.equal(sa, sb)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    from toy_family import register
    register()
    full = tiny_config("toy", "train.device=cpu")  # exact fp32 arithmetic (CUDA would use bf16 / TF32)
    accum = tiny_config("toy", "train.grad_accum=4", "train.device=cpu")
    train(full, tmp_path / "full", progress=False)
    train(accum, tmp_path / "accum", progress=False)
    a, b = state(tmp_path / "full")["model"], state(tmp_path / "accum")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_setup_and_train_step_are_the_loops_own_step(tmp_path, family):
    """The benchmarks time `train_step` on `setup()`: a few of them equal `train()` for as many steps, bit for bit."""
    cfg = tiny_config(family, "train.steps=3", "train.device=cpu", "train.sample_every=0")
    train(cfg, tmp_path / "loop", progress=False)
    p, s = trainer.setup(cfg, tmp_path / "steps")  # module-qualified: a test module's own `setup` is a hook name
    p.model.train()
    while s.step < s.end:
        train_step(p, s)
    assert s.step == 3 and s.consumed == state(tmp_path / "loop")["consumed"]
    for k, v in state(tmp_path / "loop")["model"].items():
        assert torch.equal(p.model.state_dict()[k], v), k


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = tiny_config("vae", "train.lr=1.0", "train.warmup_steps=10", "train.min_lr_ratio=0.1")
    lrs = [lr_at(s, 100, cfg.train) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0.1)


def test_a_minutes_budget_stops_on_time_and_fits_the_schedule(tmp_path):
    cfg = tiny_config("vae", "train.steps=0", "train.minutes=0.05")
    summary = train(cfg, tmp_path, progress=False)
    assert summary["stop"] in ("time budget", "done") and summary["step"] >= 1
    assert summary["train_s"] < 0.05 * 60 + 5
    if summary["step"] > 10:  # the horizon is fitted after 10 measured steps
        assert summary["horizon"] < 10**9


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config("vae", "train.steps=20", "train.ckpt_every=5")
    real_loss, calls = VAE.loss, {"n": 0}

    def loss_that_explodes(self, batch, phase="main"):
        calls["n"] += 1
        out = real_loss(self, batch, phase)
        if calls["n"] >= 8:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VAE, "loss", loss_that_explodes)
    with pytest.raises(TrainingError, match=r"loss became nan or inf at step 7.*last good checkpoint"):
        train(cfg, tmp_path, progress=False)
    kept = state(tmp_path)
    assert kept["step"] == 5
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_an_existing_run_is_never_overwritten(tmp_path):
    cfg = tiny_config("vae", "train.steps=4")
    train(cfg, tmp_path, progress=False)
    before = (tmp_path / ckpt.CHECKPOINT).read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path, progress=False)
    assert (tmp_path / ckpt.CHECKPOINT).read_bytes() == before


def test_resume_refuses_a_different_model(tmp_path):
    train(tiny_config("vae", "train.steps=4"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="model.z_dim"):
        train(tiny_config("vae", "train.steps=8", "model.z_dim=8"), tmp_path, resume=True, progress=False)


def test_a_corrupt_checkpoint_is_reported_and_left_untouched(tmp_path):
    cfg = tiny_config("vae", "train.steps=4")
    train(cfg, tmp_path, progress=False)
    path = tmp_path / ckpt.CHECKPOINT
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as after a full disk
    garbage = path.read_bytes()
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_config("vae", "train.steps=8"), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="corrupt"):
        open_run(tmp_path)
    assert path.read_bytes() == garbage


def test_checkpoints_load_with_weights_only_and_hold_the_whole_state(tmp_path):
    train(tiny_config("vae", "train.steps=4"), tmp_path, progress=False)
    s = torch.load(tmp_path / ckpt.CHECKPOINT, weights_only=True)
    for key in ("model", "ema", "optimizers", "scaler", "step", "horizon", "consumed", "rng", "config"):
        assert key in s
    assert json.loads((tmp_path / ckpt.CONFIG).read_text())["family"] == "vae"


def test_the_ema_averages_trainable_weights_and_copies_buffers_and_frozen_weights():
    """theta_ema <- d theta_ema + (1 - d) theta for trained weights; buffers follow the model; a frozen
    submodule (a latent model's autoencoder) keeps the copy taken at the start."""
    from genzoo.train.ema import EMA
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    model[2].requires_grad_(False)
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the frozen layer changes too, which training never does: the EMA must ignore it
    model.train()(torch.randn(8, 3))  # moves BatchNorm's running statistics
    step = 100
    ema.update(model, step)
    d = ema.decay_at(step)
    now = ema.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.allclose(now[k], d * start[k] + (1 - d) * model.state_dict()[k]), k
    for k in ("2.weight", "2.bias"):
        assert torch.equal(now[k], start[k]), k
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(now[k], model.state_dict()[k]), k


class FakeClock:
    """The trainer's budget clock, advanced only by training steps: `cost(step)` seconds for the step to `step`."""

    def __init__(self, monkeypatch, cost):
        self.t, self.cost, real_step = 0.0, cost, trainer.train_step

        def timed_step(p, s):
            real_step(p, s)
            self.t += self.cost(s.step)

        monkeypatch.setattr(trainer, "clock", lambda: self.t)
        monkeypatch.setattr(trainer, "train_step", timed_step)


def test_a_minutes_budget_ends_within_its_band_despite_start_up_and_drift(tmp_path, monkeypatch):
    """Issue 20: the first steps pay start-up costs and the machine slows down halfway; training still
    ends between 95% and 101% of its minutes, by its own fitted horizon (the LR schedule completes)."""
    def cost(step):  # a 3 s first step, then 1/8 s per step, 1/5 s per step from step 150
        return 3.0 if step == 1 else 0.125 if step < 150 else 0.2

    FakeClock(monkeypatch, cost)
    cfg = tiny_config("vae", "train.steps=0", "train.minutes=0.5", "train.log_every=1000", "train.ckpt_every=1000")
    summary = train(cfg, tmp_path, progress=False)
    assert 0.95 * 30 <= summary["train_s"] <= 1.01 * 30, summary
    assert summary["stop"] == "done" and summary["step"] == summary["horizon"]
    assert summary["budget_s"] == 30


def test_a_minutes_budget_that_the_speed_overruns_stops_on_time(tmp_path, monkeypatch):
    """If the steps slow down after the last refit, the clock still ends the run within one step of its budget."""
    FakeClock(monkeypatch, lambda step: 0.125 if step < 230 else 1.0)
    cfg = tiny_config("vae", "train.steps=0", "train.minutes=0.5", "train.log_every=1000", "train.ckpt_every=1000")
    summary = train(cfg, tmp_path, progress=False)
    assert summary["stop"] == "time budget" and 30 < summary["train_s"] <= 30 + 1.0


def test_resume_after_a_budget_refit_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """The fitted horizon is in the checkpoint: interrupted after a refit and resumed, a minutes run ends
    bit for bit where the uninterrupted one does (a fake clock makes the speed the same in both)."""
    FakeClock(monkeypatch, lambda step: 0.125)
    cfg = tiny_config("vae", "train.steps=0", "train.minutes=0.25", "train.ckpt_every=1000", "train.device=cpu")
    straight = train(cfg, tmp_path / "straight", progress=False)
    first = train(cfg, tmp_path / "split", progress=False, stop_after=70)  # refits at 20, 30, 60
    assert first["step"] == 70 and state(tmp_path / "split")["horizon"] == straight["horizon"] == 120
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a, b = state(tmp_path / "straight"), state(tmp_path / "split")
    assert a["step"] == b["step"] == 120 and a["elapsed_s"] == b["elapsed_s"] == 15.0
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"


def test_sample_grids_are_off_the_budget_clock(tmp_path, monkeypatch):
    """Grids (and in-loop FD) do not spend the training budget: their seconds are reported apart."""
    clock = FakeClock(monkeypatch, lambda step: 0.125)
    real_grid = trainer.grid

    def slow_grid(p, s):
        real_grid(p, s)
        clock.t += 5.0

    monkeypatch.setattr(trainer, "grid", slow_grid)
    cfg = tiny_config("vae", "train.steps=40", "train.sample_every=10", "train.ckpt_every=1000")
    summary = train(cfg, tmp_path, progress=False)
    assert summary["train_s"] == 40 * 0.125 and summary["eval_s"] == 4 * 5.0  # grids at 10, 20, 30 and the end
    assert state(tmp_path)["eval_s"] == 3 * 5.0, "the checkpoint is saved before the last grid"
