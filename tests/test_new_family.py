"""Adding a family takes one model file and one registry line (models/README.md).

This file is the model file of a throw-away family, `marginal`: every sub-pixel an independent
discretized Gaussian (per class when class-conditional), with an exact likelihood. The test adds the one
registry line (monkeypatched into FAMILIES) and drives it through the command line: it is listed, passes
the contract's declaration, trains, samples, evaluates (FD and bits/dim) and enters `genzoo compare`.
"""

import json
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from genzoo.cli import main
from genzoo.contract import GenerativeModel, classes
from genzoo.models.distributions import discretized_gaussian_log_prob, nats_to_bits_per_dim, quantize
from genzoo.registry import FAMILIES, Family

# ----------------------------------------------------------------------------------------
# the model file


class Marginal(GenerativeModel):
    """p(x | y) = prod_i N_disc(x_i; m_{y,i}, s_{y,i}): a learned mean and scale per sub-pixel (and class)."""

    likelihood = "exact"

    def __init__(self, cfg, image_shape, num_classes=0):
        super().__init__()
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.num_classes = classes(cfg, num_classes)
        self.mean = nn.Parameter(torch.zeros(max(1, self.num_classes), *image_shape))  # (K or 1, C, H, W)
        self.log_scale = nn.Parameter(torch.zeros(max(1, self.num_classes), *image_shape))

    def params(self, labels, n):
        y = self.class_labels(labels, n)
        idx = torch.zeros(n, dtype=torch.long, device=self.mean.device) if y is None else y
        return self.mean[idx], self.log_scale[idx].clamp(min=self.cfg.min_log_scale)  # (n, C, H, W) each

    def bits_per_dim(self, batch):
        x = batch.images
        mean, log_scale = self.params(batch.labels, x.shape[0])
        nats = -discretized_gaussian_log_prob(x, mean, log_scale).flatten(1).sum(1)  # (B,)
        return nats_to_bits_per_dim(nats, x[0].numel())

    def parameters_for(self, phase):
        return self.parameters()

    def loss(self, batch, phase="main"):
        bpd = self.bits_per_dim(batch).mean()
        return {"loss": bpd, "bpd": bpd.detach()}

    @torch.no_grad()
    def log_likelihood(self, batch):
        return self.bits_per_dim(batch)

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, temperature=1.0):
        mean, log_scale = self.params(labels, n)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return quantize(mean + temperature * log_scale.exp() * eps)


@dataclass
class MarginalConfig:
    class_cond: bool = False
    min_log_scale: float = -5.0


@dataclass
class SamplerConfig:
    temperature: float = 1.0


PRESETS = {
    # seconds: for tests
    "tiny": {"train": {"steps": 10, "batch_size": 32, "lr": 5e-2, "warmup_steps": 1, "log_every": 5,
                       "sample_every": 0, "ckpt_every": 100, "n_grid": 10}},
    # the same model, a little longer: it has nothing to scale up
    "quick": {"train": {"steps": 200, "batch_size": 64, "lr": 5e-2, "warmup_steps": 10}},
    "standard": {"train": {"steps": 2000, "batch_size": 128, "lr": 2e-2, "warmup_steps": 100}},
}
DESCRIPTION = "independent discretized Gaussian per sub-pixel (a test family)"
Model, Config = Marginal, MarginalConfig

# ----------------------------------------------------------------------------------------
# the registry line, and the test


@pytest.fixture
def registered(monkeypatch, tmp_path):
    monkeypatch.setitem(FAMILIES, "marginal", Family.from_module("marginal", sys.modules[__name__]))
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "data"))


def test_a_new_family_is_listed_trains_samples_evaluates_and_compares(registered, tmp_path, capsys):
    from test_contract import check_declaration

    check_declaration(FAMILIES["marginal"])
    assert main(["list"]) == 0
    assert "marginal" in capsys.readouterr().out

    run = tmp_path / "run"
    assert main(["train", "marginal", "--dataset", "digits", "--preset", "tiny", "--set", "model.class_cond=true",
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["sample", str(run), "--n", "10", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    assert main(["eval", str(run), "--n", "60", "--n-ref", "300", "--metrics", "fd,bpd", "--device", "cpu",
                 "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["fd"]["value"] > 0 and 0 < metrics["bpd"]["value"] < 8

    out = tmp_path / "report"
    assert main(["compare", "--dataset", "digits", "--families", "marginal", "--preset", "tiny", "--steps", "10",
                 "--out", str(out), "--eval-n", "60", "--n-ref", "300", "--grid-n", "10", "--metrics", "fd",
                 "--device", "cpu", "--no-progress"]) == 0
    (entry,) = json.loads((out / "results.json").read_text())["entries"]
    assert entry["name"] == "marginal" and entry["stages"][0]["step"] == 10
    assert entry["eval"]["metrics"]["fd"]["value"] > 0
