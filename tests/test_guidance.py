"""Classifier guidance (Dhariwal & Nichol 2021) with the noisy-classifier component, beside classifier-free
guidance: the gradient, the eps shift, the sampler knobs, and the real path through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from genzoo.cli import main
from genzoo.contract import Batch, Component
from genzoo.errors import ConfigError
from genzoo.models.ddpm import DDPM, DDPMConfig
from genzoo.models.diffusion import samplers
from genzoo.models.diffusion.process import GaussianDiffusion
from genzoo.models.noisy_classifier import NoisyClassifier, NoisyClassifierConfig
from genzoo.registry import COMPONENTS, FAMILIES

SHAPE = (1, 8, 8)


def classifier(T: int = 50, schedule: str = "cosine") -> NoisyClassifier:
    torch.manual_seed(0)
    return NoisyClassifier(NoisyClassifierConfig(T=T, schedule=schedule, channels=8, ch_mult=(1, 2)), SHAPE, 10)


def test_the_noisy_classifier_is_a_component_trained_on_noised_images():
    assert "noisy-classifier" in COMPONENTS and "noisy-classifier" not in FAMILIES
    assert issubclass(COMPONENTS["noisy-classifier"].model, Component)
    clf = classifier()
    out = clf.loss(Batch(torch.rand(6, *SHAPE) * 2 - 1, torch.arange(6)))
    assert torch.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
    x, t = torch.randn(3, *SHAPE), torch.tensor([0, 10, 49])
    assert clf(x, t).shape == (3, 10) and not torch.equal(clf(x, t), clf(x, t.flip(0)))  # reads the time
    with pytest.raises(ConfigError, match="dataset with labels"):
        NoisyClassifier(NoisyClassifierConfig(), SHAPE, 0)


def test_the_gradient_raises_the_requested_class_log_probability_at_a_noisy_input():
    clf = classifier().double()
    for p in clf.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(4, *SHAPE).double(), torch.tensor([5, 20, 30, 45]), torch.tensor([3, 7, 0, 9])
    g = clf.grad_log_prob(x, t, y)
    log_p = lambda z: clf(z, t).log_softmax(1).gather(1, y[:, None]).squeeze(1)
    step = 1e-3 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # a small step along each image's gradient
    assert g.shape == x.shape and (log_p(x + step) > log_p(x)).all() and (log_p(x - step) < log_p(x)).all()
    with torch.no_grad():
        torch.testing.assert_close(clf.grad_log_prob(x, t, y), g)  # also under no_grad, as the samplers run


def test_the_eps_shift_is_algorithm_2_and_zero_gradient_changes_nothing():
    process = GaussianDiffusion(50, "cosine", "eps")
    x_t, eps, t = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE), torch.tensor([10, 40])
    x0, e = process.classifier_guided(eps, x_t, t, torch.zeros_like(x_t))
    torch.testing.assert_close((x0, e), process.predict(eps, x_t, t))
    grad = torch.randn_like(x_t)
    _, e = process.classifier_guided(eps, x_t, t, grad)
    sigma = (1 - process.alpha_bar[t]).sqrt().float().view(2, 1, 1, 1)
    torch.testing.assert_close(e, eps - sigma * grad)


def ddpm_and_classifier(tmp_path, *overrides):
    """A tiny class-conditional ddpm and a tiny noisy-classifier run on synthetic data, on the same process."""
    from genzoo.train.trainer import train

    train(tiny_config("ddpm", "model.class_cond=true", "model.schedule=cosine", "train.steps=4"), tmp_path / "ddpm",
          progress=False)
    train(tiny_config("noisy-classifier", "train.steps=4", *overrides), tmp_path / "clf", progress=False)
    from genzoo.runs import open_run

    return open_run(tmp_path / "ddpm").model, str(tmp_path / "clf")


def test_classifier_scale_0_is_the_unguided_sampler_and_a_scale_steers(tmp_path):
    model, clf = ddpm_and_classifier(tmp_path)
    y = torch.arange(4) % model.num_classes
    draw = lambda **k: model.sample(4, labels=y, generator=torch.Generator().manual_seed(0), steps=5, **k)
    plain = draw()
    torch.testing.assert_close(draw(classifier=clf, classifier_scale=0.0), plain)
    a, b = draw(classifier=clf, classifier_scale=5.0), draw(classifier=clf, classifier_scale=5.0)
    assert torch.equal(a, b) and not torch.equal(a, plain)
    both = draw(classifier=clf, classifier_scale=5.0, cfg_scale=2.0)  # with classifier-free guidance at once
    assert both.shape == a.shape and not torch.equal(both, a)
    with pytest.raises(ConfigError, match="sample with labels"):
        model.sample(2, steps=2, classifier=clf, classifier_scale=1.0)


def test_a_classifier_of_another_process_or_run_kind_is_refused_in_one_line(tmp_path):
    model, clf = ddpm_and_classifier(tmp_path, "model.T=40")
    with pytest.raises(ConfigError, match="trained on T=40, schedule=cosine.*--set model.T=50 model.schedule=cosine"):
        model.sample(2, labels=torch.tensor([0, 1]), steps=2, classifier=clf, classifier_scale=1.0)
    with pytest.raises(ConfigError, match="is a 'ddpm' run"):
        model.sample(2, labels=torch.tensor([0, 1]), steps=2, classifier=str(tmp_path / "ddpm"), classifier_scale=1.0)


def test_sample_and_eval_through_the_cli(tmp_path, capsys):
    _, clf = ddpm_and_classifier(tmp_path)
    out = tmp_path / "s.npz"
    assert main(["sample", str(tmp_path / "ddpm"), "--n", "4", "--out", str(out), "--set", f"sampler.classifier={clf}",
                 "sampler.classifier_scale=2", "sampler.steps=3"]) == 0
    capsys.readouterr()
    assert main(["eval", clf, "--n", "40", "--no-progress"]) == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    assert set(m) == {"accuracy_t0", "accuracy_t12", "accuracy_t25", "accuracy_t37", "accuracy_t49"}
    assert all(0 <= v <= 1 for v in m.values())


def test_classifier_guidance_steers_a_text_model_towards_the_class_its_prompt_names():
    from test_text_diffusion import text_ddpm, tokens

    model = text_ddpm()
    clf = classifier()
    model.__dict__["_classifiers"] = {"clf": clf}  # as classifier_guide caches a loaded run
    text = tokens(model, ["a thick 3", "a thin 8"])
    draw = lambda s: model.sample(2, text=text, labels=torch.tensor([3, 8]), generator=torch.Generator().manual_seed(0),
                                  steps=3, classifier="clf", classifier_scale=s)
    torch.testing.assert_close(draw(0.0), model.sample(2, text=text, generator=torch.Generator().manual_seed(0),
                                                       steps=3))
    assert not torch.equal(draw(4.0), draw(0.0))


def test_guidance_in_a_limited_interval_runs_the_conditional_model_outside_it():
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(), T=50, class_cond=True), SHAPE, 10).eval()
    for p in model.net.parameters():  # a zero-initialised output would hide the difference between branches
        torch.nn.init.normal_(p, std=0.1)
    y, x = torch.tensor([3, 7]), torch.randn(2, *SHAPE)
    hi, lo = torch.tensor([40, 40]), torch.tensor([10, 10])  # t / T = 0.8 and 0.2
    plain, guided = model.guided(y, 1.0), model.guided(y, 3.0)
    limited = model.guided(y, 3.0, t_min=0.1, t_max=0.5)
    torch.testing.assert_close(limited(x, hi), plain(x, hi))  # outside: the conditional model as trained
    torch.testing.assert_close(limited(x, lo), guided(x, lo))  # inside: classifier-free guidance
    assert not torch.equal(guided(x, hi), plain(x, hi))
    # each step outside the interval costs one pass instead of two
    inside = sum(0.1 <= t / 50 <= 0.5 for t in samplers.timesteps(50, 10))
    assert model.network_evaluations("ddim", 10, 3.0) == 20
    assert model.network_evaluations("ddim", 10, 3.0, cfg_t_min=0.1, cfg_t_max=0.5) == 10 + inside < 20
    assert model.network_evaluations("heun", 10, 3.0) == 2 * model.network_evaluations("heun", 10, 1.0)
    draw = lambda **k: model.sample_x0(2, labels=y, generator=torch.Generator().manual_seed(0), steps=5, clip_x0=False,
                                       **k)  # unclamped: random weights saturate the clamped samples
    torch.testing.assert_close(draw(cfg_scale=3.0, cfg_t_min=0.99), draw())  # t / T <= 49 / 50: never guided
    assert not torch.equal(draw(cfg_scale=3.0, cfg_t_max=0.5), draw(cfg_scale=3.0))
    with pytest.raises(ConfigError, match="cfg_t_min=0.6 is above sampler.cfg_t_max=0.5"):
        draw(cfg_scale=3.0, cfg_t_min=0.6, cfg_t_max=0.5)
