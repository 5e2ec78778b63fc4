"""The diffusion process and its samplers (DDPM, DDIM, DPM-Solver++, EDM Euler/Heun), checked against the papers."""

import math

import pytest
import torch

from conftest import tiny_config
from genzoo.contract import Batch
from genzoo.errors import ConfigError
from genzoo.models import ddpm as ddpm_module
from genzoo.models.ddpm import DDPM, DDPMConfig, cxx_compiler
from genzoo.models.diffusion import samplers
from genzoo.models.diffusion.process import GaussianDiffusion, cosine_betas, linear_betas
from genzoo.models.distributions import discretized_gaussian_log_prob

SAMPLERS = samplers.SAMPLERS


def test_named_schedules_are_pinned():
    """A named schedule never changes once committed (alpha_bar at t = 1, 250, 500, 1000 in the paper's indexing)."""
    lin = torch.cumprod(1 - linear_betas(1000), 0)
    cos = torch.cumprod(1 - cosine_betas(1000), 0)
    idx = [0, 249, 499, 999]
    torch.testing.assert_close(lin[idx], torch.tensor([0.9999, 0.524085, 0.0785872, 4.03583e-5], dtype=torch.float64),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(cos[idx], torch.tensor([0.999959, 0.847012, 0.493844, 2.42877e-9],
                                                dtype=torch.float64), rtol=1e-5, atol=0)
    assert linear_betas(1000)[0] == 1e-4 and math.isclose(linear_betas(1000)[-1], 0.02)


def test_q_sample_at_t0_is_almost_x0_and_at_T_is_almost_noise():
    p = GaussianDiffusion(1000, "linear")
    x0, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    x_first = p.q_sample(x0, torch.zeros(4, dtype=torch.long), eps)
    x_last = p.q_sample(x0, torch.full((4,), 999), eps)
    assert ((x_first - x0).abs() <= 0.0101 * eps.abs() + 1e-4).all()  # sqrt(1 - alpha_bar_0) = 0.01
    assert (x_last - eps).abs().max() < 0.01


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_each_objective_converts_back_to_x0_and_eps(objective):
    p = GaussianDiffusion(100, "cosine", objective)
    x0, eps, t = torch.rand(6, 1, 4, 4) * 2 - 1, torch.randn(6, 1, 4, 4), torch.tensor([0, 10, 40, 70, 98, 99])
    x_t = p.q_sample(x0, t, eps)
    x0_hat, eps_hat = p.predict(p.target(x0, eps, t), x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=2e-3, rtol=0)


def test_posterior_at_t0_returns_x0():
    p = GaussianDiffusion(1000, "linear")
    x0, x1 = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    mean, var = p.q_posterior(x0, x1, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()


def perfect_denoiser(p: GaussianDiffusion, x0: torch.Tensor):
    """Knows x0: returns it, and the eps consistent with x_t."""
    def denoise(x_t, t):
        a = p.alpha_bar[t].float().sqrt().view(-1, 1, 1, 1)
        return x0, (x_t - a * x0) / (1 - a ** 2).sqrt()
    return denoise


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_every_sampler_turns_a_perfect_denoiser_into_x0(name, steps):
    p = GaussianDiffusion(1000, "linear")
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    x = samplers.sample(name, perfect_denoiser(p, x0), p, x0.shape, steps=steps, eta=1.0,
                        generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=0)


def tiny_net_model(objective="eps", class_cond=False):
    torch.manual_seed(0)
    cfg = DDPMConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(), dropout=0.0, T=40, objective=objective,
                     class_cond=class_cond)
    model = DDPM(cfg, (1, 8, 8), 10).eval()
    for prm in model.parameters():  # leave the zero initialisation: a random, non-trivial denoiser
        prm.data.normal_(0, 0.2)
    return model


def test_ddim_at_eta_zero_is_a_deterministic_map_of_x_T():
    model = tiny_net_model()
    g = torch.Generator().manual_seed(3)
    x = samplers.ddim(model.denoiser(None), model.process, (5, 1, 8, 8), steps=10, eta=0.0, generator=g)
    after = g.get_state()
    g2 = torch.Generator().manual_seed(3)
    torch.randn((5, 1, 8, 8), generator=g2)
    assert torch.equal(after, g2.get_state()), "eta = 0 draws only x_T"
    assert torch.equal(x, samplers.ddim(model.denoiser(None), model.process, (5, 1, 8, 8), steps=10, eta=0.0,
                                        generator=torch.Generator().manual_seed(3)))


def test_ddim_with_all_steps_and_eta_one_is_ancestral_sampling():
    """DDIM §4.1: eta = 1 gives the DDPM posterior with variance beta_tilde; with the same noise, the same samples."""
    model = tiny_net_model()
    T, shape = model.process.T, (64, 1, 8, 8)
    a = samplers.ddim(model.denoiser(None), model.process, shape, steps=T, eta=1.0,
                      generator=torch.Generator().manual_seed(1))
    b = samplers.ddpm(model.denoiser(None), model.process, shape, steps=T, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    c = samplers.ddpm(model.denoiser(None), model.process, shape, steps=T, generator=torch.Generator().manual_seed(2))
    assert (a - c).abs().mean() > 0.1  # the noise matters: ancestral sampling is stochastic


def test_classifier_free_guidance_combines_the_two_predictions():
    model = tiny_net_model(class_cond=True)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([3, 10, 20, 39]), torch.tensor([0, 3, 5, 9])
    null = torch.full_like(y, 10)
    cond, uncond = model.net(x, t, y), model.net(x, t, null)
    p = model.process
    torch.testing.assert_close(model.denoiser(y, 1.0, clip_x0=False)(x, t)[1], p.predict(cond, x, t)[1])
    torch.testing.assert_close(model.denoiser(y, 0.0, clip_x0=False)(x, t)[1], p.predict(uncond, x, t)[1])
    torch.testing.assert_close(model.denoiser(y, 3.0, clip_x0=False)(x, t)[1],
                               p.predict(uncond + 3.0 * (cond - uncond), x, t)[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond), "the label must change the prediction"


@pytest.mark.slow
@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_compiled_sampling_draws_the_same_samples_with_guidance():
    """sampler.compile=true changes how the network runs, not what the sampler draws (up to float rounding)."""
    model = tiny_net_model(class_cond=True)
    y = torch.arange(6) % 10
    kw = dict(labels=y, name="ddim", steps=5, cfg_scale=2.0)
    close = dict(atol=1e-3, rtol=0)  # fused kernels round differently; 1e-3 is under 1/8 of an 8-bit level (2/255)
    eager = model.sample(6, generator=torch.Generator().manual_seed(0), **kw)
    compiled = model.sample(6, generator=torch.Generator().manual_seed(0), compile=True, **kw)
    torch.testing.assert_close(compiled, eager, **close)
    for prm in model.parameters():  # weights changed in place (an EMA update, load_state_dict) are seen
        prm.data.mul_(0.5)
    after = model.sample(6, generator=torch.Generator().manual_seed(0), compile=True, **kw)
    torch.testing.assert_close(after, model.sample(6, generator=torch.Generator().manual_seed(0), **kw), **close)
    assert (after - compiled).abs().max() > 0.1, "the new weights must change the samples"
    assert "_compiled_forward" not in str(model.state_dict().keys()), "the compiled forward is not a weight"


def test_compiled_sampling_without_a_cxx_compiler_says_what_to_do(monkeypatch):
    monkeypatch.setattr(ddpm_module, "cxx_compiler", lambda: None)
    with pytest.raises(ConfigError, match="needs a C.. compiler.*sampler.compile=false"):
        tiny_net_model().sample(2, steps=2, compile=True)


def test_network_evaluations_per_sampler_and_guidance():
    model = tiny_net_model(class_cond=True)
    assert model.network_evaluations(name="ddim", steps=10) == 10
    assert model.network_evaluations(name="ddpm", steps=40) == 40
    n = len(samplers.edm_timesteps(model.process, 10))
    assert model.network_evaluations(name="heun", steps=10) == 2 * n - 1
    assert model.network_evaluations(name="euler", steps=10) == n
    assert model.network_evaluations(name="ddim", steps=10, cfg_scale=3.0) == 20


def test_training_drops_labels_to_the_null_class():
    model = tiny_net_model(class_cond=True)
    seen = []
    model.net.forward = lambda x_t, t, y: (seen.append(y), torch.zeros_like(x_t))[1]
    model.loss(Batch(torch.zeros(4000, 1, 8, 8), torch.zeros(4000, dtype=torch.long)))
    dropped = (seen[0] == 10).float().mean().item()
    assert abs(dropped - 0.1) < 0.02 and set(seen[0].tolist()) == {0, 10}


def test_discretized_gaussian_sums_to_one_over_the_256_values():
    values = torch.arange(256).float() / 127.5 - 1
    for mean, log_scale in [(0.0, -2.0), (-0.97, -4.0), (0.5, 0.5), (1.3, -6.0)]:
        p = discretized_gaussian_log_prob(values, torch.tensor(mean), torch.tensor(log_scale)).exp().sum()
        assert math.isclose(p.item(), 1.0, abs_tol=1e-4)


def test_the_bound_estimate_is_unbiased_and_the_exact_bound_is_finite():
    p = GaussianDiffusion(40, "linear")
    x = torch.randint(0, 256, (8, 1, 8, 8)).float() / 127.5 - 1
    den = lambda x_t, t: (0.8 * x, None)  # noqa: E731  an imperfect denoiser: every KL term is positive
    torch.manual_seed(0)
    exact = torch.stack([p.bits_per_dim(den, x, terms=0) for _ in range(10)])  # (10, B)
    estimate = torch.stack([p.bits_per_dim(den, x, terms=4) for _ in range(1500)])  # (1500, B); heavy-tailed
    assert torch.isfinite(exact).all() and (exact > 0).all()
    assert estimate.std(0).mean() > 0.01, "the estimate depends on the sampled timesteps"
    assert math.isclose(estimate.mean().item(), exact.mean().item(), rel_tol=0.06)  # about 3.5 standard errors
    perfect = p.bits_per_dim(lambda x_t, t: (x, None), x, terms=0)
    assert (perfect < exact.mean(0)).all()  # a better denoiser has a tighter bound


def test_a_tiny_run_learns(tmp_path):
    from genzoo.train.trainer import train
    import json
    cfg = tiny_config("ddpm", "train.steps=60", "train.log_every=10", "train.ckpt_every=1000", "model.T=100")
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]



@pytest.mark.parametrize("width", [16, 64], ids=["one-channel-groups", "two-channel-groups"])
def test_the_embedding_reaches_a_block_as_a_scale_and_shift_after_its_norm(width):
    """Added before the group norm (DDPM), an embedding is a per-channel constant that the norm subtracts
    within each group: at one channel per group (width 16) nothing of it reaches the second conv. As adaGN's
    scale and shift after the norm (model.scale_shift) it does at every width."""
    from genzoo.models.layers import ResBlock

    torch.manual_seed(0)
    x, e1, e2 = torch.randn(2, width, 7, 7), torch.randn(2, 32), torch.randn(2, 32)
    for scale_shift in (False, True):
        block = ResBlock(width, width, emb_dim=32, scale_shift=scale_shift)
        torch.nn.init.normal_(block.conv2.weight, std=0.1)
        with torch.no_grad():
            same = torch.allclose(block(x, e1), block(x, e2), atol=1e-5)
        assert same == (width == 16 and not scale_shift), (width, scale_shift)
