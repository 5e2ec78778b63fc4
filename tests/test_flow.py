"""Flow matching (models/flow.py, models/diffusion/flow.py), the ODE solvers and the ODE likelihood
(models/diffusion/ode.py): the path, the solvers' convergence, Hutchinson's estimator, reflow, resume."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from genzoo.contract import Batch
from genzoo.errors import ConfigError
from genzoo.models.diffusion import flow, ode
from genzoo.models.flow import FlowConfig, RectifiedFlow, reflow_pairs
from genzoo.runs import open_run
from genzoo.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


# -- the path ---------------------------------------------------------------------------------

def test_the_interpolation_and_its_velocity_are_exact_at_both_ends():
    x0, eps = torch.rand(4, 1, 6, 6) * 2 - 1, torch.randn(4, 1, 6, 6)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(4)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.ones(4)), eps)
    for t in (0.0, 0.5, 1.0):  # the path's derivative is the target, at the ends too (one-sided differences)
        h = 1e-3 if t < 1 else -1e-3
        a = flow.interpolate(x0.double(), eps.double(), torch.full((4,), t, dtype=torch.float64))
        b = flow.interpolate(x0.double(), eps.double(), torch.full((4,), t + h, dtype=torch.float64))
        torch.testing.assert_close((b - a) / h, flow.velocity(x0.double(), eps.double()), atol=1e-9, rtol=0)


def test_training_times_and_the_sd3_shift():
    assert flow.shift(0.0, 3.0) == 0.0 and flow.shift(1.0, 3.0) == 1.0 and flow.shift(0.5, 1.0) == 0.5
    assert flow.shift(0.5, 3.0) == 0.75  # s t / (1 + (s - 1) t)
    torch.manual_seed(0)
    u = flow.sample_time(20000, "uniform")
    ln = flow.sample_time(20000, "logit_normal")
    shifted = flow.sample_time(20000, "logit_normal", s=3.0)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean().item() - 0.5) < 0.01
    assert abs(ln.median().item() - 0.5) < 0.01 and ln.std() < u.std()  # the middle is favoured
    assert abs(shifted.median().item() - 0.75) < 0.01  # the median moves with the shift
    grid = flow.time_grid(4, 3.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and grid == sorted(grid, reverse=True) and len(grid) == 5


# -- the solvers --------------------------------------------------------------------------------

def linear_field():
    """dx/dt = A x + b t: the exact solution is known (matrix exponential)."""
    torch.manual_seed(0)
    A = (torch.randn(3, 3) * 0.7).double()
    b = torch.randn(3).double()
    return (lambda x, t: x @ A.T + b * t), A, b


def test_euler_with_many_steps_converges_to_heuns_result_on_a_linear_field():
    f, A, b = linear_field()
    x1 = torch.randn(5, 3, dtype=torch.float64)
    ts = lambda n: [1 - i / n for i in range(n + 1)]  # noqa: E731  from t = 1 to t = 0, as the sampler runs
    reference = ode.heun(f, x1, ts(2000))
    errors = [(ode.euler(f, x1, ts(n)) - reference).abs().max().item() for n in (50, 500, 5000)]
    assert errors[2] < 1e-3 and errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8  # first order: 10x
    for name in ("midpoint", "heun"):  # second order: 4x steps, 16x smaller errors
        e = [(ode.SOLVERS[name](f, x1, ts(n)) - reference).abs().max().item() for n in (20, 80)]
        assert e[0] / e[1] > 12, name
    no_b = lambda x, t: x @ A.T  # noqa: E731  the homogeneous field against the matrix exponential
    exact = x1 @ torch.linalg.matrix_exp(-A).T
    torch.testing.assert_close(ode.heun(no_b, x1, ts(1000)), exact, atol=1e-6, rtol=0)


def perfect_velocity(x0: torch.Tensor):
    """The exact velocity of a one-point data set: x_t = (1 - t) x0 + t eps gives v = (x_t - x0) / t."""
    return lambda x, t: (x - x0) / t


@pytest.mark.parametrize("name", ["euler", "midpoint"])  # Heun's corrector evaluates at t = 0, where this v is 0/0
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_a_perfect_velocity_lands_on_the_data_in_any_number_of_steps(name, steps):
    """Straight paths: Euler is exact for a field that is constant along them (why reflow pays at 1-2 steps)."""
    x0, eps = torch.rand(4, 1, 6, 6) * 2 - 1, torch.randn(4, 1, 6, 6)
    x = ode.SOLVERS[name](perfect_velocity(x0), eps, flow.time_grid(steps, 2.0))
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


# -- the likelihood ------------------------------------------------------------------------------

def test_the_hutchinson_estimate_is_unbiased_against_the_exact_trace_on_a_small_network():
    torch.manual_seed(0)
    D, K = 6, 4000
    net = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).double()
    x = torch.randn(3, D, dtype=torch.float64)
    f = lambda x, t: net(x)  # noqa: E731
    J = torch.stack([torch.autograd.functional.jacobian(net, x[i]) for i in range(3)])  # (3, D, D)
    exact = J.diagonal(dim1=1, dim2=2).sum(1)  # (3,)
    probes = ode.rademacher((K, *x.shape), torch.Generator().manual_seed(1)).double()  # (K, 3, D)
    _, estimate = ode.field_and_divergence(f, x, 0.0, probes)
    _, one = ode.field_and_divergence(f, x, 0.0, probes[:1])
    # Var(e^T J e) for Rademacher e: (1/2) sum_{i != j} (J_ij + J_ji)^2, so the mean of K has sd sqrt(var / K)
    S = J + J.transpose(1, 2)
    var = 0.5 * (S.pow(2).sum((1, 2)) - S.diagonal(dim1=1, dim2=2).pow(2).sum(1))
    assert (var > 1e-3).all(), "a network with off-diagonal Jacobian entries: single probes are noisy"
    assert ((estimate - exact).abs() < 4 * (var / K).sqrt()).all()
    assert not torch.allclose(one, exact, atol=1e-3)


def test_the_ode_likelihood_is_exact_for_a_linear_flow():
    """dx/dt = a x carries x_0 to x_1 = e^a x_0 and divergence a D: log p_0(x) = log N(e^a x; 0, I) + a D."""
    a, D = 0.7, 12
    x = torch.randn(5, D)
    log_p = ode.log_likelihood(lambda x, t: a * x, x, [i / 200 for i in range(201)], ode.gaussian_log_prob, probes=1)
    exact = ode.gaussian_log_prob(math.exp(a) * x) + a * D
    torch.testing.assert_close(log_p, exact, atol=1e-3, rtol=0)


def test_the_dequantisation_correction_gives_8_bits_for_the_uniform_distribution():
    """Uniform over the 256 levels (8 bits/dim) is the density 255/512 on the dequantised cube [-1-1/255, 1+1/255]."""
    D = 10
    log_p = torch.tensor([D * math.log(255 / 512)])
    torch.testing.assert_close(ode.dequantized_bits_per_dim(log_p, D), torch.tensor([8.0]))
    x = torch.randint(0, 256, (4, 1, 8, 8)).float() / 127.5 - 1
    u = ode.dequantize(x, torch.Generator().manual_seed(0))
    assert ((u - x).abs() <= 1 / 255).all() and not torch.equal(u, x)
    assert torch.equal(torch.round((u + 1) * 127.5), torch.round((x + 1) * 127.5)), "each value stays in its bin"


def tiny_model(class_cond=False, denoiser="unet") -> RectifiedFlow:
    cfg = FlowConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(), dropout=0.0, hidden=32, depth=2, heads=2,
                     patch=4, denoiser=denoiser, class_cond=class_cond)
    torch.manual_seed(0)
    model = RectifiedFlow(cfg, (1, 8, 8), 10).eval()
    for prm in model.parameters():  # leave the zero initialisation: a random, non-trivial field
        prm.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("denoiser", ["unet", "dit"])
def test_flow_and_ddpm_report_ode_bits_per_dim_with_their_probes(denoiser):
    from genzoo.models.ddpm import DDPM, DDPMConfig
    model = tiny_model(denoiser=denoiser)
    b = Batch(torch.randint(0, 256, (3, 1, 8, 8)).float() / 127.5 - 1, None)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    bpd = model.log_likelihood(b, steps=4, probes=2, generator=g())
    assert bpd.shape == (3,) and torch.isfinite(bpd).all()
    assert torch.equal(bpd, model.log_likelihood(b, steps=4, probes=2, generator=g()))
    assert "ODE" in model.likelihood and "probe" in model.likelihood
    torch.manual_seed(0)
    ddpm = DDPM(DDPMConfig(channels=8, ch_mult=(1,), blocks=1, attn_res=(), dropout=0.0, T=40), (1, 8, 8)).eval()
    vlb, est = ddpm.log_likelihood(b), ddpm.log_likelihood(b, estimator="ode", steps=8, probes=1, generator=g())
    assert torch.isfinite(est).all() and est.shape == vlb.shape == (3,)
    assert ddpm.likelihood.startswith("bound"), "the VLB stays ddpm's declared default"
    with pytest.raises(ValueError, match="vlb or ode"):
        ddpm.log_likelihood(b, estimator="exact")


# -- the family -----------------------------------------------------------------------------------

def test_guidance_and_network_evaluations():
    model = tiny_model(class_cond=True)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 3, 5, 9])
    t = torch.full((4,), 0.3 * flow.TIME_SCALE)
    cond, uncond = model.net(x, t, y), model.net(x, t, torch.full_like(y, 10))
    torch.testing.assert_close(model.velocity(y, 3.0)(x, 0.3), uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.velocity(y, 1.0)(x, 0.3), cond)
    assert model.network_evaluations(name="euler", steps=10) == 10
    assert model.network_evaluations(name="heun", steps=5) == model.network_evaluations(name="midpoint", steps=5) == 10
    assert model.network_evaluations(name="euler", steps=10, cfg_scale=2.0) == 20


def test_the_loss_trains_on_the_straight_path_at_scaled_times():
    model = tiny_model(class_cond=True)
    seen = {}

    def net(x_t, t, y):
        seen.update(x_t=x_t, t=t, y=y)
        return torch.zeros_like(x_t)

    model.net.forward = net
    x0 = torch.rand(2000, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    loss = model.loss(Batch(x0, torch.zeros(2000, dtype=torch.long)))["loss"]
    assert seen["t"].min() >= 0 and seen["t"].max() <= flow.TIME_SCALE
    assert abs((seen["y"] == 10).float().mean().item() - 0.1) < 0.03  # label dropout to the null class
    t = (seen["t"] / flow.TIME_SCALE).view(-1, 1, 1, 1)
    eps = (seen["x_t"] - (1 - t) * x0) / t  # the noise the loss drew
    torch.testing.assert_close(loss, (eps - x0).pow(2).mean(), atol=1e-3, rtol=1e-3)


def test_reflow_pairs_are_the_models_ode_solutions_and_the_loss_trains_on_them(tmp_path):
    model = tiny_model(class_cond=True)
    pairs = reflow_pairs(model, 7, generator=torch.Generator().manual_seed(0), batch_size=3, name="heun", steps=3)
    assert pairs["eps"].shape == pairs["x0"].shape == (7, 1, 8, 8) and pairs["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    again = model.sample_x0(2, labels=pairs["labels"][:2], eps=pairs["eps"][:2], name="heun", steps=3)
    torch.testing.assert_close(again, pairs["x0"][:2])
    path = tmp_path / "pairs.npz"
    np.savez(path, **{k: v.numpy() for k, v in pairs.items()})
    model.cfg.pairs = str(path)
    x0, eps, y = model.couplings(Batch(torch.zeros(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)))
    i = [int((pairs["eps"] == e).flatten(1).all(1).nonzero()) for e in eps]  # each noise is one of the pairs ...
    assert torch.equal(x0, pairs["x0"][i]) and torch.equal(y, pairs["labels"][i])  # ... with its sample and label
    model.cfg.pairs, model._pairs = str(tmp_path / "missing.npz"), None
    with pytest.raises(ConfigError, match="not a reflow pairs file"):
        model.loss(Batch(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)))


# -- through the trainer and the command line ------------------------------------------------------

def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    cfg = tiny_config("flow", "train.steps=8", "train.ckpt_every=4", "train.device=cpu", "model.class_cond=true")
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", progress=False, stop_after=4)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    labels = torch.arange(6) % 10
    a = open_run(tmp_path / "straight").model.sample(6, labels=labels, generator=g(), name="heun", steps=3)
    b = open_run(tmp_path / "split").model.sample(6, labels=labels, generator=g(), name="heun", steps=3)
    assert torch.equal(a, b)
    a_sd, b_sd = (open_run(tmp_path / d).model.state_dict() for d in ("straight", "split"))
    assert all(torch.equal(a_sd[k], b_sd[k]) for k in a_sd)


def test_a_tiny_run_learns_and_a_reflow_round_trains_on_its_pairs(tmp_path):
    cfg = tiny_config("flow", "train.steps=60", "train.log_every=10", "train.ckpt_every=1000")
    train(cfg, tmp_path / "flow", progress=False)
    rows = [json.loads(r) for r in (tmp_path / "flow" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reflow.py"), str(tmp_path / "flow"),
                          "--out", str(tmp_path / "pairs.npz"), "--n", "40", "--set", "sampler.steps=2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["nfe_per_pair"] == 4 and "model.pairs=" in report["next"]
    with np.load(tmp_path / "pairs.npz") as f:
        assert f["eps"].shape == f["x0"].shape == (40, 1, 28, 28) and "labels" not in f.files
    second = tiny_config("flow", "train.steps=10", f"model.pairs={tmp_path / 'pairs.npz'}")
    train(second, tmp_path / "reflow", progress=False)
    x = open_run(tmp_path / "reflow").model.sample(4, generator=torch.Generator().manual_seed(0), steps=1)
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_both_ode_likelihoods_recover_a_gaussian_from_its_exact_field(schedule):
    """Data N(0, s^2 I): the optimal velocity of the flow and the optimal eps of the DDPM are linear in x, and
    their ODE log-likelihoods must give log N(x; 0, s^2 I) (the DDPM's up to its sigma_0 = sqrt(1/ab_0 - 1))."""
    from genzoo.models.diffusion.process import GaussianDiffusion
    s2, D = 0.3, 16
    x = math.sqrt(s2) * torch.randn(6, 1, 4, 4, dtype=torch.float64)
    v = lambda x_t, t: x_t * (t - (1 - t) * s2) / ((1 - t) ** 2 * s2 + t**2)  # noqa: E731  E[eps - x0 | x_t]
    flow_log_p = ode.log_likelihood(v, x, [i / 400 for i in range(401)], ode.gaussian_log_prob, probes=1)
    torch.testing.assert_close(flow_log_p, ode.gaussian_log_prob(x, s2), atol=2e-3, rtol=0)
    p = GaussianDiffusion(1000, schedule, "eps")

    def denoise(x_t, t):  # E[eps | x_t] for x_t = sqrt(ab) x0 + sqrt(1 - ab) eps
        ab = p.alpha_bar[t].view(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() * x_t / (ab * s2 + 1 - ab)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt(), eps

    sigma0_2 = (1 / p.alpha_bar[0] - 1).item()
    exact = ode.gaussian_log_prob(x, s2 + sigma0_2)
    torch.testing.assert_close(p.ode_log_likelihood(denoise, x, steps=999, probes=1), exact, atol=2e-3, rtol=0)
    few = p.ode_log_likelihood(denoise, x, steps=ode.LIKELIHOOD_STEPS, probes=1)  # the default grid's error is
    assert ((few - exact).abs() / (D * math.log(2)) < 0.02).all()  # small beside the 0.3 bits/dim the issue asks
    ts = [i / ode.LIKELIHOOD_STEPS for i in range(ode.LIKELIHOOD_STEPS + 1)]
    few = ode.log_likelihood(v, x, ts, ode.gaussian_log_prob, probes=1)
    assert ((few - ode.gaussian_log_prob(x, s2)).abs() / (D * math.log(2)) < 0.02).all()
