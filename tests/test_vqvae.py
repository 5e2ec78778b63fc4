"""VQ-VAE: straight-through gradients, the EMA codebook, dead-code restarts, and the two-stage prior."""

import json

import pytest
import torch

from conftest import tiny_config
from genzoo.contract import Batch
from genzoo.errors import CheckpointError, ConfigError
from genzoo.evaluation.harness import evaluate_run
from genzoo.models.vqvae import VQVAE, VQVAEConfig, VectorQuantizer
from test_autoregressive import one_thread  # noqa: F401  (autouse: one thread for these many tiny ops)
from genzoo.runs import build_model, open_run
from genzoo.train import checkpoint as ckpt
from genzoo.train.trainer import train

SHAPE = (1, 16, 16)


def model(**kw):
    torch.manual_seed(0)
    cfg = VQVAEConfig(**{"channels": 8, "ch_mult": (1, 2), "blocks": 0, "code_dim": 4, "codebook_size": 16, **kw})
    return VQVAE(cfg, SHAPE, num_classes=10)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand((n, *SHAPE), generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g))


def test_straight_through_gradients_reach_the_encoder():
    """The reconstruction loss alone (beta = 0) trains the encoder: its gradient crosses the argmin."""
    vq = model(beta=0.0)
    terms = vq.loss(batch())
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vq.encoder.parameters())
    assert list(vq.vq.parameters()) == []  # the codebook is buffers: no gradient, no optimizer


def test_the_codebook_is_an_ema_of_the_assigned_encoder_outputs():
    """App. A.1, eqs. 6-8: with gamma = 0 each used code becomes the mean of its assigned vectors."""
    vq = VectorQuantizer(size=4, dim=2, decay=0.0, restart_threshold=0.0, eps=0.0)
    vq.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    vq.initialized.fill_(True)
    z = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [9.0, 1.0], [11.0, 1.0], [9.0, 9.0], [0.0, 12.0]])
    idx = vq.codes(z)
    assert idx.tolist() == [0, 0, 1, 1, 3, 2]
    vq.update(z, idx)
    assert torch.allclose(vq.embed, torch.tensor([[0.0, 1.0], [10.0, 1.0], [0.0, 12.0], [9.0, 9.0]]))
    assert vq.cluster_size.tolist() == [2.0, 2.0, 1.0, 1.0]


def test_dead_codes_are_restarted_from_encoder_outputs():
    vq = model(codebook_size=32, restart_threshold=1.0).train()
    vq.loss(batch())  # the first batch initialises the codes from encoder outputs
    vq.vq.embed[:16] = 1e3  # half the codebook far from every encoder output: never chosen
    vq.vq.embed_sum[:16] = 1e3
    restarted = [vq.loss(batch(seed=i))["restarted"].item() for i in range(5)]
    assert restarted[0] >= 16  # their EMA count fell below the threshold at the first update
    assert vq.vq.embed.abs().max() < 1e3, "every far-away code must have been moved next to the data"
    used = set(vq.encode_tokens(torch.cat([batch(64, seed=s).images for s in range(3)])).unique().tolist())
    assert used & set(range(16)), "restarted codes are used again"


def test_the_codebook_moves_only_in_training_mode_and_usage_is_logged():
    vq = model()
    vq.loss(batch())
    before = vq.vq.embed.clone()
    vq.eval()
    terms = vq.loss(batch(seed=1))
    assert torch.equal(vq.vq.embed, before)
    assert 1.0 <= terms["perplexity"] <= 16 and 0 < terms["usage"] <= 1


def test_tokens_round_trip_through_the_codebook():
    vq = model().eval()
    x = batch().images
    tokens = vq.encode_tokens(x)
    assert tokens.shape == (8, 8, 8) and tokens.dtype == torch.int64
    assert torch.equal(vq.decode_tokens(tokens), vq.decode(vq.encode(x)))
    assert torch.equal(vq.reconstruct(batch()), vq.decode_tokens(tokens))
    assert vq.decode(vq.encode(x), quantize=False).shape == x.shape  # continuous latents for latent diffusion


def test_the_unigram_baseline_samples_codes_by_usage():
    vq = model().eval()
    vq.vq.cluster_size.zero_()
    vq.vq.cluster_size[3] = 5.0  # only code 3 was ever used
    x = vq.sample(2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, vq.decode_tokens(torch.full((2, 8, 8), 3)))


# -- the two-stage path: a transformer prior on a finished VQ-VAE run ---------------------------


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    torch.set_num_threads(1)
    train(tiny_config("vqvae", "data.image_size=16", "train.threads=1"), out, progress=False)
    return out


def test_a_transformer_prior_trains_on_the_frozen_vqvae_tokens_and_samples_images(tmp_path, vqvae_run):
    stage1 = open_run(vqvae_run)
    cfg = tiny_config("transformer", f"model.autoencoder={vqvae_run}", "data.image_size=16", "model.class_cond=true",
                      "train.steps=30", "train.threads=1")
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / ckpt.METRICS).read_text().splitlines()]
    bits = [r["bits_per_token"] for r in rows if "bits_per_token" in r]
    assert bits[-1] < bits[0] < 4.01  # 16 codes: at most log2(16) = 4 bits per token at the start

    prior = open_run(tmp_path)
    assert prior.model.vocab == 16 and prior.model.seq_len == 64  # codebook size, 8x8 token grid
    frozen = prior.model.autoencoder
    for name, p in stage1.model.state_dict().items():
        assert torch.equal(frozen.state_dict()[name], p), f"the first stage changed while training the prior: {name}"
    ours = {id(p) for p in prior.model.parameters_for("main")}
    assert not ours & {id(p) for p in frozen.parameters()}

    x = prior.model.sample(4, labels=torch.arange(4), generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, *SHAPE) and x.min() >= -1 and x.max() <= 1
    tokens = prior.model.sample_tokens(4, labels=torch.arange(4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, frozen.decode_tokens(tokens.view(4, 8, 8)))

    assert prior.model.likelihood is None  # no pixel likelihood for a prior
    result = evaluate_run(tmp_path, n=8, metrics="bpd")
    assert "bpd" not in result["metrics"] and result["cost"]["network_evaluations_per_sample"] == 65


def test_the_prior_needs_a_finished_vqvae_run(tmp_path, vqvae_run):
    missing = tiny_config("transformer", f"model.autoencoder={tmp_path / 'nowhere'}")
    with pytest.raises(CheckpointError, match="not a finished genzoo run"):
        build_model(missing, SHAPE, 10)
    other = tmp_path / "pixelcnn"
    train(tiny_config("pixelcnn", "data.image_size=16", "train.steps=2", "train.threads=1"), other, progress=False)
    with pytest.raises(ConfigError, match="'pixelcnn' run; transformer needs one of: vqvae"):
        build_model(tiny_config("transformer", f"model.autoencoder={other}"), SHAPE, 10)
    with pytest.raises(ConfigError, match="trained on"):
        build_model(tiny_config("transformer", f"model.autoencoder={vqvae_run}"), (1, 28, 28), 10)


def test_the_codebook_statistics_stay_float32_under_bf16_autocast():
    """The trainer runs the loss under bf16 autocast on CUDA; the EMA update must not mix dtypes (it once did)."""
    vq = model()
    for _ in range(2):  # the first batch initialises the codes, the second is an EMA step
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = vq.loss(batch())
        terms["loss"].float().backward()
    assert vq.vq.embed.dtype == torch.float32 and torch.isfinite(vq.vq.embed).all()
