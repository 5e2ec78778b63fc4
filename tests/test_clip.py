"""The zoo's CLIP: a component trained by the shared trainer, scored by `genzoo eval`, that draws no samples."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import require
from genzoo.cli import main
from genzoo.contract import Batch, Component
from genzoo.datasets import captions, importers
from genzoo.models.clip import CLIP, CLIPConfig, contrastive_loss
from genzoo.registry import COMPONENTS, FAMILIES


def tiny() -> CLIP:
    torch.manual_seed(0)
    return CLIP(CLIPConfig(channels=8, ch_mult=(1, 2), blocks=0, d_model=16, n_layers=1, embed_dim=16), (1, 28, 28))


def test_the_contrastive_loss_is_symmetric_and_lowest_for_matched_pairs():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    b = F.normalize(a + 0.3 * torch.randn(8, 16, generator=g), dim=-1)  # b[i] is close to a[i]
    scale = torch.tensor(10.0)
    assert torch.allclose(contrastive_loss(a, b, scale)[0], contrastive_loss(b, a, scale)[0])
    matched, acc = contrastive_loss(a, b, scale)
    for shift in range(1, 8):
        assert contrastive_loss(a, b.roll(shift, 0), scale)[0] > matched
    assert acc == 1.0


def test_the_temperature_is_clamped_and_the_encoders_give_unit_embeddings():
    model = tiny()
    assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.tau.fill_(10.0)
    assert model.logit_scale().item() == 100.0
    z_img = model.embed_images(torch.rand(3, 1, 28, 28) * 2 - 1)
    z_txt = model.embed_prompts(["a thick, right-leaning seven", "a 7", ""])
    assert z_img.shape == z_txt.shape == (3, 16)
    assert torch.allclose(z_img.norm(dim=1), torch.ones(3)) and torch.allclose(z_txt.norm(dim=1), torch.ones(3))
    tokens = model.tokenizer.encode_batch(["a 7", "a 7"])
    tokens[1, 5:] = 3  # after <eos>: causal attention, so the pooled <eos> output does not change
    assert torch.allclose(model.embed_text(tokens)[0], model.embed_text(tokens)[1], atol=1e-6)
    assert model.image_patches(torch.zeros(2, 1, 28, 28)).shape == (2, 14 * 14, 16)
    with pytest.raises(Exception, match="data.captions=true"):
        model.loss(Batch(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)))


def test_clip_is_a_component_not_a_family():
    assert "clip" in COMPONENTS and "clip" not in FAMILIES
    assert issubclass(COMPONENTS["clip"].model, Component)


def test_captions_need_a_captioned_dataset(capsys):
    assert main(["train", "clip", "--dataset", "synthetic", "--preset", "tiny", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "captions exist for mnist and fashion-mnist, not 'synthetic'" in err[0]


@pytest.mark.real_data
def test_train_eval_and_refused_sample_on_real_mnist(tmp_path, capsys):
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    run = tmp_path / "clip"
    assert main(["train", "clip", "--dataset", "mnist", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "--set", "train.threads=1"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert rows[-1]["loss"] < rows[0]["loss"], "the contrastive loss falls"
    assert not (run / "samples").exists(), "a component draws no grids"
    capsys.readouterr()
    assert main(["eval", str(run), "--n", "200", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    m = result["metrics"]
    assert result["component"] == "clip" and m["n"] == 200
    for key in ("zero_shot_accuracy", "recall@1", "recall@5", "thickness_accuracy", "slant_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["recall@5"] >= m["recall@1"]
    assert main(["sample", str(run), "--n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a component that draws no samples" in err[0] and "genzoo eval" in err[0]


def test_the_tokenizer_of_the_model_is_the_captions_tokenizer():
    assert tiny().tokenizer.vocab == captions.Tokenizer().vocab
