"""IP-Adapter (Ye et al. 2023) on finished text-conditioned U-Net runs: the base is untouched without an image prompt
(and at lambda 0), guidance's null prompt, a frozen base, the adapter file, the image-prompt rank, and the real path
through the CLI, alone, with a text prompt and with a ControlNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import require
from genzoo.cli import main
from genzoo.contract import Batch
from genzoo.datasets import importers
from genzoo.errors import ConfigError
from genzoo.evaluation.control import image_prompt_fidelity, prompt_ranks
from genzoo.models import ip_adapter
from genzoo.models.ddpm import DDPM, DDPMConfig
from genzoo.models.unet import CrossAttention
from genzoo.registry import ADAPTERS
from test_text_diffusion import clip

SHAPE = (1, 28, 28)


def text_ddpm() -> DDPM:
    torch.manual_seed(1)
    cfg = DDPMConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(14,), dropout=0.0, T=50)
    model = DDPM(cfg, SHAPE, num_classes=0, text_encoder=clip())
    for m in model.net.modules():  # weights so that the words (and the image tokens) matter
        if isinstance(m, CrossAttention):
            torch.nn.init.normal_(m.proj.weight, std=0.5)
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.5)
    return model.eval()


def adapter(source: str = "embedding") -> ip_adapter.IPAdapter:
    return ip_adapter.IPAdapter(ip_adapter.IPAdapterConfig(source=source), SHAPE, 0, base=text_ddpm(),
                                base_family="ddpm")


def images(n: int = 4) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(n, *SHAPE) * 2 - 1


def draw(model, **kw):
    text = model.text_encoder.tokenizer.encode_batch(["a thick 3"] * 4)
    return model.sample(4, generator=torch.Generator().manual_seed(0), text=text, name="ddim", steps=4,
                        cfg_scale=2.0, **kw)


@pytest.mark.parametrize("source", ["embedding", "patches"])
def test_without_an_image_prompt_or_at_lambda_0_it_is_the_base_and_the_prompt_steers(source):
    assert "ip-adapter" in ADAPTERS
    model, reference = adapter(source), text_ddpm()
    base = draw(reference)
    assert torch.equal(draw(model), base)
    assert torch.equal(draw(model, image_prompt=images(), ip_scale=0.0), base)
    steered = draw(model, image_prompt=images())
    assert not torch.equal(steered, base)
    assert not torch.equal(draw(model, image_prompt=images().flip(0)), steered)  # each sample reads its own prompt
    with pytest.raises(ConfigError, match="image prompts for 4 samples"):
        draw(model, image_prompt=images(2))


def test_guidance_pairs_the_prompt_with_the_null_prompt():
    model = adapter()
    layer = model.ip_layers[0]
    z = model.image_features(images())
    with ip_adapter.prompted(model.ip_layers, model.proj, z):
        tokens, null = layer.prompt
        assert torch.equal(layer.image_tokens(4), tokens)
        assert torch.equal(layer.image_tokens(8), torch.cat([tokens, null]))  # [cond; uncond] of a guided batch
        assert torch.equal(null, model.proj(torch.zeros_like(z)))  # the null prompt: zero features
    assert layer.prompt is None


def test_only_the_projection_and_the_image_keys_and_values_train():
    model = adapter().train()
    x = images()
    out = model.loss(Batch(x, torch.zeros(4, dtype=torch.long), text=model.text_encoder.tokenizer.encode_batch(
        ["a 3", "", "a thin 7", "a 1"])))
    out["loss"].backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("proj.") or ".kv_ip." in n for n in trained)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trained)  # the base gets none
    assert all(model.get_parameter(n).grad is not None for n in trained)
    layer = model.ip_layers[0]
    assert torch.equal(layer.kv_ip.weight, layer.cross.kv.weight)  # W'_k, W'_v start as the text's
    weights, meta = model.adapter_state()
    assert set(weights) == {f"proj.{k}" for k in model.proj.state_dict()} | {
        f"{name}.kv_ip.{k}" for name in model.layer_names for k in ("weight", "bias")}
    assert meta["base_sha256"] == model.base_sha256 and json.loads(meta["layers"]) == model.layer_names


def test_the_prompt_rank_finds_each_sample_s_own_prompt():
    model = clip()
    torch.manual_seed(3)
    gallery = torch.rand(50, *SHAPE) * 2 - 1
    assert prompt_ranks(model, gallery[:20], gallery).tolist() == [1] * 20  # a copy of its prompt ranks first
    score = image_prompt_fidelity(model, gallery.flip(0), gallery)
    assert score["value"] < 0.5 and "top 5" in score["protocol"]


def test_a_base_without_text_is_refused():
    torch.manual_seed(0)
    plain = DDPM(DDPMConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(14,), T=50), SHAPE)
    with pytest.raises(ConfigError, match="not text-conditioned"):
        ip_adapter.IPAdapter(ip_adapter.IPAdapterConfig(), SHAPE, 0, base=plain, base_family="ddpm")


@pytest.mark.real_data
def test_train_an_ip_adapter_on_mnist_and_combine_it_with_text_and_a_controlnet(tmp_path, capsys):
    """The real path: CLIP, a text ddpm on its encoder, an IP-Adapter and an edges ControlNet on that ddpm; then
    `genzoo sample` with an image prompt alone, with a prompt, on the base through --ip-adapter (the same samples) and
    on the ControlNet run with its control; wrong uses stop with one line."""
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    clip_run, base, ip, cn = (tmp_path / name for name in ("clip", "ddpm", "ip", "cn"))
    common = ["--dataset", "mnist", "--preset", "tiny", "--no-progress"]
    assert main(["train", "clip", *common, "--out", str(clip_run), "--set", "train.threads=1"]) == 0
    assert main(["train", "ddpm", *common, "--out", str(base), "--set", "train.threads=1", "train.steps=6",
                 f"model.text_encoder={clip_run}", "data.captions=true"]) == 0
    assert main(["train", "ip-adapter", "--preset", "tiny", "--no-progress", "--out", str(ip), "--set",
                 "train.threads=1", "train.steps=4", f"model.base={base}"]) == 0
    assert main(["train", "controlnet", "--preset", "tiny", "--no-progress", "--out", str(cn), "--set",
                 "train.threads=1", "train.steps=4", f"model.base={base}"]) == 0
    with safe_open(str(ip / "adapter.safetensors"), "pt") as f:
        assert f.metadata()["format"] == ip_adapter.FORMAT and f.metadata()["base_run"] == str(base)
    prompt = tmp_path / "prompt.npz"
    np.savez(prompt, images=((images(1) + 1) * 127.5).to(torch.uint8).numpy())
    knobs = ["--set", "sampler.steps=3"]

    def sample(run, *args) -> np.ndarray:
        out = tmp_path / "s.npz"
        assert main(["sample", str(run), "--n", "2", "--out", str(out), *knobs, *args]) == 0
        with np.load(out) as f:
            return f["images"]

    alone = sample(ip, "--image-prompt", str(prompt))
    assert alone.shape == (2, 1, 28, 28)
    assert np.array_equal(sample(base, "--ip-adapter", str(ip), "--image-prompt", str(prompt)), alone)
    assert np.array_equal(sample(ip, "--image-prompt", str(prompt), "--ip-scale", "0"), sample(base))
    sample(ip, "--image-prompt", str(prompt), "--prompt", "a thick 3", "--ip-scale", "0.5")
    sample(cn, "--ip-adapter", str(ip), "--image-prompt", str(prompt), "--control-from", str(prompt),
           "--prompt", "a 3")
    capsys.readouterr()
    image = ["--image-prompt", str(prompt)]
    for args, message in [([str(base), *image], "needs an ip-adapter run"),
                          ([str(ip), "--ip-scale", "0.5"], "pass --image-prompt"),
                          ([str(ip), "--ip-adapter", str(ip), *image], "drop --ip-adapter"),
                          ([str(base), "--ip-adapter", str(tmp_path), *image], "no adapter file"),
                          ([str(clip_run), "--ip-adapter", str(ip), *image], "draws no samples")]:
        assert main(["sample", *args, "--n", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    other = tmp_path / "other"  # the same recipe, another seed: another base
    assert main(["train", "ddpm", *common, "--out", str(other), "--set", "train.threads=1", "train.steps=6",
                 "train.seed=1", f"model.text_encoder={clip_run}", "data.captions=true"]) == 0
    assert main(["sample", str(other), "--n", "2", "--ip-adapter", str(ip), "--image-prompt", str(prompt)]) == 2
    assert "was trained on the ddpm run" in capsys.readouterr().err
