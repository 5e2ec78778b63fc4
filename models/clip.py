"""The zoo's CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision").

An image encoder f and a text encoder g, each followed by a linear projection into one embedding space, are
trained so that an image and its caption agree (Sec. 2.3 and Fig. 3, the numpy-like pseudocode):

    z_img = W_i f(x) / |W_i f(x)|,   z_txt = W_t g(s) / |W_t g(s)|          (B, E) each, unit length
    logits = exp(tau) z_img z_txt^T                                         (B, B); tau learned, exp(tau) <= 100
    loss = (CE(logits, [0..B-1]) + CE(logits^T, [0..B-1])) / 2              the symmetric contrastive loss

tau starts at log(1 / 0.07) and is clamped so that the logit scale never exceeds 100, as in the paper.
Captions come with each batch (`data.captions=true`, `Batch.text`): written from the image's label and its
measured attributes (`genzoo.datasets.captions`), tokenized word by word. Captions that are the same string
(two "a 7" in a batch) are the same text; the loss counts only each image's own caption as its positive,
as CLIP does.

Image encoder: the conv encoder of the zoo's autoencoders down to a (D, h, w) grid, whose cells are the
per-patch embeddings (B, h w, D) and whose mean, projected, is the image embedding. Text encoder: a causal
transformer over the tokens (the pixel transformer's block, GPT-2 style), whose output at the <eos> token is
the pooled text feature, as in CLIP; the per-token outputs are the text token embeddings that cross-attention
will read. `embed_images`, `embed_text`, `text_tokens` and `image_patches` are the component's public face.

Its evaluation (zero-shot accuracy, retrieval, attribute accuracy from prompts) is in
`genzoo.evaluation.text`, run by `genzoo eval`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import Component
from genzoo.datasets import captions
from genzoo.errors import ConfigError
from genzoo.models.layers import conv_encoder, halvings
from genzoo.models.transformer import Block
from genzoo.rules import Range

MAX_LOGIT_SCALE = 100.0  # the paper's clamp on exp(tau)


def contrastive_loss(z_img: torch.Tensor, z_txt: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric loss of unit embeddings (B, E) whose row i of each is a matched pair, and the share of images
    whose own caption scores highest."""
    logits = scale * z_img @ z_txt.T  # (B, B): row i = image i against every caption
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, (logits.argmax(1) == target).float().mean()


class CLIP(Component):
    """Image and text encoders, their projections and the learned temperature; the symmetric contrastive loss."""

    def __init__(self, cfg: CLIPConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        C = image_shape[0]
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.tokenizer = captions.Tokenizer(cfg.context)
        widths = [cfg.channels * m for m in cfg.ch_mult]
        halvings(image_shape, cfg.ch_mult)
        self.image_net = nn.Sequential(*conv_encoder(C, widths, cfg.blocks))  # (B, C, H, W) -> (B, D_i, h, w)
        self.image_proj = nn.Linear(widths[-1], cfg.embed_dim, bias=False)
        d = cfg.d_model
        self.tok_emb = nn.Embedding(len(self.tokenizer), d)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.context, d))
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, 4, 0.0) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.text_proj = nn.Linear(d, cfg.embed_dim, bias=False)
        self.tau = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.pos_emb, std=0.01)

    # -- the encoders ---------------------------------------------------------------------
    def image_patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> per-patch embeddings (B, h w, D_i)."""
        return self.image_net(images).flatten(2).transpose(1, 2)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> unit image embeddings (B, E)."""
        return F.normalize(self.image_proj(self.image_patches(images).mean(1)), dim=-1)

    def text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, context) ids -> per-token text embeddings (B, context, d); position i sees tokens <= i."""
        x = self.tok_emb(tokens) + self.pos_emb[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, context) ids -> unit text embeddings (B, E): the output at each prompt's <eos>, projected."""
        eos = (tokens == self.tokenizer.eos).float().argmax(1)  # (B,)
        pooled = self.text_tokens(tokens)[torch.arange(len(tokens)), eos]  # (B, d)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> unit text embeddings (len, E)."""
        return self.embed_text(self.tokenizer.encode_batch(prompts).to(self.tau.device))

    def logit_scale(self) -> torch.Tensor:
        return self.tau.exp().clamp(max=MAX_LOGIT_SCALE)

    # -- the component contract -----------------------------------------------------------
    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        if batch.text is None:
            raise ConfigError("clip trains on captions: set data.captions=true (its presets do)")
        z_img, z_txt = self.embed_images(batch.images), self.embed_text(batch.text)  # (B, E) each
        loss, accuracy = contrastive_loss(z_img, z_txt, self.logit_scale())
        return {"loss": loss, "batch_acc": accuracy.detach(), "logit_scale": self.logit_scale().detach()}


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class CLIPConfig:
    channels: Annotated[int, Range("[1, 4096]")] = 32  # the image encoder's first width
    ch_mult: tuple[int, ...] = (1, 2, 2)  # widths per resolution; 28x28 -> 7x7 patches
    blocks: Annotated[int, Range("[0, 16]")] = 1  # residual blocks per resolution
    d_model: Annotated[int, Range("[1, 4096]")] = 64  # the text transformer's width
    n_layers: Annotated[int, Range("[1, 64]")] = 2
    n_heads: Annotated[int, Range("[1, 64]")] = 2
    context: Annotated[int, Range("[4, 256]")] = 16  # tokens per prompt, <bos> and <eos> included
    embed_dim: Annotated[int, Range("[1, 4096]")] = 64  # the joint embedding space


@dataclass
class SamplerConfig:
    """A component draws no samples: no knobs."""


PRESETS = {
    # seconds on CPU: for tests and smoke runs
    "tiny": {"model": {"channels": 8, "ch_mult": (1, 2), "blocks": 0, "d_model": 16, "n_layers": 1,
                       "embed_dim": 16},
             "data": {"captions": True},
             "train": {"steps": 20, "batch_size": 32, "lr": 2e-3, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "eval_every": 0}},
    # MNIST on 2 CPU cores in about 5 minutes (docs/text.md): large batches, since each image's negatives are
    # the rest of its batch
    "quick": {"data": {"captions": True},
              "train": {"steps": 1000, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.99,
                        "weight_decay": 0.1, "log_every": 50, "sample_every": 0, "ckpt_every": 500,
                        "eval_every": 0}},
    # one GPU
    "standard": {"model": {"channels": 64, "d_model": 128, "n_layers": 4, "n_heads": 4, "embed_dim": 128},
                 "data": {"captions": True},
                 "train": {"steps": 10000, "batch_size": 512, "lr": 1e-3, "warmup_steps": 500,
                           "ema_decay": 0.999, "weight_decay": 0.1, "sample_every": 0, "ckpt_every": 2000,
                           "eval_every": 0}},
}


DESCRIPTION = "the zoo's CLIP: image and caption encoders trained contrastively (a component, not a generator)"
Model, Config = CLIP, CLIPConfig
