"""The contract every registered family keeps with the trainer and the harness (genzoo/contract.py).

The declaration tests check each family's module entry against `genzoo.contract` (required methods,
declared capabilities, config fields, presets). The behaviour tests run over every model class of every
family (a family's `second_stage` too, on each first-stage family it accepts), unconditional and
class-conditional.
"""

import dataclasses
import typing

import pytest
import torch

from genzoo import contract
from genzoo.contract import Batch, GenerativeModel
from genzoo.registry import FAMILIES, Family, resolve_config

SHAPE, CLASSES = (1, 16, 16), 10
FIRST_STAGE_OVERRIDES = {"vae": ["model.latent_channels=2"]}  # a spatial latent, as a latent second stage needs


def check_declaration(fam: Family) -> None:
    """What genzoo/contract.py declares, checked on one registry entry (also used by test_new_family.py)."""
    assert isinstance(fam.description, str) and fam.description
    assert dataclasses.is_dataclass(fam.config) and dataclasses.is_dataclass(fam.sampler)
    hints = typing.get_type_hints(fam.config)
    for name, tp in contract.CONFIG_FIELDS.items():
        assert hints.get(name) is tp, f"{fam.name}: Config needs the field {name}: {tp.__name__}"
    for preset in contract.REQUIRED_PRESETS:
        assert preset in fam.presets, f"{fam.name}: PRESETS needs {preset!r}"
        resolve_config(fam.name, preset=preset)  # every preset key exists and has the right type
    for key in fam.retired_keys:
        assert key not in hints, f"{fam.name}: retired key {key!r} is still a field"
    for cls in model_classes(fam):
        assert issubclass(cls, GenerativeModel), f"{cls.__name__} must subclass genzoo.contract.GenerativeModel"
        for name in ("parameters_for", "loss", "sample"):
            assert getattr(cls, name) is not getattr(GenerativeModel, name), f"{cls.__name__} must define {name}"
        assert isinstance(cls.phases, tuple) and cls.phases and all(isinstance(p, str) for p in cls.phases)
        # the declared capabilities: their types, and the methods they promise
        assert cls.likelihood is None or isinstance(cls.likelihood, str)
        if cls.likelihood is not None:
            assert cls.log_likelihood is not GenerativeModel.log_likelihood
        assert isinstance(cls.reconstructs, bool)
        assert cls.reconstructs == (cls.reconstruct is not GenerativeModel.reconstruct)
        assert isinstance(cls.uses_latents, bool)
        assert cls.uses_latents == (cls.set_latent_scale is not GenerativeModel.set_latent_scale)
        assert isinstance(cls.autoencoder_families, tuple)
        if cls.uses_latents:
            assert cls.autoencoder_families, "a latent family names the first stages it accepts"
        for first in cls.autoencoder_families:
            assert first in FAMILIES and first != fam.name, f"{cls.__name__}: unknown first stage {first!r}"
        if cls.autoencoder_families:
            for name, tp in contract.SECOND_STAGE_FIELDS.items():
                assert hints.get(name) is tp, f"{fam.name}: a second stage's Config needs {name}: {tp.__name__}"
    if fam.second_stage is not None:
        assert fam.second_stage.autoencoder_families, "a second_stage class takes a first stage"
        assert not fam.model.autoencoder_families, "the model without a first stage takes none"


def model_classes(fam: Family) -> list[type]:
    return [fam.model] + ([fam.second_stage] if fam.second_stage is not None else [])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_keeps_the_declared_contract(family):
    check_declaration(FAMILIES[family])


def test_every_registry_entry_is_built_from_its_module():
    import genzoo.models as models

    for name, fam in FAMILIES.items():
        module = getattr(models, name)
        assert all(n in vars(module) for n in contract.MODULE_NAMES), f"{name}: the module lacks a contract name"
        assert fam == Family.from_module(name, module)


def test_a_module_without_the_contract_names_is_a_clear_error():
    import types

    with pytest.raises(TypeError, match="lacks DESCRIPTION, Model"):
        Family.from_module("x", types.ModuleType("x"))


def test_no_capability_is_discovered_by_hasattr():
    """Code reads the declared attributes; `hasattr` on a model or its config is not a contract."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    for folder in ("models", "genzoo", "train", "evaluation"):
        for path in (root / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                if re.search(r"hasattr\((self|model|autoencoder|cls|run|first)\b", line) or \
                        re.search(r"getattr\(\w+(\.\w+)*\.cfg\b", line):
                    pytest.fail(f"{path.relative_to(root)}: capability sniffing: {line.strip()}")


def tiny_clip():
    """A fresh tiny text encoder (the zoo's CLIP component) for the text-conditioned cases."""
    from genzoo.models.clip import CLIP, CLIPConfig

    torch.manual_seed(0)
    return CLIP(CLIPConfig(channels=8, ch_mult=(1, 2), blocks=0, d_model=16, n_layers=1, embed_dim=16), SHAPE)


def build(family: str, conditional: bool | str, seed: int = 0, first: str | None = None):
    """A fresh tiny model of `family`; with `first`, its second stage on a fresh tiny first stage of that family.
    conditional: False, True (class labels) or "text" (captions through a tiny CLIP's text encoder)."""
    overrides = ["model.autoencoder=fresh"] if first else []
    cfg = resolve_config(family, preset="tiny", overrides=overrides)
    if conditional is True:
        cfg.model.class_cond = True
    extra = {"text_encoder": tiny_clip()} if conditional == "text" else {}
    torch.manual_seed(seed)
    fam = FAMILIES[family]
    cls = fam.model_for(cfg.model)
    if first is None:
        return cls(cfg.model, image_shape=SHAPE, num_classes=CLASSES, **extra), cfg
    first_cfg = resolve_config(first, preset="tiny", overrides=FIRST_STAGE_OVERRIDES.get(first, []))
    autoencoder = FAMILIES[first].model(first_cfg.model, image_shape=SHAPE, num_classes=CLASSES)
    return cls(cfg.model, image_shape=SHAPE, num_classes=CLASSES, autoencoder=autoencoder, **extra), cfg


def captions(n: int) -> torch.Tensor:
    from genzoo.datasets.captions import Tokenizer

    return Tokenizer().encode_batch([["a thick 3", "", "the digit 7, thin and upright"][i % 3] for i in range(n)])


def batch(n=8, seed=0):
    """Images, labels and caption tokens (read by the text-conditioned cases only)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *SHAPE), generator=g).float() / 127.5 - 1
    return Batch(images, torch.randint(0, CLASSES, (n,), generator=g), text=captions(n))


def condition(conditional: bool | str, n: int) -> dict:
    """sample()'s condition: labels cycling through the classes, caption tokens, or nothing."""
    if conditional == "text":
        return {"text": captions(n)}
    return {"labels": torch.arange(n) % CLASSES if conditional else None}


def first_stages(fam: Family) -> list[str | None]:
    """None: the family's own model; else each first-stage family its second stage accepts."""
    out = [] if fam.model.autoencoder_families else [None]
    for cls in model_classes(fam):
        out += list(cls.autoencoder_families)
    return out


def takes_text(fam: Family) -> bool:
    """The family's config names a text encoder run (`model.text_encoder`)."""
    return "text_encoder" in {f.name for f in dataclasses.fields(fam.config)}


MODELS = [(f, first) for f, fam in FAMILIES.items() for first in first_stages(fam)]
CASES = [(f, first, c) for f, first in MODELS for c in (False, True)] + [
    (f, first, "text") for f, first in MODELS if takes_text(FAMILIES[f])]
IDS = [f"{f}{'-on-' + first if first else ''}-{ {False: 'uncond', True: 'cond', 'text': 'text'}[c]}"
       for f, first, c in CASES]


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_loss_is_a_finite_scalar_for_every_phase(family, first, conditional):
    model, _ = build(family, conditional, first=first)
    assert model.phases and all(isinstance(p, str) for p in model.phases)
    assert model.num_classes == (CLASSES if conditional is True else 0)
    for phase in model.phases:
        terms = model.loss(batch(), phase)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
        assert all(torch.isfinite(v).all() for v in terms.values())


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_gradients_reach_exactly_the_phase_parameters(family, first, conditional):
    model, _ = build(family, conditional, first=first)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        model.loss(batch(), phase)["loss"].backward()
        expected = {id(p) for p in model.parameters_for(phase)}
        got = {id(p) for p in model.parameters() if p.grad is not None}
        assert got == expected, f"phase {phase}: gradients must reach exactly parameters_for({phase!r})"


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_sample_shape_range_and_determinism(family, first, conditional):
    model, cfg = build(family, conditional, first=first)
    model.eval()
    knobs = vars(cfg.sampler)

    def draw(seed):
        return model.sample(6, generator=torch.Generator().manual_seed(seed), **condition(conditional, 6), **knobs)

    x = draw(0)
    assert x.shape == (6, *SHAPE) and not x.requires_grad
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    assert torch.equal(x, draw(0)), "same generator seed must give the same samples"
    assert not torch.equal(x, draw(1)), "a different seed must give different samples"


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_state_dict_round_trip_gives_the_same_model(family, first, conditional):
    model, cfg = build(family, conditional, seed=0, first=first)
    other, _ = build(family, conditional, seed=1, first=first)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(3), **condition(conditional, 4), **vars(cfg.sampler))
    b = other.sample(4, generator=torch.Generator().manual_seed(3), **condition(conditional, 4), **vars(cfg.sampler))
    assert torch.equal(a, b)


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_log_likelihood_is_bits_per_dim_per_image(family, first, conditional):
    model, _ = build(family, conditional, first=first)
    if model.likelihood is None:
        pytest.skip(f"{family} has no likelihood")
    bpd = model.log_likelihood(batch(n=5))
    assert bpd.shape == (5,) and torch.isfinite(bpd).all() and (bpd > 0).all()
    if model.ode_likelihood is not None:  # the second estimate offered beside the declared one
        ode = model.log_likelihood(batch(n=3), estimator="ode", steps=2)
        assert ode.shape == (3,) and torch.isfinite(ode).all() and (ode > 0).all()


@pytest.mark.parametrize("family, first, conditional", CASES, ids=IDS)
def test_network_evaluations_and_declared_capabilities_work(family, first, conditional):
    model, cfg = build(family, conditional, first=first)
    model.eval()
    n = model.network_evaluations(**vars(cfg.sampler))
    assert isinstance(n, int) and n >= 1
    if model.reconstructs:
        x = model.reconstruct(batch(n=3))
        assert x.shape == (3, *SHAPE) and x.min() >= -1 and x.max() <= 1
    if model.uses_latents:  # the trainer's call on a fresh run, with the first stage's latents of the data
        model.set_latent_scale(3 * torch.randn(16, 2, 4, 4))
        assert torch.isfinite(model.loss(batch(), model.phases[0])["loss"])
    if model.likelihood is None:
        with pytest.raises(NotImplementedError):
            model.log_likelihood(batch(n=2))
