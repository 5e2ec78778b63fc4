"""Text-conditioned diffusion: cross-attention to a frozen CLIP text encoder in the U-Net (ddpm, ldm), the empty
caption as guidance's null condition, `genzoo sample --prompt`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import require, tiny_config
from genzoo.cli import main
from genzoo.contract import Batch
from genzoo.datasets import importers
from genzoo.errors import ConfigError
from genzoo.models.clip import CLIP, CLIPConfig
from genzoo.models.ddpm import DDPM, DDPMConfig
from genzoo.models.unet import CrossAttention, Text

SHAPE = (1, 8, 8)


def clip() -> CLIP:
    torch.manual_seed(0)
    return CLIP(CLIPConfig(channels=8, ch_mult=(1, 2), blocks=0, d_model=16, n_layers=1, embed_dim=16), (1, 28, 28))


def text_ddpm(p_uncond: float = 0.1) -> DDPM:
    torch.manual_seed(1)
    cfg = DDPMConfig(channels=8, ch_mult=(1, 2), blocks=1, attn_res=(4,), dropout=0.0, T=50, p_uncond=p_uncond,
                     class_cond=True)
    model = DDPM(cfg, SHAPE, num_classes=10, text_encoder=clip())
    for m in model.net.modules():  # cross-attention and the output start at zero; weights so the words matter
        if isinstance(m, CrossAttention):
            torch.nn.init.normal_(m.proj.weight, std=0.5)
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.5)
    return model.eval()


def tokens(model, prompts):
    return model.text_encoder.tokenizer.encode_batch(prompts)


def test_a_caption_replaces_the_label_and_reaches_the_network_through_cross_attention():
    model = text_ddpm()
    assert model.num_classes == 0 and model.net.label_emb is None
    crosses = [m for m in model.net.modules() if isinstance(m, CrossAttention)]
    assert len(crosses) == 4  # at 4x4: one down block, the middle, two up blocks
    x, t = torch.randn(2, *SHAPE), torch.tensor([10, 10])
    a = model.net(x, t, model.encode_text(tokens(model, ["a thick 3", "a thick 3"])))
    b = model.net(x, t, model.encode_text(tokens(model, ["a thick 3", "a thin 8"])))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    cond = model.encode_text(tokens(model, ["a 7"]))
    assert isinstance(cond, Text) and cond.tokens.shape == (1, 16, 16) and cond.pooled.shape == (1, 16)


def test_every_caption_dropped_is_the_unconditional_path_of_the_empty_prompt():
    model = text_ddpm(p_uncond=1.0)
    batch = Batch(torch.zeros(3, *SHAPE), None, text=tokens(model, ["a 1", "a thick 2", "the digit 3, thin"]))
    dropped = model.train_condition(batch)
    empty = model.condition(None, None, 3)  # sampling without a prompt
    assert torch.equal(dropped.tokens, empty.tokens) and torch.equal(dropped.pooled, empty.pooled)
    assert torch.equal(empty.pooled, model.encode_text(tokens(model, [""] * 3)).pooled)
    kept = text_ddpm(p_uncond=0.0).train_condition(batch)
    assert torch.equal(kept.pooled, model.encode_text(batch.text).pooled)


def test_guidance_scale_1_is_the_conditional_model_and_0_the_empty_prompt():
    model = text_ddpm()
    x, t = torch.randn(2, *SHAPE), torch.tensor([20, 30])
    cond = model.encode_text(tokens(model, ["a thick 3", "a 9"]))
    null = model.encode_text(tokens(model, ["", ""]))
    with torch.no_grad():
        torch.testing.assert_close(model.guided(cond, 1.0)(x, t), model.net(x, t, cond))
        torch.testing.assert_close(model.guided(cond, 0.0)(x, t), model.net(x, t, null), atol=1e-5, rtol=0)
        out_c, out_u, s = model.net(x, t, cond), model.net(x, t, null), 3.0
        torch.testing.assert_close(model.guided(cond, s)(x, t), out_u + s * (out_c - out_u), atol=1e-5, rtol=0)
    assert model.network_evaluations(steps=5, cfg_scale=3.0) == 2 * model.network_evaluations(steps=5)


def test_the_text_encoder_is_frozen_and_not_trained():
    model = text_ddpm().train()
    ours = {id(p) for p in model.parameters_for("main")}
    assert not ours & {id(p) for p in model.text_encoder.parameters()}
    assert not model.text_encoder.training and not any(p.requires_grad for p in model.text_encoder.parameters())
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    batch = Batch(torch.rand(4, *SHAPE) * 2 - 1, None, text=tokens(model, ["a 1", "a 2", "", "a thick 4"]))
    model.loss(batch)["loss"].backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.text_encoder.state_dict().items())
    with pytest.raises(ConfigError, match="data.captions=true"):
        model.loss(Batch(batch.images, None))


def test_prompts_are_deterministic_per_seed_and_change_the_samples():
    model = text_ddpm()
    text = tokens(model, ["a thick 3"] * 2)
    a = model.sample(2, text=text, generator=torch.Generator().manual_seed(0), steps=4, cfg_scale=2.0)
    b = model.sample(2, text=text, generator=torch.Generator().manual_seed(0), steps=4, cfg_scale=2.0)
    c = model.sample(2, text=tokens(model, ["a thin 8"] * 2), generator=torch.Generator().manual_seed(0), steps=4,
                     cfg_scale=2.0)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("denoiser", ["unet", "dit"])
def test_an_ldm_takes_text_through_either_denoiser(denoiser):
    from genzoo.models.ldm import LatentDiffusion, LDMConfig
    from genzoo.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    ae = VAE(VAEConfig(channels=8, ch_mult=(1, 2), blocks=0, latent_channels=2), (1, 8, 8))
    cfg = LDMConfig(channels=8, ch_mult=(1,), blocks=1, attn_res=(4,), T=50, class_cond=True, denoiser=denoiser,
                    hidden=16, depth=1, heads=2)
    model = LatentDiffusion(cfg, (1, 8, 8), 10, autoencoder=ae, text_encoder=clip())
    assert model.num_classes == 0 and model.text_encoder is model.diffusion.text_encoder
    batch = Batch(torch.rand(2, 1, 8, 8) * 2 - 1, None, text=tokens(model, ["a 1", "a 2"]))
    assert torch.isfinite(model.loss(batch)["loss"])
    x = model.sample(2, text=batch.text, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8)


def test_the_dit_reads_the_words_through_cross_attention():
    from genzoo.models.dit import DiTConfig, DiTDiffusion

    torch.manual_seed(0)
    model = DiTDiffusion(DiTConfig(patch=2, hidden=16, depth=2, heads=2, T=50, class_cond=True), SHAPE, 10,
                         text_encoder=clip()).eval()
    assert model.num_classes == 0 and model.net.y_emb is None
    for block in model.net.blocks:
        torch.nn.init.normal_(block.cross_proj.weight, std=0.5)
        torch.nn.init.normal_(block.ada[1].weight, std=0.1)
    torch.nn.init.normal_(model.net.out.weight, std=0.5), torch.nn.init.normal_(model.net.ada_out[1].weight, std=0.1)
    x, t = torch.randn(2, *SHAPE), torch.tensor([10, 10])
    a = model.net(x, t, model.encode_text(tokens(model, ["a thick 3", "a thick 3"])))
    b = model.net(x, t, model.encode_text(tokens(model, ["a thick 3", "a thin 8"])))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_a_text_encoder_without_captions_stops_before_training(tmp_path, capsys):
    assert main(["train", "ddpm", "--dataset", "synthetic", "--preset", "tiny", "--out", str(tmp_path / "r"),
                 "--no-progress", "--set", f"model.text_encoder={tmp_path / 'clip'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add data.captions=true" in err[0]
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_sample_prompt_is_refused_by_a_run_without_text(tmp_path, capsys):
    from genzoo.train.trainer import train

    train(tiny_config("ddpm", "train.steps=2"), tmp_path, progress=False)
    capsys.readouterr()
    assert main(["sample", str(tmp_path), "--n", "2", "--prompt", "a 3", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not text-conditioned" in err[0]


@pytest.mark.real_data
def test_train_a_text_ddpm_on_mnist_captions_and_sample_from_prompts(tmp_path, capsys):
    """The real path: a CLIP run, a ddpm on its frozen text encoder with MNIST captions, then `genzoo sample
    --prompt` / `--prompts` (the npz records them) and an unknown word's one-line error."""
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    clip_run, run = tmp_path / "clip", tmp_path / "ddpm"
    assert main(["train", "clip", "--dataset", "mnist", "--preset", "tiny", "--out", str(clip_run), "--no-progress",
                 "--set", "train.threads=1"]) == 0
    assert main(["train", "ddpm", "--dataset", "mnist", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "--set", "train.threads=1", "train.steps=6", f"model.text_encoder={clip_run}",
                 "data.captions=true"]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "3", "--prompt", "a thick 3", "--out", str(out),
                 "--set", "sampler.cfg_scale=2"]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (3, 1, 28, 28) and list(f["prompts"]) == ["a thick 3"] * 3
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a thin 1\n\nthe digit 7, thick and upright\n")
    assert main(["sample", str(run), "--n", "4", "--prompts", str(prompts), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert list(f["prompts"]) == ["a thin 1", "a thin 1", "the digit 7, thick and upright",
                                      "the digit 7, thick and upright"]
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "2", "--prompt", "a purple 3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "purple" in err[0]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["text_encoder"] == str(clip_run)


# -- MM-DiT (SD3): a text stream beside the image stream, one joint attention ---------------------------------


def test_an_mmdit_block_with_no_text_tokens_is_a_dit_block():
    """The image stream's weights carry DiTBlock's names: with an empty text stream the joint attention is the
    DiT's self-attention, so the block computes exactly what a DiTBlock with those weights computes."""
    from genzoo.models.dit import DiTBlock, MMDiTBlock

    torch.manual_seed(0)
    D, heads = 16, 2
    mm, dit = MMDiTBlock(D, heads, 2.0), DiTBlock(D, heads, 2.0)
    for p in mm.parameters():
        torch.nn.init.normal_(p, std=0.3)  # adaLN-Zero would make both the identity
    assert dit.load_state_dict(mm.x.state_dict()).missing_keys == []
    x, c = torch.randn(3, 9, D), torch.randn(3, D)
    y, s = mm(x, torch.zeros(3, 0, D), c)
    assert y.shape == (3, 9, D) and s.shape == (3, 0, D)
    torch.testing.assert_close(y, dit(x, c))


def test_the_mmdit_has_weights_per_modality_and_reads_the_words_through_joint_attention():
    from genzoo.models.dit import DiTConfig, DiTDiffusion, MMDiTBlock

    torch.manual_seed(0)
    model = DiTDiffusion(DiTConfig(patch=2, hidden=16, depth=2, heads=2, T=50, class_cond=True,
                                   text_attention="joint"), SHAPE, 10, text_encoder=clip()).eval()
    blocks = list(model.net.blocks)
    assert all(isinstance(b, MMDiTBlock) for b in blocks) and model.net.y_emb is None
    assert blocks[0].x.qkv is not blocks[0].s.qkv and blocks[0].x.mlp is not blocks[0].s.mlp
    assert not hasattr(blocks[-1].s, "mlp")  # the last block's text stream only gives keys and values
    x, t = torch.randn(2, *SHAPE), torch.tensor([10, 10])
    cond = model.encode_text(tokens(model, ["a thick 3", "a thin 8"]))
    torch.testing.assert_close(model.net(x, t, cond), torch.zeros_like(x))  # adaLN-Zero and a zero output layer
    for p in model.net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    a = model.net(x, t, model.encode_text(tokens(model, ["a thick 3", "a thick 3"])))
    b = model.net(x, t, cond)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    loss = model.loss(Batch(torch.rand(2, *SHAPE) * 2 - 1, None, text=tokens(model, ["a 1", "a 2"])))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.net.context_in.weight.grad.abs().sum() > 0


def test_joint_attention_without_a_text_encoder_is_refused_in_one_line():
    from genzoo.models.dit import DiTConfig, DiTDiffusion

    with pytest.raises(ConfigError, match="model.text_attention=joint .* needs model.text_encoder"):
        DiTDiffusion(DiTConfig(patch=2, hidden=16, depth=1, heads=2, T=50, class_cond=True,
                               text_attention="joint"), SHAPE, 10)


@pytest.mark.parametrize("attention", ["cross", "joint"])
def test_a_text_conditioned_flow_on_the_dit_as_sd3_trains_and_samples_from_prompts(attention):
    """SD3's recipe at toy size: a rectified flow on an MM-DiT (or the cross-attention DiT) with the frozen CLIP."""
    from genzoo.models.flow import FlowConfig, RectifiedFlow

    torch.manual_seed(0)
    cfg = FlowConfig(denoiser="dit", patch=2, hidden=16, depth=2, heads=2, class_cond=True, text_attention=attention)
    model = RectifiedFlow(cfg, SHAPE, 10, text_encoder=clip())
    assert model.num_classes == 0 and model.network_evaluations(steps=4, cfg_scale=2.0) == 8
    batch = Batch(torch.rand(2, *SHAPE) * 2 - 1, None, text=tokens(model, ["a 1", "a thick 2"]))
    assert torch.isfinite(model.loss(batch)["loss"])
    for p in model.net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model.eval()
    text = tokens(model, ["a thick 3"] * 2)
    draw = lambda prompts, s: model.sample(2, text=prompts, generator=torch.Generator().manual_seed(0), steps=3,
                                           cfg_scale=s)
    a, b = draw(text, 2.0), draw(text, 2.0)
    assert torch.equal(a, b) and not torch.equal(a, draw(tokens(model, ["a thin 8"] * 2), 2.0))
    torch.testing.assert_close(draw(text, 1.0), model.sample(2, text=text, generator=torch.Generator().manual_seed(0),
                                                             steps=3))


def test_reflow_pairs_and_a_text_encoder_are_refused_together():
    from genzoo.models.flow import FlowConfig, RectifiedFlow

    with pytest.raises(ConfigError, match="model.pairs .* model.text_encoder"):
        RectifiedFlow(FlowConfig(channels=8, ch_mult=(1,), blocks=1, attn_res=(), pairs="p.npz"), SHAPE, 10,
                      text_encoder=clip())


def test_joint_attention_on_the_u_net_is_refused_in_one_line():
    from genzoo.models.flow import FlowConfig, RectifiedFlow

    with pytest.raises(ConfigError, match="set model.denoiser=dit as well"):
        RectifiedFlow(FlowConfig(channels=8, ch_mult=(1,), blocks=1, attn_res=(), text_attention="joint"), SHAPE, 10,
                      text_encoder=clip())
