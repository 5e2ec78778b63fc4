"""Autoregressive families (Gated PixelCNN, pixel transformer): causality, exact likelihood, samplers.

The order is raster over pixels with the channels innermost: sub-pixel (r, c, ch) may depend only on
sub-pixels earlier in that order.
"""

import json
import math

import pytest
import torch

from conftest import tiny_config
from genzoo.contract import Batch
from genzoo.errors import ConfigError
from genzoo.models.pixelcnn import PixelCNN, PixelCNNConfig
from genzoo.models.transformer import Transformer, TransformerConfig
from genzoo.train import checkpoint as ckpt
from genzoo.train.trainer import train

RGB = (3, 5, 5)


@pytest.fixture(autouse=True)
def one_thread():
    """These models run thousands of tiny ops: one thread is faster (and far faster on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def order(ch, r, c, shape=RGB):
    C, H, W = shape
    return (r * W + c) * C + ch


def images(n, shape=RGB, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 127.5 - 1


def pixelcnn(shape=RGB, **kw):
    torch.manual_seed(0)
    cfg = PixelCNNConfig(**{"channels": 8, "layers": 6, "head": 8, **kw})
    return PixelCNN(cfg, shape, num_classes=10).eval()


def transformer(shape=RGB, **kw):
    torch.manual_seed(0)
    cfg = TransformerConfig(**{"d_model": 16, "n_layers": 2, "n_heads": 2, **kw})
    return Transformer(cfg, shape, num_classes=10).eval()


def test_pixelcnn_sees_every_earlier_subpixel_and_nothing_else():
    """Gradient of each sub-pixel's logits w.r.t. the input: nonzero exactly on the earlier sub-pixels
    (causal, channel order R -> G -> B within a pixel, and no blind spot)."""
    C, H, W = RGB
    model = pixelcnn(class_cond=True)  # 6 layers of 3x3: the receptive field covers a 5x5 image
    x = images(1).requires_grad_(True)
    logits = model(x, torch.tensor([3]))  # (1, C, 256, H, W)
    weights = torch.randn(256)
    before = torch.arange(C * H * W).view(H, W, C).permute(2, 0, 1)  # order of every input sub-pixel
    for r in range(H):
        for c in range(W):
            for ch in range(C):
                (grad,) = torch.autograd.grad((logits[0, ch, :, r, c] * weights).sum(), x, retain_graph=True)
                expected = before < order(ch, r, c)
                assert torch.equal(grad[0] != 0, expected), f"sub-pixel {(ch, r, c)} depends on the wrong inputs"


@pytest.mark.parametrize("class_every", [False, True], ids=["class-at-start", "class-everywhere"])
def test_transformer_output_for_subpixel_i_ignores_subpixels_from_i_on(class_every):
    """Perturbation: changing token i leaves every logit predicting tokens <= i unchanged, and
    changes all later ones."""
    model = transformer(class_cond=True, class_every=class_every)
    tokens = model.to_tokens(images(1))  # (1, 75)
    y = torch.tensor([7])
    base = model(tokens[:, :-1], y)  # (1, T, 256): row t predicts token t
    T = tokens.shape[1]
    for i in range(T - 1):
        changed = tokens.clone()
        changed[0, i] = (changed[0, i] + 101) % 256
        moved = (model(changed[:, :-1], y) != base).any(-1)[0]  # (T,)
        assert not moved[:i + 1].any(), f"token {i} leaks into the prediction of tokens <= {i}"
        assert moved[i + 1:].all()


def test_token_order_is_raster_with_channels_innermost():
    model = transformer()
    x = images(2)
    tokens = model.to_tokens(x)
    C, H, W = RGB
    r, c, ch = 2, 3, 1
    assert tokens[0, order(ch, r, c)] == round((x[0, ch, r, c].item() + 1) * 127.5)
    assert torch.equal(model.from_tokens(tokens), x)


@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=["pixelcnn", "transformer"])
def test_a_uniform_model_scores_exactly_8_bits_per_dim(make):
    model = make()
    head = model.head_out if isinstance(model, PixelCNN) else model.head
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)  # all-zero logits: p = 1/256 each
    batch = Batch(images(4), torch.arange(4))
    bpd = model.log_likelihood(batch)
    assert bpd.shape == (4,)
    assert torch.allclose(bpd, torch.full((4,), 8.0), atol=1e-6, rtol=0)
    assert math.isclose(model.loss(batch)["bpd"].item(), 8.0, abs_tol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 2), (1, 2, 1)], ids=["one-row", "one-column"])
@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=["pixelcnn", "transformer"])
def test_the_likelihood_is_a_normalised_distribution(make, shape):
    """Summing p(x) over all 256^2 two-pixel images gives 1 (an exact likelihood, not a bound), with the
    second pixel to the right of the first or below it (the transformer's `above` input)."""
    model = make(shape=shape, class_cond=True)
    grid = torch.stack(torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij"), -1).view(-1, *shape)
    x = grid.float() / 127.5 - 1  # every image of 2 sub-pixels
    bpd = model.log_likelihood(Batch(x, torch.full((len(x),), 4)))
    total = torch.exp2(-bpd.double() * 2).sum()
    assert math.isclose(total.item(), 1.0, rel_tol=1e-4)


@pytest.mark.parametrize("class_every", [False, True], ids=["class-at-start", "class-everywhere"])
def test_kv_cached_sampling_gives_exactly_the_uncached_samples(class_every):
    model = transformer(class_cond=True, class_every=class_every)
    labels = torch.arange(6)
    for knobs in ({}, {"temperature": 0.8, "top_k": 20}):
        cached = model.sample(6, labels=labels, generator=torch.Generator().manual_seed(1), kv_cache=True, **knobs)
        plain = model.sample(6, labels=labels, generator=torch.Generator().manual_seed(1), kv_cache=False, **knobs)
        assert torch.equal(cached, plain)


@pytest.mark.parametrize("shape,kernel", [(RGB, 3), ((1, 9, 9), 5)], ids=["rgb-k3", "gray-k5"])
def test_pixelcnn_row_cached_sampling_gives_exactly_the_full_network_samples(shape, kernel):
    """The cached sampler runs each horizontal layer on the k//2 + 2 columns its output sees (the window starts
    past column 0 once c > k//2 + 1, as at both sizes here): the same samples as the full network."""
    model = pixelcnn(shape, class_cond=True, kernel=kernel)
    labels = torch.arange(4)
    fast = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(2), cache=True)
    full = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(2), cache=False)
    assert torch.equal(fast, full)


@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=["pixelcnn", "transformer"])
def test_guided_sampling_mixes_the_conditional_and_null_logits_of_each_prefix(make):
    """cfg_scale s draws every sub-pixel from l(. | null) + s (l(. | y) - l(. | null)) of the full network on
    the prefix drawn so far (greedy here, so the reference is exact); the caches give the same samples."""
    shape, s, labels = (1, 3, 3), 3.0, torch.tensor([1, 7])
    model = make(shape=shape, class_cond=True)
    for p in model.parameters():  # large logits: the label matters
        p.data.mul_(3.0)
    null = torch.full_like(labels, 10)
    x = torch.zeros(2, *shape)
    for i in range(math.prod(shape)):  # raster order, one channel
        r, c = divmod(i, shape[2])
        if make is pixelcnn:
            l_c, l_u = model(x, labels)[:, 0, :, r, c], model(x, null)[:, 0, :, r, c]
        else:
            tokens = model.to_tokens(x)[:, :i]
            l_c, l_u = model(tokens, labels)[:, -1], model(tokens, null)[:, -1]
        x[:, 0, r, c] = (l_u + s * (l_c - l_u)).argmax(-1).float() / 127.5 - 1
    cache = "cache" if make is pixelcnn else "kv_cache"
    for cached in (True, False):
        got = model.sample(2, labels=labels, temperature=0.0, cfg_scale=s, **{cache: cached})
        torch.testing.assert_close(got, x, atol=1e-6, rtol=0)
    assert not torch.equal(got, model.sample(2, labels=labels, temperature=0.0)), "guidance must change the draw"
    assert model.network_evaluations(cfg_scale=s) == 2 * model.network_evaluations()


@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=["pixelcnn", "transformer"])
def test_training_drops_labels_to_the_null_label(make):
    model = make(class_cond=True, p_uncond=0.5)
    torch.manual_seed(0)
    y = model.dropped_labels(torch.arange(1000) % 10, 1000)
    assert 0.4 < (y == 10).float().mean() < 0.6 and torch.equal(y[y < 10], (torch.arange(1000) % 10)[y < 10])
    assert torch.equal(make(class_cond=True, p_uncond=0.0).dropped_labels(torch.arange(8), 8), torch.arange(8))
    batch = Batch(images(4), torch.arange(4))
    assert torch.equal(model.log_likelihood(batch), model.log_likelihood(batch)), "the likelihood never drops labels"


@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=["pixelcnn", "transformer"])
def test_greedy_sampling_is_the_top_1_and_temperature_sharpens(make):
    model = make(shape=(1, 4, 4))
    for p in model.parameters():  # a confident model: large logits
        p.data.mul_(3.0)
    greedy = model.sample(4, generator=torch.Generator().manual_seed(0), temperature=0.0)
    top1 = model.sample(4, generator=torch.Generator().manual_seed(5), **(
        {"top_k": 1} if isinstance(model, Transformer) else {"temperature": 1e-6}))
    assert torch.equal(greedy, top1)
    assert torch.equal(greedy[0], greedy[1])  # no randomness left
    assert not torch.equal(*model.sample(2, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("family", ["pixelcnn", "transformer"])
def test_a_tiny_run_learns(tmp_path, family):
    cfg = tiny_config(family, "data.image_size=16", "train.steps=40", "train.log_every=10", "train.threads=1",
                      "model.class_cond=true")
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / ckpt.METRICS).read_text().splitlines()]
    bpd = [r["bpd"] for r in rows if "bpd" in r]
    assert bpd[0] > 6.0 and bpd[-1] < 0.6 * bpd[0]  # synthetic shapes are far from uniform noise


def test_the_transformer_family_builds_the_prior_only_on_a_vqvae_run():
    from genzoo.models.transformer import TokenPrior
    from genzoo.registry import FAMILIES, resolve_config

    fam = FAMILIES["transformer"]
    assert fam.model_for(resolve_config("transformer").model) is Transformer
    prior_cfg = resolve_config("transformer", preset="prior", overrides=["model.autoencoder=runs/vq"])
    assert fam.model_for(prior_cfg.model) is TokenPrior
    assert Transformer.likelihood == "exact" and TokenPrior.likelihood is None
    assert TokenPrior.autoencoder_families == ("vqvae",) and Transformer.autoencoder_families == ()
    with pytest.raises(ConfigError, match="build_model"):
        Transformer(prior_cfg.model, (1, 8, 8))


# -- the transformer on patches (model.patch=2): one network position per 2x2 patch, a local head within it

PATCHED = (3, 4, 4)  # 2x2 positions of K = 2 * 2 * 3 = 12 tokens


def patch_order(ch, r, c, shape=PATCHED, p=2):
    """The token index of sub-pixel (ch, r, c): patch by patch, raster within the patch, channels innermost."""
    C, H, W = shape
    return (((r // p) * (W // p) + c // p) * p * p + (r % p) * p + c % p) * C + ch


def test_patch_tokens_are_patch_by_patch_and_round_trip():
    model = transformer(shape=PATCHED, patch=2)
    x = images(2, PATCHED)
    tokens = model.to_tokens(x)
    assert tokens.shape == (2, 48) and model.positions_n == 4 and model.K == 12
    for ch, r, c in [(0, 0, 0), (2, 1, 0), (1, 2, 3), (0, 3, 3)]:
        assert tokens[1, patch_order(ch, r, c)] == round((x[1, ch, r, c].item() + 1) * 127.5)
    assert torch.equal(model.from_tokens(tokens), x)


@pytest.mark.parametrize("class_every", [False, True], ids=["class-at-start", "class-everywhere"])
def test_patch_transformer_output_for_token_i_ignores_tokens_from_i_on(class_every):
    """The same perturbation test through the global model and the local head: token i moves every later
    logit (in its own patch through the local head, in later patches through the network) and no earlier one."""
    model = transformer(shape=PATCHED, patch=2, class_cond=True, class_every=class_every)
    tokens = model.to_tokens(images(1, PATCHED))
    y = torch.tensor([7])
    base = model(tokens[:, :-1], y)  # (1, T, 256)
    T = tokens.shape[1]
    for i in range(T - 1):
        changed = tokens.clone()
        changed[0, i] = (changed[0, i] + 101) % 256
        moved = (model(changed[:, :-1], y) != base).any(-1)[0]
        assert not moved[:i + 1].any(), f"token {i} leaks into the prediction of tokens <= {i}"
        assert moved[i + 1:].all()
    for t in (0, 5, 12, 13, 30):  # a shorter prefix gives the same logits as the full one, rows 0..t
        torch.testing.assert_close(model(tokens[:, :t], y), base[:, :t + 1], atol=1e-5, rtol=0)


def test_patch_likelihood_is_a_normalised_distribution():
    """Summing p(x) over all 256^4 values of a 2x2 one-channel image is too many; over one patch of 4 the
    local head's chain is what is new, so sum over the last two tokens with the first two fixed (and over
    all of one token's values at every place): each conditional sums to one."""
    model = transformer(shape=(1, 2, 2), patch=2, class_cond=True)
    first = torch.tensor([[17, 200]])
    last = torch.stack(torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij"), -1).view(-1, 2)
    tokens = torch.cat([first.expand(len(last), 2), last], 1)  # (65536, 4)
    bits = model.token_bits(Batch(model.from_tokens(tokens), torch.full((len(tokens),), 4))).double()  # per token
    logp = -bits * 4 * math.log(2)  # log p(s) in nats
    log_first = torch.log_softmax(model(first[:, :1], torch.tensor([4])).double(), -1)  # (1, 2, V)
    total = torch.exp(logp - log_first[0, 0, 17] - log_first[0, 1, 200]).sum()
    assert math.isclose(total.item(), 1.0, rel_tol=1e-4)


def test_patch_sampling_cached_equals_uncached_and_guidance_mixes_logits():
    model = transformer(shape=PATCHED, patch=2, class_cond=True, class_every=True)
    for p in model.parameters():  # large logits: the label matters
        p.data.mul_(3.0)
    labels = torch.arange(3)
    for knobs in ({}, {"temperature": 0.8, "top_k": 20}, {"cfg_scale": 3.0}):
        cached = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(1), kv_cache=True, **knobs)
        plain = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(1), kv_cache=False, **knobs)
        assert torch.equal(cached, plain)
    s, null = 3.0, torch.full_like(labels, 10)
    tokens = torch.zeros(3, model.seq_len, dtype=torch.long)
    for i in range(model.seq_len):  # greedy, guided, from the full network on the prefix
        l_c, l_u = model(tokens[:, :i], labels)[:, -1], model(tokens[:, :i], null)[:, -1]
        tokens[:, i] = (l_u + s * (l_c - l_u)).argmax(-1)
    got = model.sample(3, labels=labels, temperature=0.0, cfg_scale=s)
    assert torch.equal(got, model.from_tokens(tokens))
    assert model.network_evaluations() == 4 and model.network_evaluations(cfg_scale=s) == 8


def test_patch_must_divide_the_image_and_stays_off_the_prior():
    with pytest.raises(ConfigError, match="model.patch=3 must divide"):
        transformer(shape=PATCHED, patch=3)
    from genzoo.models.transformer import TokenPrior

    with pytest.raises(ConfigError, match="model.patch applies to pixels"):
        TokenPrior(TransformerConfig(patch=2), (1, 8, 8), autoencoder=torch.nn.Identity())
