"""ControlNet (Zhang et al. 2023) on finished U-Net runs: the controls, the identity at start, a frozen base, the
control scale, guidance with a control, ldm latents, and the real path through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from genzoo.cli import main
from genzoo.contract import Batch
from genzoo.errors import ConfigError
from genzoo.models import controlnet
from genzoo.registry import ADAPTERS, resolve_config
from genzoo.runs import build_model, open_run
from genzoo.train.trainer import train

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("controlnet") / "base"
    train(tiny_config("ddpm", "model.class_cond=true", "train.steps=4"), out, progress=False)
    return out


def config(base, *overrides):
    return resolve_config("controlnet", preset="tiny", overrides=[f"model.base={base}", "train.threads=1", *overrides])


def digits(n: int = 4) -> torch.Tensor:
    """(n, 1, 28, 28) in [-1, 1]: a bright square on black, a different size each."""
    x = -torch.ones(n, *SHAPE)
    for i in range(n):
        x[i, :, 6 + i:20 - i, 8:18 + i] = 1.0
    return x


def test_the_controls_are_computed_from_the_images():
    x = digits()
    e = controlnet.edges(x)
    assert e.shape == (4, 1, 28, 28) and set(e.unique().tolist()) <= {-1.0, 1.0}
    assert e[0, 0, 13, 13] == -1 and e[0, 0, 6, 12] == 1  # inside the square: no edge; on its border: an edge
    low = controlnet.low_res(x)
    assert low.shape == x.shape and torch.equal(low[..., ::4, ::4], torch.nn.functional.avg_pool2d(x, 4))
    m = controlnet.masked(x)
    assert (m[..., 14:, :] == -1).all() and torch.equal(m[..., :14, :], x[..., :14, :])


@pytest.mark.parametrize("control", controlnet.CONTROLS)
def test_at_start_the_controlled_model_is_the_base_and_no_gradient_reaches_it(base, control):
    assert "controlnet" in ADAPTERS
    torch.manual_seed(0)
    model = build_model(config(base, f"model.control={control}"), SHAPE, 10)
    reference = open_run(base).model
    c = controlnet.control_image(control, digits())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    knobs = {"name": "ddim", "steps": 4, "cfg_scale": 2.0}
    torch.testing.assert_close(model.sample(4, labels=torch.arange(4), generator=g1, control=c, **knobs),
                               reference.sample(4, labels=torch.arange(4), generator=g2, **knobs), rtol=0, atol=0)
    model.loss(Batch(digits(), torch.arange(4)))["loss"].backward()
    branch = {id(p) for p in model.parameters_for("main")}
    assert all(p.grad is None for p in model.parameters() if id(p) not in branch)  # the base gets none
    zero = [p for p in model.controlled.branch.zero.parameters()]
    assert all(p.grad is not None for p in zero) and any(p.grad.abs().sum() > 0 for p in zero)


def test_the_control_steers_the_samples_and_its_scale_fades_it(base):
    torch.manual_seed(0)
    model = build_model(config(base), SHAPE, 10)
    for z in model.controlled.branch.zero:  # a branch that has learned something
        torch.nn.init.normal_(z.weight, std=0.1)
    c = controlnet.control_image("edges", digits())

    def draw(control, scale=1.0):
        return model.sample(4, labels=torch.arange(4), generator=torch.Generator().manual_seed(0), control=control,
                            control_scale=scale, name="ddim", steps=4)

    base_samples = draw(None)
    assert not torch.equal(draw(c), base_samples)
    assert torch.equal(draw(c, 0.0), base_samples)
    with pytest.raises(ConfigError, match="controls for 4 samples"):
        draw(c[:2])


def test_a_controlnet_steers_an_ldm_in_its_latents(tmp_path):
    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    train(tiny_config("vae", "train.steps=2", "model.latent_channels=2"), ae, progress=False)
    train(tiny_config("ldm", f"model.autoencoder={ae}", "model.class_cond=true", "train.steps=2"), ldm, progress=False)
    model = build_model(config(ldm, "model.control=low-res"), SHAPE, 10)
    latent = model.latent_shape[-1]
    assert model.controlled.branch.hint(torch.zeros(1, 1, 28, 28)).shape[-1] == latent
    train(config(ldm, "model.control=low-res", "train.steps=2"), tmp_path / "cn", progress=False)
    assert open_run(tmp_path / "cn").step == 2


def test_only_u_net_runs_of_ddpm_or_ldm_are_steered(base, tmp_path):
    with pytest.raises(ConfigError, match="model.base=RUN"):
        resolve_config("controlnet", preset="tiny")
    dit = tmp_path / "dit"
    train(tiny_config("dit", "model.class_cond=true", "train.steps=2"), dit, progress=False)
    with pytest.raises(ConfigError, match="a 'dit' run; controlnet adapts one of: ddpm, ldm"):
        config(dit)


def test_train_and_sample_a_controlnet_through_the_cli(base, tmp_path, capsys):
    run = tmp_path / "edges"
    train(config(base, "train.steps=4"), run, progress=False)
    source = tmp_path / "digits.npz"
    np.savez(source, images=((digits() + 1) * 127.5).to(torch.uint8).numpy(), labels=np.array([3, 1, 4, 1]))
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "4", "--control-from", str(source), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (4, 1, 28, 28) and f["labels"].tolist() == [3, 1, 4, 1]
    edges = tmp_path / "edges.npz"
    np.savez(edges, images=((controlnet.edges(digits()[:1]) + 1) * 127.5).to(torch.uint8).numpy())
    assert main(["sample", str(run), "--n", "4", "--control", str(edges), "--control-scale", "0.5",
                 "--out", str(tmp_path / "t.png")]) == 0
    assert main(["sample", str(base), "--n", "4", "--control", str(edges)]) == 2
    assert "--control steers a controlnet run" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "3", "--control-from", str(source)]) == 2
    assert main(["sample", str(run), "--n", "4", "--control-scale", "0.5"]) == 2
