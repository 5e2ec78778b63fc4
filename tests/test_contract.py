"""The contract every registered family keeps with the trainer and the harness (DESIGN.md §3).

Each test runs over every family in `FAMILIES`, unconditional and class-conditional.
"""

import pytest
import torch

from genzoo.contract import Batch
from genzoo.registry import FAMILIES, resolve_config

SHAPE, CLASSES = (1, 16, 16), 10


def build(family: str, conditional: bool, seed: int = 0):
    cfg = resolve_config(family, preset="tiny")
    if conditional:
        cfg.model.class_cond = True
    torch.manual_seed(seed)
    cls = FAMILIES[family].model
    extra = {}
    if cls.uses_latents:  # a latent second stage: give it a fresh first stage of the first kind
        first = resolve_config(cls.autoencoder_families[0], preset="tiny", overrides=["model.latent_channels=2"])
        extra["autoencoder"] = FAMILIES[first.family].model(first.model, image_shape=SHAPE, num_classes=CLASSES)
    return cls(cfg.model, image_shape=SHAPE, num_classes=CLASSES, **extra), cfg


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *SHAPE), generator=g).float() / 127.5 - 1
    return Batch(images, torch.randint(0, CLASSES, (n,), generator=g))


CASES = [(f, c) for f in FAMILIES for c in (False, True)]
IDS = [f"{f}-{'cond' if c else 'uncond'}" for f, c in CASES]


@pytest.mark.parametrize("family, conditional", CASES, ids=IDS)
def test_loss_is_a_finite_scalar_for_every_phase(family, conditional):
    model, _ = build(family, conditional)
    assert model.phases and all(isinstance(p, str) for p in model.phases)
    assert model.num_classes == (CLASSES if conditional else 0)
    for phase in model.phases:
        terms = model.loss(batch(), phase)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
        assert all(torch.isfinite(v).all() for v in terms.values())


@pytest.mark.parametrize("family, conditional", CASES, ids=IDS)
def test_gradients_reach_exactly_the_phase_parameters(family, conditional):
    model, _ = build(family, conditional)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        model.loss(batch(), phase)["loss"].backward()
        expected = {id(p) for p in model.parameters_for(phase)}
        got = {id(p) for p in model.parameters() if p.grad is not None}
        assert got == expected, f"phase {phase}: gradients must reach exactly parameters_for({phase!r})"


@pytest.mark.parametrize("family, conditional", CASES, ids=IDS)
def test_sample_shape_range_and_determinism(family, conditional):
    model, cfg = build(family, conditional)
    model.eval()
    labels = torch.arange(6) % CLASSES if conditional else None
    knobs = vars(cfg.sampler)

    def draw(seed):
        return model.sample(6, labels=labels, generator=torch.Generator().manual_seed(seed), **knobs)

    x = draw(0)
    assert x.shape == (6, *SHAPE) and not x.requires_grad
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    assert torch.equal(x, draw(0)), "same generator seed must give the same samples"
    assert not torch.equal(x, draw(1)), "a different seed must give different samples"


@pytest.mark.parametrize("family, conditional", CASES, ids=IDS)
def test_state_dict_round_trip_gives_the_same_model(family, conditional):
    model, cfg = build(family, conditional, seed=0)
    other, _ = build(family, conditional, seed=1)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    labels = torch.arange(4) % CLASSES if conditional else None
    a = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(3), **vars(cfg.sampler))
    b = other.sample(4, labels=labels, generator=torch.Generator().manual_seed(3), **vars(cfg.sampler))
    assert torch.equal(a, b)


@pytest.mark.parametrize("family, conditional", CASES, ids=IDS)
def test_log_likelihood_is_bits_per_dim_per_image(family, conditional):
    model, _ = build(family, conditional)
    if model.likelihood is None:
        pytest.skip(f"{family} has no likelihood")
    bpd = model.log_likelihood(batch(n=5))
    assert bpd.shape == (5,) and torch.isfinite(bpd).all() and (bpd > 0).all()
