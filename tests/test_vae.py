"""VAE-specific behaviour: the likelihood is a proper pmf, the bounds are ordered, beta weights the KL."""

import math

import torch

from genzoo.contract import Batch
from genzoo.models.distributions import discretized_logistic_log_prob
from genzoo.models.vae import VAE, VAEConfig


def test_discretized_logistic_sums_to_one_over_the_256_values():
    values = torch.arange(256).float() / 127.5 - 1  # every 8-bit level in [-1, 1]
    for mean, log_scale in [(0.0, -2.0), (-0.97, -4.0), (0.5, 0.5), (1.3, -6.0)]:
        logp = discretized_logistic_log_prob(values, torch.tensor(mean), torch.tensor(log_scale))
        assert math.isclose(logp.exp().sum().item(), 1.0, abs_tol=1e-4)


def test_iwae_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, ch_mult=(1, 2), blocks=0, z_dim=4), (1, 8, 8), 10)
    x = Batch(torch.randint(0, 256, (16, 1, 8, 8)).float() / 127.5 - 1, None)
    torch.manual_seed(1)
    elbo = model.log_likelihood(x, k=1).mean()
    torch.manual_seed(1)
    iwae = model.log_likelihood(x, k=64).mean()
    assert iwae < elbo  # both are upper bounds on bits/dim; IWAE (Burda et al.) is tighter


def test_training_loss_is_the_elbo_at_beta_one_and_weights_kl_otherwise():
    torch.manual_seed(0)
    x = Batch(torch.randint(0, 256, (8, 1, 8, 8)).float() / 127.5 - 1, None)
    model = VAE(VAEConfig(channels=8, ch_mult=(1, 2), blocks=0, z_dim=4, beta=4.0), (1, 8, 8), 10)
    t = model.loss(x)
    assert torch.allclose(t["loss"], t["recon_bpd"] + 4.0 * t["kl_bpd"])
    assert torch.allclose(t["elbo_bpd"], t["recon_bpd"] + t["kl_bpd"])
