"""GAN-specific behaviour: phase isolation, spectral norm, the discriminator learns, trainer phase settings."""

import json

import pytest
import torch

from conftest import tiny_config
from genzoo.contract import Batch
from genzoo.datasets import load
from genzoo.errors import ConfigError
from genzoo.models.gan import GAN, GANConfig
from genzoo.train import checkpoint as ckpt
from genzoo.train.trainer import train


SYNTHETIC = {}


def data_batch(n=32, seed=0):
    data = SYNTHETIC.setdefault("16", load("synthetic", image_size=16))
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return Batch(*data.batch(idx))


def test_each_phase_touches_only_its_own_network():
    model = GAN(GANConfig(z_dim=8, channels=8, class_cond=True), (1, 16, 16), 10)
    model.loss(data_batch(), "disc")["loss"].backward()
    assert all(p.grad is None for p in model.G.parameters())
    assert all(p.grad is not None for p in model.D.parameters())
    model.zero_grad(set_to_none=True)
    model.loss(data_batch(), "gen")["loss"].backward()
    assert all(p.grad is None for p in model.D.parameters())
    assert all(p.grad is not None for p in model.G.parameters())
    assert all(p.requires_grad for p in model.D.parameters()), "the gen phase must unfreeze D afterwards"


def test_spectral_norm_bounds_the_largest_singular_value_near_one():
    torch.manual_seed(0)
    model = GAN(GANConfig(z_dim=8, channels=8, d_norm="spectral"), (1, 16, 16), 10)
    for _ in range(30):  # power iterations run in training-mode forward passes
        model.D(torch.randn(8, 1, 16, 16), None)
    for name, module in model.D.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05), name


def test_the_discriminator_learns_to_tell_real_from_fake():
    torch.manual_seed(0)
    model = GAN(GANConfig(z_dim=8, channels=8), (1, 16, 16), 10)
    opt = torch.optim.Adam(model.parameters_for("disc"), lr=2e-3, betas=(0.5, 0.999))
    accs = []
    for step in range(40):
        terms = model.loss(data_batch(seed=step), "disc")
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        accs.append(float(terms["d_acc"]))
    assert accs[0] < 0.75 and min(accs[-5:]) > 0.95  # from chance to telling them apart


def test_r1_penalty_is_logged_and_differentiable():
    model = GAN(GANConfig(z_dim=8, channels=8, r1_gamma=10.0), (1, 16, 16), 10)
    terms = model.loss(data_batch(), "disc")
    terms["loss"].backward()
    assert terms["r1"] > 0 and all(p.grad is not None for p in model.D.parameters())


def test_trainer_phase_repeats_and_two_time_scale_learning_rates(tmp_path):
    cfg = tiny_config("gan", "train.steps=4", "train.log_every=4", "train.phase_lr=4e-4,1e-4",
                      "train.phase_repeats=2,1", "train.ckpt_every=100")
    train(cfg, tmp_path, progress=False)
    state = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT)
    assert state["consumed"] == 4 * 3, "two fresh disc batches and one gen batch per step"
    row = [json.loads(x) for x in (tmp_path / ckpt.METRICS).read_text().splitlines()][0]
    assert row["lr/disc"] == pytest.approx(4e-4) and row["lr/gen"] == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="one value per phase"):
        train(tiny_config("gan", "train.phase_lr=1e-4"), tmp_path / "bad", progress=False)


def test_gan_resume_is_exact(tmp_path):
    cfg = tiny_config("gan", "train.steps=8", "train.ckpt_every=4", "train.device=cpu", "model.class_cond=true")
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, stop_after=4)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (ckpt.load_checkpoint(tmp_path / r / ckpt.CHECKPOINT) for r in ("a", "b"))
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
