"""DiT (Peebles & Xie 2023): adaLN-Zero starts every block as the identity; patches round-trip; it is a drop-in denoiser."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.models.diffusion import samplers
from genzoo.models.dit import DiT, DiTConfig, DiTDiffusion, sincos_2d


def test_adaln_zero_makes_every_block_the_identity_at_initialisation():
    torch.manual_seed(0)
    net = DiT(DiTConfig(patch=2, hidden=32, depth=3, heads=4), 1, (8, 8), num_classes=10)
    x, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    for block in net.blocks:
        assert torch.equal(block(x, c), x)
    assert torch.equal(net(torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 9]), torch.tensor([1, 2, 10])),
                       torch.zeros(3, 1, 8, 8))  # the zero-initialised final layer


@pytest.mark.parametrize("patch, channels, size", [(2, 1, (8, 8)), (4, 3, (8, 12)), (1, 4, (7, 7))])
def test_patchify_then_unpatchify_is_the_identity(patch, channels, size):
    net = DiT(DiTConfig(patch=patch, hidden=patch * patch * channels * 4, depth=1, heads=1), channels, size)
    x = torch.randn(2, channels, *size)
    # a patch embedding that copies each p x p x C patch into its token, in the (p, q, c) order of unpatchify
    tokens = x.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, C, h, w, p, q)
    tokens = tokens.permute(0, 2, 3, 4, 5, 1).reshape(2, -1, patch * patch * channels)  # (B, N, p*p*C)
    assert torch.equal(net.unpatchify(tokens), x)


def test_sincos_positions_are_distinct_and_bounded():
    pos = sincos_2d(32, 7, 7)
    assert pos.shape == (49, 32) and pos.abs().max() <= 1
    assert torch.cdist(pos, pos).add(torch.eye(49)).min() > 0.1


def test_a_patch_that_does_not_divide_the_image_pads_it_to_whole_patches_and_crops_the_output():
    torch.manual_seed(0)
    net = DiT(DiTConfig(patch=7, hidden=32, depth=1, heads=2), 1, (8, 30))  # 2 x 5 patches of the padded 14 x 35
    nn.init.normal_(net.out.weight), nn.init.normal_(net.ada_out[1].weight)  # not the zero output of the start
    x, t = torch.randn(2, 1, 8, 30), torch.tensor([3, 7])
    assert net.pos.shape[1] == 2 * 5 and net(x, t).shape == x.shape
    padded = DiT(DiTConfig(patch=7, hidden=32, depth=1, heads=2), 1, (14, 35))
    padded.load_state_dict(net.state_dict())  # the same weights on the zero-padded image, then cropped
    assert torch.allclose(net(x, t), padded(F.pad(x, (0, 5, 0, 6)), t)[..., :8, :30], atol=1e-6)


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_the_dit_denoiser_works_with_every_sampler(name):
    torch.manual_seed(0)
    model = DiTDiffusion(DiTConfig(patch=2, hidden=32, depth=2, heads=2, T=50, class_cond=True), (1, 8, 8), 10)
    for prm in model.parameters():
        prm.data.normal_(0, 0.05)  # leave adaLN-Zero: a non-trivial denoiser
    x = model.sample(4, labels=torch.arange(4), generator=torch.Generator().manual_seed(1), name=name, steps=6,
                     cfg_scale=2.0)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all() and x.std() > 0.01

