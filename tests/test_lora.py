"""LoRA (Hu et al. 2021) on finished runs, and the small-data selection it trains on: identity at start, a frozen
base, the adapter file alone, scale 0 = the base, merged = unmerged, several adapters, the wrong base refused."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from conftest import require, tiny_config
from genzoo.cli import main
from genzoo.config import DataConfig
from genzoo.datasets import attributes, importers, load_from_config
from genzoo.errors import ConfigError, GenzooError
from genzoo.models import lora
from genzoo.registry import ADAPTERS, FAMILIES, resolve_config
from genzoo.runs import open_run
from genzoo.train import checkpoint as ckpt
from genzoo.train.trainer import train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished tiny class-conditional ddpm run."""
    out = tmp_path_factory.mktemp("lora") / "base"
    train(tiny_config("ddpm", "model.class_cond=true", "train.steps=4"), out, progress=False)
    return out


def lora_config(base, *overrides):
    return resolve_config("lora", preset="tiny", overrides=[f"model.base={base}", "train.threads=1", *overrides])


def samples(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return model.sample(4, labels=torch.arange(4), generator=g, name="ddim", steps=5)


def test_lora_is_an_adapter_with_the_base_family_sampler(base):
    assert "lora" in ADAPTERS and "lora" not in FAMILIES
    cfg = lora_config(base)
    assert type(cfg.sampler).__name__ == "SamplerConfig" and cfg.sampler.steps == 5  # ddpm tiny's knobs
    with pytest.raises(ConfigError, match="model.base=RUN"):
        resolve_config("lora", preset="tiny")
    vae = base.parent / "vae"
    train(tiny_config("vae", "train.steps=2"), vae, progress=False)
    with pytest.raises(ConfigError, match="a 'vae' run; lora adapts one of"):
        lora_config(vae)


def test_at_start_the_adapted_model_is_the_base_and_no_gradient_reaches_it(base):
    from genzoo.runs import build_model

    torch.manual_seed(0)
    model = build_model(lora_config(base, "model.targets=all"), (1, 28, 28), 10)
    reference = open_run(base).model
    torch.testing.assert_close(samples(model), samples(reference), rtol=0, atol=0)
    trainable = model.parameters_for("main")
    assert trainable and all(".adapters." in n for n, p in model.named_parameters() if p.requires_grad)
    batch = torch.rand(4, 1, 8, 8) * 2 - 1
    from genzoo.contract import Batch
    model.loss(Batch(batch, torch.arange(4)))["loss"].backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".adapters." not in n)
    assert all(p.grad is not None for p in trainable)  # every A and B gets one (zero for A while B = 0)


@pytest.mark.parametrize("targets,rank,share", [("attention", 4, 0.01), ("all", 1, 0.03)])
def test_the_updates_are_a_small_share_of_a_quick_model(targets, rank, share):
    from genzoo.models.ddpm import DDPM

    cfg = resolve_config("ddpm", dataset="mnist", preset="quick")
    model = DDPM(cfg.model, (1, 28, 28), 10)
    n = sum(p.numel() for p in model.parameters())
    layers = lora.wrap_layers(model, lora.targets_of(model, targets))
    n_lora = sum(p.numel() for layer in layers.values() for p in layer.add(rank, 1.0).parameters())
    assert 0 < n_lora <= share * n


def test_full_fine_tuning_trains_the_denoiser_only():
    from genzoo.runs import build_model
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        ae, ldm = Path(d) / "ae", Path(d) / "ldm"
        train(tiny_config("vae", "train.steps=2", "model.latent_channels=2"), ae, progress=False)
        train(tiny_config("ldm", f"model.autoencoder={ae}", "model.class_cond=true", "train.steps=2"), ldm,
              progress=False)
        model = build_model(lora_config(ldm, "model.method=full"), (1, 28, 28), 10)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert names and not any("autoencoder" in n for n in names)
        assert any("autoencoder" in n for n, _ in model.named_parameters())
        assert model.adapter_state() is None


def test_a_trained_adapter_is_saved_alone_and_applies_at_a_scale(base, tmp_path, capsys):
    run = tmp_path / "thick"
    train(lora_config(base, "model.targets=all"), run, progress=False)
    path = run / ckpt.ADAPTER
    with safe_open(str(path), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["base_family"] == "ddpm" and meta["rank"] == "4" and meta["targets"] == "all"
    assert keys and all(k.endswith((".A", ".B")) for k in keys)
    n_adapter = sum(t.numel() for t in lora.load_adapter(path)[0].values())
    assert n_adapter == sum(p.numel() for p in open_run(run).model.parameters_for("main"))  # nothing else

    trained = open_run(run).model
    weights, meta = lora.load_adapter(path)
    assert meta["dtype"] == "float16"  # the file is the run's update, rounded to half precision once
    for name in trained.layer_names:
        ab = trained.base.get_submodule(name).adapters[0]
        assert torch.equal(weights[f"{name}.A"], ab.A.weight.half()) and torch.equal(weights[f"{name}.B"],
                                                                                     ab.B.weight.half())
    base_model = open_run(base).model
    with_adapter = open_run(base).model
    lora.apply_adapter(with_adapter, run)
    unmerged = samples(with_adapter)
    torch.testing.assert_close(unmerged, samples(trained), rtol=0, atol=1e-3)  # half-precision rounding only
    assert (samples(with_adapter) - samples(base_model)).abs().mean() > 1e-3  # it changed the model
    at_zero = open_run(base).model
    lora.apply_adapter(at_zero, path, scale=0.0)
    torch.testing.assert_close(samples(at_zero), samples(base_model), rtol=0, atol=0)  # bit for bit
    merged = lora.merge(with_adapter)
    assert not any(isinstance(m, lora.LoRALayer) for m in merged.modules())
    torch.testing.assert_close(samples(merged), unmerged, rtol=0, atol=0)  # the same arithmetic: bit for bit

    # two adapters add up: the same one twice at 0.5 is the one at 1
    twice = open_run(base).model
    lora.apply_adapter(twice, path, 0.5)
    lora.apply_adapter(twice, path, 0.5)
    torch.testing.assert_close(samples(twice), unmerged, rtol=0, atol=1e-5)

    # the CLI: mixed and merged, and the wrong base refused in one line
    assert main(["sample", str(base), "--n", "4", "--lora", f"{run}:0.5", "--lora", str(path), "--merge",
                 "--out", str(tmp_path / "s.npz")]) == 0
    other = tmp_path / "other"
    train(tiny_config("ddpm", "model.class_cond=true", "train.steps=4", "train.seed=3"), other, progress=False)
    assert main(["sample", str(other), "--n", "4", "--lora", str(run)]) == 2
    assert "was trained on the ddpm run" in capsys.readouterr().err
    assert main(["sample", str(base), "--n", "4", "--lora", f"{run}:half"]) == 2
    assert main(["sample", str(base), "--n", "4", "--lora", str(tmp_path / "nothing")]) == 2
    assert main(["sample", str(base), "--n", "4", "--merge"]) == 2


@pytest.mark.parametrize("family", ["dit", "transformer"])
def test_lora_adapts_the_attention_of_other_families(family, tmp_path):
    out = tmp_path / family
    train(tiny_config(family, "model.class_cond=true", "train.steps=2"), out, progress=False)
    names = lora.targets_of(open_run(out).model, "attention")
    assert names and all(n.split(".")[-1] in lora.ATTENTION for n in names)
    train(lora_config(out), tmp_path / "lora", progress=False)
    assert (tmp_path / "lora" / ckpt.ADAPTER).is_file()


def test_a_lora_run_resumes(base, tmp_path):
    train(lora_config(base, "train.steps=4"), tmp_path / "r", progress=False)
    train(lora_config(base, "train.steps=8"), tmp_path / "r", resume=True, progress=False)
    assert open_run(tmp_path / "r").step == 8


def test_the_data_subset_keeps_one_attribute_bin_and_the_limit_a_fixed_few():
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    thick = load_from_config(DataConfig(subset="thickness:thick", limit=200))
    assert len(thick) == 200 and (attributes.measure("mnist", thick.images)["thickness"] == 2).all()
    assert torch.equal(thick.images, load_from_config(DataConfig(subset="thickness:thick", limit=200)).images)
    reference = load_from_config(DataConfig(subset="thickness:thick", limit=200), "train", limited=False)
    assert len(reference) > 15000  # the evaluation's reference is the whole bin
    with pytest.raises(GenzooError, match="thickness:thin|regular|thick"):
        load_from_config(DataConfig(subset="thick"))
    with pytest.raises(ConfigError, match="mnist offers"):
        resolve_config("ddpm", preset="tiny", overrides=["data.subset=ink:dark"])
    with pytest.raises(GenzooError, match="holds only"):
        load_from_config(DataConfig(dataset="mnist", limit=10**6))
