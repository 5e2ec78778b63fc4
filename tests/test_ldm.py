"""Latent diffusion: two stages through the real trainer, the data-derived latent scale, and the latent cache."""

import pytest
import torch

from conftest import tiny_config
from genzoo.errors import ConfigError
from genzoo.models.diffusion import samplers
from genzoo.runs import open_run
from genzoo.train import latents as latent_cache
from genzoo.train.trainer import train


@pytest.fixture
def first_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "ae"
    train(tiny_config("vae", "model.latent_channels=2", "train.steps=10"), run, progress=False)
    return run


def test_two_stages_train_and_sample_and_the_scale_gives_unit_variance(first_stage, tmp_path):
    for denoiser in ("unet", "dit"):
        out = tmp_path / f"ldm-{denoiser}"
        train(tiny_config("ldm", f"model.autoencoder={first_stage}", f"model.denoiser={denoiser}"), out,
              progress=False)
        run = open_run(out)
        files = list((tmp_path / "cache" / "latents").glob("*.pt"))
        assert len(files) == 1, "the training latents are cached once and reused by the second run"
        z = torch.load(files[0], weights_only=True)
        assert abs((z * run.model.latent_scale).std().item() - 1.0) < 1e-3
        assert run.model.latent_scale.item() != 1.0, "the scale is computed from data and saved with the run"
        x = run.model.sample(4, generator=torch.Generator().manual_seed(0), **vars(run.config.sampler))
        assert x.shape == (4, *run.image_shape) and x.min() >= -1 and x.max() <= 1


def test_the_latent_cache_is_keyed_by_the_autoencoder_weights(first_stage):
    model = open_run(first_stage).model
    holder = type("M", (), {"autoencoder": model})()
    before = latent_cache.cache_path(holder, "synthetic", (1, 28, 28), 2048)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # a retrained / changed autoencoder
    after = latent_cache.cache_path(holder, "synthetic", (1, 28, 28), 2048)
    assert before != after


def test_the_second_stage_explains_a_missing_or_wrong_first_stage(first_stage, tmp_path):
    with pytest.raises(ConfigError, match="needs a first stage"):
        train(tiny_config("ldm"), tmp_path / "a", progress=False)
    with pytest.raises(Exception, match="not a finished genzoo run"):
        train(tiny_config("ldm", f"model.autoencoder={tmp_path / 'nothing'}"), tmp_path / "b", progress=False)
    vector_vae = tmp_path / "vector-vae"
    train(tiny_config("vae", "train.steps=2"), vector_vae, progress=False)
    with pytest.raises(ConfigError, match="latent_channels"):
        train(tiny_config("ldm", f"model.autoencoder={vector_vae}"), tmp_path / "c", progress=False)
    gan = tmp_path / "gan"
    train(tiny_config("gan", "train.steps=2"), gan, progress=False)
    with pytest.raises(ConfigError, match="needs one of: vae, vqvae"):
        train(tiny_config("ldm", f"model.autoencoder={gan}"), tmp_path / "d", progress=False)


def test_every_sampler_decodes_latents_to_images(first_stage, tmp_path):
    out = tmp_path / "ldm"
    train(tiny_config("ldm", f"model.autoencoder={first_stage}", "train.steps=2"), out, progress=False)
    run = open_run(out)
    for name in samplers.SAMPLERS:
        x = run.model.sample(3, generator=torch.Generator().manual_seed(0), name=name, steps=4)
        assert x.shape == (3, *run.image_shape) and torch.isfinite(x).all(), name


def test_the_cache_key_does_not_depend_on_the_memory_format(first_stage):
    """On CUDA the trainer moves models to channels_last; hashing their weights once failed on 1x1 kernels."""
    model = open_run(first_stage).model
    holder = type("M", (), {"autoencoder": model})()
    before = latent_cache.cache_path(holder, "synthetic", (1, 28, 28), 2048)
    model.to(memory_format=torch.channels_last)
    assert latent_cache.cache_path(holder, "synthetic", (1, 28, 28), 2048) == before
