"""Configs: presets resolve, overrides are strict, JSON round-trips."""

import pytest

from genzoo.config import apply_overrides, diff
from genzoo.errors import ConfigError
from genzoo.registry import FAMILIES, config_from_dict, load_config_json, resolve_config


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_the_common_presets(family):
    for preset in ("tiny", "quick", "standard"):
        cfg = resolve_config(family, preset=preset)
        assert cfg.train.steps > 0 and cfg.train.batch_size > 0


def test_overrides_parse_types():
    cfg = resolve_config("vae", overrides=["model.channels=48", "train.lr=3e-4", "model.class_cond=true",
                                           "model.ch_mult=1,2,2", "train.schedule=constant", "data.dataset=digits"])
    assert cfg.model.channels == 48 and cfg.train.lr == 3e-4 and cfg.model.class_cond is True
    assert cfg.model.ch_mult == (1, 2, 2) and cfg.train.schedule == "constant" and cfg.data.dataset == "digits"


@pytest.mark.parametrize("bad, words", [
    ("model.chanels=3", "unknown key 'model.chanels'"),
    ("nosection.x=1", "unknown key"),
    ("model.channels=wide", "expected int"),
    ("model.class_cond=maybe", "expected a boolean"),
    ("train.schedule=linear", "must be one of"),
    ("train.lr", "use --set SECTION.FIELD=VALUE"),
])
def test_bad_overrides_are_errors_that_say_what_is_valid(bad, words):
    cfg = resolve_config("vae")
    with pytest.raises(ConfigError, match=words):
        apply_overrides(cfg, [bad])


def test_unknown_family_and_preset_list_choices():
    with pytest.raises(ConfigError, match="choose from: vae, gan"):
        resolve_config("vea")
    with pytest.raises(ConfigError, match="choose from: .*quick"):
        resolve_config("vae", preset="huge")


def test_json_round_trip_is_exact():
    cfg = resolve_config("vae", dataset="digits", preset="standard", overrides=["model.beta=0.5"])
    back = load_config_json(cfg.to_json())
    assert back == cfg and diff(cfg, back) == []


def test_config_from_dict_rejects_wrong_types():
    d = resolve_config("vae").to_dict()
    d["model"]["channels"] = "32"
    with pytest.raises(ConfigError, match="expected int"):
        config_from_dict(d)


@pytest.mark.parametrize("family", ["ddpm", "dit", "ldm"])
def test_the_shared_diffusion_keys_stay_flat(family):
    cfg = resolve_config(family, preset="tiny", overrides=["model.T=64", "model.schedule=cosine", "model.p_uncond=0.2",
                                                           "sampler.steps=7", "sampler.name=heun"])
    assert (cfg.model.T, cfg.model.schedule, cfg.model.p_uncond) == (64, "cosine", 0.2)
    assert (cfg.sampler.steps, cfg.sampler.name) == (7, "heun")
    assert load_config_json(cfg.to_json()) == cfg


def test_the_ldm_samples_latents_without_clipping_by_default():
    assert resolve_config("ddpm").sampler.clip_x0 and not resolve_config("ldm").sampler.clip_x0


def test_a_saved_config_with_a_retired_key_still_loads():
    d = resolve_config("dit").to_dict()
    d["model"]["dropout"] = 0.0  # dit's unused key, saved by runs before its removal
    assert config_from_dict(d) == resolve_config("dit")
    d["model"]["dropuot"] = 0.0
    with pytest.raises(ConfigError, match="unknown key 'model.dropuot'"):
        config_from_dict(d)
