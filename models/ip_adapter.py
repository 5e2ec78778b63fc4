"""IP-Adapter (Ye, Zhang, Liu, Han & Yang 2023, "IP-Adapter: Text Compatible Image Prompt Adapter for Text-to-Image
Diffusion Models", arXiv:2308.06721) on a finished text-conditioned U-Net run (`ddpm` or `ldm` with
`model.text_encoder`, the zoo's CLIP).

An image prompt x_p passes the frozen image encoder of the same CLIP whose text encoder the base reads; a trainable
projection turns its embedding into N tokens c_i (paper Sec. 3.2.1: a linear layer and a LayerNorm, N = 4). Every
cross-attention layer of the frozen U-Net gets a second key/value projection for those tokens. The two attentions
share the queries and the output projection, and their outputs add (decoupled cross-attention, eq. 5):

    Z_new = softmax(Q K^T / sqrt(d)) V + lambda softmax(Q K'^T / sqrt(d)) V',    K' = c_i W'_k,  V' = c_i W'_v

W'_k and W'_v start as copies of the text's W_k and W_v (Sec. 3.2.2). Only they and the projection train; the base,
its text cross-attention included, stays frozen, so text prompts still work, and lambda = 0 (or no image prompt) is
the base bit for bit. Guidance: training replaces the image embedding by zeros with probability `p_drop` (Sec. 3.3),
beside the base's own caption dropout; the unconditional branch of classifier-free guidance has neither the caption
nor the image prompt.

    genzoo train ip-adapter --set model.base=TEXT_RUN --out runs/ip
    genzoo sample runs/ip --image-prompt digit.png --n 16 [--prompt "a thick seven"] [--ip-scale 0.5]
    genzoo sample CONTROLNET_RUN --ip-adapter runs/ip --image-prompt digit.png --control-from other.png

The second line combines an image prompt with a text prompt, the third with a ControlNet trained on the same base:
`adapter.safetensors` (the projection and the W'_k, W'_v of each layer, with the base's identity) is added to any run
on that base.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn as nn

from genzoo.contract import Adapter, GenerativeModel
from genzoo.errors import CheckpointError, ConfigError
from genzoo.models.controlnet import ControlledUNet
from genzoo.models.unet import CrossAttention, UNet
from genzoo.rules import Fraction, Range

FORMAT = "genzoo-ip-adapter-1"


# ----------------------------------------------------------------------------------------
# the image tokens and the decoupled cross-attention


class ImageProjection(nn.Module):
    """What the image prompt becomes: the frozen CLIP's features of it, projected to image tokens (B, N, d_ctx).

    `embedding` (the paper): the unit image embedding (B, E) -> a linear layer to N tokens, and a LayerNorm.
    `patches` (as IP-Adapter-Plus reads the encoder's grid features instead of the pooled one): each of the
    h w per-patch features (B, h w, D_i) -> a linear layer plus a learned position embedding (a ViT's patch
    tokens carry their position; these conv features do not), and a LayerNorm: h w tokens that keep where
    things are."""

    def __init__(self, source: str, clip: nn.Module, tokens: int):
        super().__init__()
        self.source, self.context_dim = source, clip.cfg.d_model
        if source == "embedding":
            self.tokens = tokens
            self.linear = nn.Linear(clip.cfg.embed_dim, tokens * self.context_dim)
        else:
            down = 2 ** (len(clip.cfg.ch_mult) - 1)
            patches = (clip.image_shape[1] // down) * (clip.image_shape[2] // down)
            self.linear = nn.Linear(clip.image_proj.in_features, self.context_dim)
            self.pos = nn.Parameter(0.02 * torch.randn(patches, self.context_dim))  # (h w, d)
        self.norm = nn.LayerNorm(self.context_dim)

    @staticmethod
    def features_of(source: str, clip: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> the frozen CLIP's features: (B, E) or (B, h w, D_i)."""
        with torch.no_grad():
            return clip.embed_images(images) if source == "embedding" else clip.image_patches(images)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Features (B, E) or (B, h w, D_i) -> tokens (B, N, d_ctx)."""
        if self.source == "embedding":
            return self.norm(self.linear(f).view(len(f), self.tokens, self.context_dim))
        return self.norm(self.linear(f) + self.pos)


class DecoupledCrossAttention(nn.Module):
    """A frozen text CrossAttention plus the image prompt's keys and values (kv_ip, trainable). Reads the image tokens
    set in `prompt` (tokens (n, N, d), null tokens (n, N, d)) by `prompted`, times `scale` (lambda)."""

    def __init__(self, cross: CrossAttention):
        super().__init__()
        self.cross = cross
        self.kv_ip = copy.deepcopy(cross.kv).requires_grad_(True)  # W'_k, W'_v start as W_k, W_v
        self.prompt: tuple[torch.Tensor, torch.Tensor] | None = None
        self.scale = 1.0

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.prompt is None or self.scale == 0:
            return self.cross(x, tokens)  # the base, bit for bit
        c, image = self.cross, self.image_tokens(x.shape[0])
        q = c.queries(x)  # (B, h, HW, c), shared by both attentions
        out = c.attend(q, tokens, c.kv, keep_maps=c.keep_maps) + self.scale * c.attend(q, image, self.kv_ip)
        return c.output(x, out)

    def image_tokens(self, B: int) -> torch.Tensor:
        """(B, N, d): the prompt's tokens, or for a guidance batch [cond; uncond] of 2n rows, [tokens; null]."""
        tokens, null = self.prompt
        return tokens if B == len(tokens) else torch.cat([tokens, null])


def frozen_unet(model: nn.Module) -> UNet:
    """The U-Net a ddpm or ldm model (or a ControlNet run on one) denoises with; one line for a DiT."""
    holder = model.diffusion if getattr(model, "uses_latents", False) else model
    net = holder.net
    net = net.unet if isinstance(net, ControlledUNet) else net
    if not isinstance(net, UNet):
        raise ConfigError(f"ip-adapter adds image keys and values to a U-Net's cross-attention; this model's "
                          f"denoiser is a {type(net).__name__} (a DiT): use a ddpm or ldm run with the U-Net")
    return net


def install(unet: UNet) -> dict[str, DecoupledCrossAttention]:
    """Wrap every text cross-attention of `unet` in a DecoupledCrossAttention (in place): {name in the U-Net: layer}."""
    if any(isinstance(m, DecoupledCrossAttention) for m in unet.modules()):
        raise ConfigError("this model reads image prompts already: one IP-Adapter at a time")
    names = [name for name, m in unet.named_modules() if isinstance(m, CrossAttention)]
    layers = {}
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        layers[name] = DecoupledCrossAttention(getattr(parent, attr))
        setattr(parent, attr, layers[name])
    return layers


@contextmanager
def prompted(layers, proj: ImageProjection, z: torch.Tensor | None, scale: float = 1.0):
    """Within the block, the layers read the image tokens of CLIP features z (n, ...) (None: no image prompt)."""
    prompt = None if z is None else (proj(z), proj(torch.zeros_like(z)).detach())  # null: zero features
    for layer in layers:
        layer.prompt, layer.scale = prompt, scale
    try:
        yield
    finally:
        for layer in layers:
            layer.prompt, layer.scale = None, 1.0


def sample_with_prompt(model, proj: ImageProjection, layers, n: int, image_prompt: torch.Tensor | None,
                       ip_scale: float, **kwargs) -> torch.Tensor:
    """`model.sample(n, **kwargs)` with the layers reading `image_prompt` (n, C, H, W) in [-1, 1] (None: none)."""
    z = None
    if image_prompt is not None:
        shape = tuple(model.image_shape)
        if tuple(image_prompt.shape) != (n, *shape):
            raise ConfigError(f"image prompts for {n} samples have shape (n, {', '.join(map(str, shape))}); got "
                              f"{tuple(image_prompt.shape)}")
        z = ImageProjection.features_of(proj.source, model.text_encoder,
                                        image_prompt.to(next(proj.parameters()).device))
    with torch.no_grad(), prompted(layers, proj, z, ip_scale):
        return model.sample(n, **kwargs)


# ----------------------------------------------------------------------------------------
# the run


class IPAdapter(Adapter):
    """A finished text-conditioned U-Net run (frozen) that also reads an image prompt. Trains as the base does, each
    image its own prompt (`loss`); samples as the base does, with `image_prompt` (n, C, H, W) in [-1, 1] and
    `ip_scale` (lambda) beside the text."""

    def __init__(self, cfg: IPAdapterConfig, image_shape: tuple[int, int, int], num_classes: int = 0, *,
                 base: GenerativeModel, base_family: str = ""):
        super().__init__(base, base_family)
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        clip = base.text_encoder
        if clip is None:
            raise ConfigError(f"ip-adapter reads image prompts beside text: model.base={cfg.base} is not "
                              f"text-conditioned; train it with model.text_encoder=CLIP_RUN data.captions=true")
        self.likelihood = self.ode_likelihood = None  # the image prompt is not part of the declared likelihood
        self.proj = ImageProjection(cfg.source, clip, cfg.tokens)
        layers = install(frozen_unet(base))  # the middle block's at least
        self.layer_names, self.ip_layers = list(layers), list(layers.values())

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return ImageProjection.features_of(self.cfg.source, self.base.text_encoder, images)

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        f = self.image_features(batch.images)  # each training image is its own prompt
        keep = (torch.rand(len(f), device=f.device) >= self.cfg.p_drop).view(-1, *[1] * (f.dim() - 1))
        with prompted(self.ip_layers, self.proj, f * keep):  # a dropped prompt: zero features
            return self.base.loss(batch, phase)

    def sample(self, n: int, *, labels=None, generator=None, image_prompt: torch.Tensor | None = None,
               ip_scale: float = 1.0, **knobs) -> torch.Tensor:
        """`image_prompt` (n, C, H, W) in [-1, 1]: one image per sample; None samples the base."""
        return sample_with_prompt(self.base, self.proj, self.ip_layers, n, image_prompt, ip_scale, labels=labels,
                                  generator=generator, **knobs)

    def adapter_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(weights, metadata) of `adapter.safetensors`: the projection, each layer's kv_ip, the base's identity."""
        weights = {f"proj.{k}": v for k, v in self.proj.state_dict().items()}
        for name, layer in zip(self.layer_names, self.ip_layers):
            weights |= {f"{name}.kv_ip.{k}": v for k, v in layer.kv_ip.state_dict().items()}
        meta = {"format": FORMAT, "base_run": self.cfg.base, "base_family": self.base_family,
                "base_sha256": self.base_sha256, "source": self.cfg.source, "tokens": str(self.cfg.tokens),
                "layers": json.dumps(self.layer_names)}
        return weights, meta


# ----------------------------------------------------------------------------------------
# an adapter file added to another run on the same base (a ControlNet run, or the base itself)


class ImagePrompted(nn.Module):
    """A run's model plus an IP-Adapter file: samples as the model does, with `image_prompt` and `ip_scale`; every other
    attribute is the model's."""

    def __init__(self, model: nn.Module, proj: ImageProjection, layers: list[DecoupledCrossAttention]):
        super().__init__()
        self.model, self.proj, self.ip_layers = model, proj, layers

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def sample(self, n: int, *, image_prompt: torch.Tensor | None = None, ip_scale: float = 1.0, **kwargs):
        return sample_with_prompt(self.model, self.proj, self.ip_layers, n, image_prompt, ip_scale, **kwargs)


def attach(model: nn.Module, source: str | Path) -> ImagePrompted:
    """`model` (a run's, frozen) reading image prompts through the IP-Adapter in `source` (a run directory or its
    adapter.safetensors). Stops with one line when the adapter was trained on another base."""
    from genzoo.train import checkpoint as ckpt
    from genzoo.train.latents import weights_sha256

    weights, meta = ckpt.load_adapter(source, flag="--ip-adapter", family="ip-adapter", fmt=FORMAT)
    sha = model.base_sha256 if isinstance(model, Adapter) else weights_sha256(model)
    if meta["base_sha256"] != sha:
        raise ConfigError(f"--ip-adapter {source} was trained on the {meta['base_family']} run {meta['base_run']} "
                          f"(weights sha256 {meta['base_sha256'][:12]}), not on this run's base ({sha[:12]})")
    proj = ImageProjection(meta["source"], model.text_encoder, int(meta["tokens"]))
    proj.load_state_dict({k[len("proj."):]: v for k, v in weights.items() if k.startswith("proj.")})
    layers = install(frozen_unet(model))
    if sorted(layers) != sorted(json.loads(meta["layers"])):
        raise CheckpointError(f"--ip-adapter {source}: its layers do not match this run's U-Net")
    for name, layer in layers.items():
        layer.kv_ip.load_state_dict({"weight": weights[f"{name}.kv_ip.weight"], "bias": weights[f"{name}.kv_ip.bias"]})
    device = next(model.parameters()).device
    return ImagePrompted(model, proj.to(device), list(layers.values())).requires_grad_(False)


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class IPAdapterConfig:
    base: str = ""  # the finished text-conditioned run (ddpm or ldm, U-Net, model.text_encoder); required
    source: Literal["embedding", "patches"] = "embedding"  # the CLIP's pooled embedding (the paper) or its patches
    tokens: Annotated[int, Range("[1, 64]")] = 4  # N image tokens from the embedding (the paper's 4)
    p_drop: Fraction = 0.05  # image-prompt dropout for guidance (the paper's 0.05)

    BASE_FAMILIES: ClassVar[tuple[str, ...]] = ("ddpm", "ldm")


@dataclass
class SamplerConfig:
    """Placeholder: an IP-Adapter run samples with its base family's knobs (genzoo.registry puts them here)."""


PRESETS = {
    # seconds on CPU: for tests and smoke runs
    "tiny": {"train": {"steps": 10, "batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 5, "eval_every": 0}},
    # MNIST on 2 CPU cores in about 70 minutes: only the projection and the image keys and values train, so a
    # large step size; fidelity to the prompt keeps improving with steps (the bar needs many times the text
    # model's), and at equal images small batches buy more of them
    "quick": {"model": {"source": "patches"},
              "train": {"steps": 45000, "batch_size": 32, "lr": 5e-3, "warmup_steps": 200, "ema_decay": 0.995,
                        "weight_decay": 0.0, "log_every": 50, "sample_every": 0, "ckpt_every": 1000,
                        "eval_every": 0}},
    # one GPU
    "standard": {"train": {"steps": 10000, "batch_size": 256, "lr": 1e-4, "warmup_steps": 200, "ema_decay": 0.999,
                           "weight_decay": 0.01, "sample_every": 1000, "ckpt_every": 1000, "eval_every": 0}},
}


DESCRIPTION = "image prompts for a finished text-conditioned U-Net: the CLIP image embedding as extra keys and values"
Model, Config = IPAdapter, IPAdapterConfig
