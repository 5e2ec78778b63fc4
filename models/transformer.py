"""A causal transformer over image tokens: ImageGPT on pixels (Chen et al. 2020), or the prior of a VQ-VAE.

    p(s | y) = prod_t p(s_t | s_<t, y)        s = the image as a sequence of T tokens, y = the class

Pixels (default): one token per sub-pixel, a 256-way categorical over its 8-bit value, in raster order
with the channels innermost (R, G, B of a pixel, then the next pixel): T = H * W * C. The likelihood
is exact: `log_likelihood` gives bits/dim, and a model with all-zero logits scores exactly 8.

VQ-VAE prior (`TokenPrior`, built when `model.autoencoder=RUN_DIR` names a finished `vqvae` run): the
tokens are the frozen VQ-VAE's code indices in raster order, T = h * w, the vocabulary is its codebook.
`loss` encodes each batch to tokens (no gradient), `sample` draws a token grid and decodes it (van den
Oord et al. 2017, Sec. 3.2, with a transformer instead of a PixelCNN over the latents, as in DALL-E 1).
There is no pixel likelihood (the decoder is deterministic), so the prior declares `likelihood = None`
and `genzoo eval --metrics bpd` leaves it out; the exact NLL of the token grid is logged as
`bits_per_token`. The autoencoder's weights are saved in this run's checkpoint, never trained.
Both models are a `CausalTransformer` (the network and its sampler) that differ only in their tokens.

Patches (`model.patch=p`, pixels only): one network position per p x p patch, T = (H/p)(W/p) positions,
and a small local head that draws the patch's K = p*p*C sub-pixels one after another (MEGABYTE, Yu et al.
2023, with an MLP for its local model):

    p(s | y) = prod_g prod_k p(s_{g,k} | s_{<g}, s_{g,<k}, y)
    h_g = Transformer(patches < g)                    the global model, one position per patch
    z_{g,k} = h_g + Q_k + sum_{j<k} L_j[s_{g,j}]      the local input: the sub-pixels drawn so far in the patch
    logits_{g,k} = head(z_{g,k} + MLP(z_{g,k}))

Still an exact likelihood (the order is patch by patch, raster within a patch, channels innermost), but the
network runs T = 196 positions on MNIST at p = 2 instead of 784: attention costs 16x less and every other
layer 4x less per image, so at a CPU budget the model sees several times more images, and sampling takes
196 sequential network passes (plus 4 cheap local-head passes each). A patch's input embedding is the sum
of its sub-pixels' embeddings, one table per place in the patch (E_k[s_k]; the same for `above`).
`model.patch=1` (default) is the model above, one token per sub-pixel.

Network (GPT-2 style): token + learned position embeddings, pre-norm blocks
x += Attn(LN(x)); x += MLP(LN(x)) with causal `scaled_dot_product_attention`, a final LN and a linear
head. The input is [start, s_0, ..., s_{T-2}]: the start token carries the class (one learned
start embedding per class; one in all when unconditional), so position t predicts s_t. With
`model.class_every=true` a second class embedding is added to the input at every position, as the
conditional PixelCNN adds its class term in every layer (van den Oord et al. 2016, eq. 4): the start
token alone is one position among 784 to attend to, and its samples often drew the wrong digit
(docs/autoregressive.md measures how often).
The learned position embedding is factorised over the grid, row + column (+ channel on pixels):
pos(t) = P_row[r] + P_col[c] + P_chan[k] for the token s_t at (r, c, k), like the 2-D position
encodings of the Image Transformer (Parmar et al. 2018, Sec. 3.2) but learned: what is learned about
one row holds in every row. At the quick preset's budget it beat a free embedding per position (T x D,
ImageGPT), whose samples had horizontal streaks (docs/autoregressive.md).
With `model.above=true` (default) the input at position t also carries an embedding of the token one
row up, s_{t - W C} (the same channel of the pixel above; zero in the first row): the left neighbour
is already the input s_{t-1}, and the one above, which the streaks showed attention learns slowly,
is now given directly, as a PixelCNN's first layer would. It adds a table of V x D parameters and no
new dependency: s_{t - W C} precedes s_t, so the model stays causal (tested) and the KV cache exact.

Classifier-free guidance (Ho & Salimans 2022, on logits as in Parti): a conditional model is trained with
the label replaced by a null label (its own start token and class embedding) with probability `p_uncond`,
and sampled from l(. | null) + cfg_scale * (l(. | y) - l(. | null)), both halves in one batch on the same
prefix (`layers.guidance_labels`, `layers.guided_logits`); cfg_scale = 1 is the model as trained.

`CausalTransformer.embed` builds these inputs, for `forward` (all positions) and for the cached sampler
(one position). Sampling is one token at a time. With `kv_cache=True` (default) each step runs one new token through
the network and attends to the stored keys and values of the earlier ones (O(T) per step instead of
O(T^2)); `kv_cache=False` recomputes the whole prefix each step. Both give the same samples for a
seed (Gumbel-max draws, see `layers.sample_categorical`); benchmarks/kv_cache.py measures the speed-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import GenerativeModel, classes
from genzoo.errors import ConfigError
from genzoo.models.distributions import nats_to_bits_per_dim
from genzoo.models.layers import guidance_labels, guided_logits, sample_categorical
from genzoo.rules import Fraction, Range

LEVELS = 256  # 8-bit sub-pixel values: the vocabulary on pixels


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"model.d_model={d} must be divisible by model.n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d),
                                 nn.Dropout(dropout))

    def attention(self, x: torch.Tensor, cache: dict | None, pos: int) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for t in self.qkv(x).split(D, dim=2))  # (B, nh, T, hd) each
        if cache is None:  # the whole sequence at once, causal mask
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:  # one new token at position `pos`: attend to the cached keys / values 0..pos
            cache["k"][:, :, pos:pos + T], cache["v"][:, :, pos:pos + T] = k, v
            y = F.scaled_dot_product_attention(q, cache["k"][:, :, :pos + T], cache["v"][:, :, :pos + T])
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)

    def forward(self, x: torch.Tensor, cache: dict | None = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), cache, pos)
        return x + self.mlp(self.ln2(x))


class CausalTransformer(GenerativeModel):
    """The network and the token-by-token sampler of both models below; a subclass says what the tokens are
    (`to_tokens`, `from_tokens`) on a grid of (rows, columns, channels) with `vocab` values."""

    bits_name = "bpd"  # what the logged -log2 p(s) / T is called

    def __init__(self, cfg: TransformerConfig, image_shape: tuple[int, int, int], num_classes: int, vocab: int,
                 grid: tuple[int, int, int], patch_size: int = 1):
        super().__init__()
        self.cfg, self.image_shape, self.num_classes = cfg, tuple(image_shape), num_classes
        self.K = patch_size  # tokens per network position: 1, or a patch's p * p * C sub-pixels
        self.vocab, self.positions_n = vocab, math.prod(grid)
        self.seq_len = self.positions_n * self.K  # T: tokens per image
        d = cfg.d_model
        self.tok_emb = nn.Embedding(self.K * self.vocab, d)  # E_k[s]: row k * V + s
        self.row_len = grid[1] * grid[2]  # positions per row: position t - row_len is the one above t
        self.above_emb = nn.Embedding(self.K * self.vocab, d) if cfg.above else None
        labels = self.num_classes + 1 if self.num_classes else 0  # the classes and the null label K
        self.start = nn.Embedding(max(1, labels), d)  # the start token: one per label
        self.class_emb = nn.Embedding(labels, d) if self.num_classes and cfg.class_every else None
        self.pos_row, self.pos_col, self.pos_chan = (nn.Parameter(torch.zeros(n, d)) for n in grid)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, self.vocab)
        if self.K > 1:  # the local head: Q_k, L_j[s] and a residual MLP
            self.local_pos = nn.Parameter(torch.zeros(self.K, d))
            self.local_emb = nn.Embedding(self.K * self.vocab, d)
            w = cfg.local_ratio * d  # it runs at every sub-pixel (T of them, K times the network's positions)
            self.local_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, w), nn.GELU(), nn.Linear(w, d))
        self._init_weights()

    def _init_weights(self):
        """GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers), zero biases."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim >= 2 and "ln" not in name:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, std=std)

    # -- the network ----------------------------------------------------------------------
    def positions(self) -> torch.Tensor:
        """(T, D): P_row[r] + P_col[c] + P_chan[k] for position t = (r * W + c) * C + k."""
        pos = self.pos_row[:, None, None] + self.pos_col[None, :, None] + self.pos_chan[None, None, :]  # (H, W, C, D)
        return pos.flatten(0, 2)

    def patch_embed(self, table: nn.Embedding, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, n, K) tokens -> (B, n, D): sum_k E_k[s_k] (one row of `table` per place k and value)."""
        offsets = torch.arange(self.K, device=patches.device) * self.vocab  # (K,)
        return table(patches + offsets).sum(2)

    def embed(self, prefix: torch.Tensor, labels: torch.Tensor | None, first: int = 0) -> torch.Tensor:
        """The inputs at positions first..t of [start, s_0, ..., s_{t-1}], for prefix = s_0..s_{t-1} (B, t, K)
        (s_i: position i's K tokens): (B, t + 1 - first, D). Position i holds s_{i-1} (the class's start token
        at i = 0) + its position + the one a row up s_{i - row_len} (zero in the first row) + the class (with
        class_every). `forward` embeds every position (first = 0), the cached sampler only the newest (first = t)."""
        B, t, _ = prefix.shape
        x = self.patch_embed(self.tok_emb, prefix[:, max(first - 1, 0):])  # (B, t - max(first - 1, 0), D)
        if first == 0:
            y = self.class_labels(labels, B)
            start = self.start.weight.expand(B, 1, -1) if y is None else self.start(y.view(B, 1))  # (B, 1, D)
            x = torch.cat([start, x], dim=1)  # (B, t + 1, D)
        x = x + self.positions()[first:t + 1]
        if self.above_emb is not None and t + 1 > self.row_len:  # position i >= row_len gets s_{i - row_len}
            above = self.patch_embed(self.above_emb, prefix[:, max(first - self.row_len, 0):t + 1 - self.row_len])
            x = x + F.pad(above, (0, 0, x.shape[1] - above.shape[1], 0))
        if self.class_emb is not None:
            x = x + self.class_emb(labels.view(B, 1))  # (B, 1, D): the class at every position
        return self.drop(x)

    def readout(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits of every token of positions 0..G-1, (B, G * K, V), from the network's outputs h (B, G, D)
        and the tokens drawn so far, prefix (B, t) with t >= (G - 1) K (the local head's inputs)."""
        if self.K == 1:
            return self.head(h)
        B, G, D = h.shape
        s = F.pad(prefix, (0, G * self.K - prefix.shape[1]))[:, :G * self.K].view(B, G, self.K)  # (B, G, K)
        L = self.local_emb(s + torch.arange(self.K, device=s.device) * self.vocab)  # (B, G, K, D): L_k[s_k]
        before = F.pad(L[:, :, :-1], (0, 0, 1, 0)).cumsum(2)  # (B, G, K, D): sum_{j<k} L_j[s_j], exactly
        z = h[:, :, None] + self.local_pos + before
        return self.head(z + self.local_mlp(z)).flatten(1, 2)  # (B, G * K, V)

    def forward(self, prefix: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """prefix (B, t) tokens, t < T -> logits (B, t + 1, V); row i predicts token i from tokens < i."""
        B, t = prefix.shape
        G = t // self.K + 1  # the positions holding tokens 0..t
        x = self.embed(prefix[:, :(G - 1) * self.K].view(B, G - 1, self.K), labels)  # (B, G, D)
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x), prefix)[:, :t + 1]

    # -- the family contract --------------------------------------------------------------
    def parameters_for(self, phase: str):
        return self.parameters()

    def _nll_nats(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """-log p(s_t | s_<t, y) per token, (B, T), in nats."""
        tokens = self.to_tokens(images)  # (B, T)
        logits = self(tokens[:, :-1], labels)  # (B, T, V)
        return F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")

    def loss(self, batch, phase: str = "main") -> dict[str, torch.Tensor]:
        y = self.dropped_labels(batch.labels, batch.images.shape[0])  # label dropout for guidance
        bits = nats_to_bits_per_dim(self._nll_nats(batch.images, y).mean())
        return {"loss": bits, self.bits_name: bits.detach()}

    @torch.no_grad()
    def token_bits(self, batch) -> torch.Tensor:
        """Exact -log2 p(s) / T per image, (B,): bits/dim on pixels, bits per latent token for a prior."""
        return nats_to_bits_per_dim(self._nll_nats(batch.images, batch.labels).mean(1))

    def network_evaluations(self, cfg_scale: float = 1.0, **knobs) -> int:
        """Sequential network passes per sample: one per position (T tokens / K; the local head's K passes
        per position are not counted), twice with classifier-free guidance (one call)."""
        return self.positions_n * (2 if self.num_classes and cfg_scale != 1.0 else 1)

    @torch.no_grad()
    def sample_tokens(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      temperature: float = 1.0, top_k: int = 0, cfg_scale: float = 1.0,
                      kv_cache: bool = True) -> torch.Tensor:
        """(n, T) tokens, drawn one at a time from p(s_t | s_<t, y) (guided: both halves share the prefix)."""
        labels = guidance_labels(self.class_labels(labels, n), self.num_classes, cfg_scale)  # (m,): m = 2n guided
        m = n if labels is None else labels.shape[0]
        tokens = torch.zeros(m, self.seq_len, dtype=torch.long, device=self.head.weight.device)

        def draw(logits: torch.Tensor, t: int):  # logits (m, V) -> token t of every row
            tokens[:, t] = sample_categorical(guided_logits(logits, n, cfg_scale), generator, temperature,
                                              top_k).repeat(m // n)

        if not kv_cache:  # the reference: recompute the whole prefix for every token
            for t in range(self.seq_len):
                draw(self(tokens[:, :t], labels)[:, -1], t)  # logits (m, V)
            return tokens[:n]
        nh, hd, K = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads, self.K
        caches = [{"k": self.head.weight.new_zeros(m, nh, self.positions_n, hd),
                   "v": self.head.weight.new_zeros(m, nh, self.positions_n, hd)} for _ in self.blocks]
        patches = tokens.view(m, self.positions_n, K)
        for g in range(self.positions_n):
            h = self.embed(patches[:, :g], labels, first=g)  # (m, 1, D): the input at position g
            for block, cache in zip(self.blocks, caches):
                h = block(h, cache, g)
            h = self.ln_f(h)
            for k in range(K):  # the position's tokens, one after another (the local head when K > 1)
                draw(self.readout(h, patches[:, g, :k])[:, k], g * K + k)  # logits (m, V)
        return tokens[:n]

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, top_k: int = 0, cfg_scale: float = 1.0, kv_cache: bool = True) -> torch.Tensor:
        tokens = self.sample_tokens(n, labels=labels, generator=generator, temperature=temperature, top_k=top_k,
                                    cfg_scale=cfg_scale, kv_cache=kv_cache)
        return self.from_tokens(tokens).clamp(-1, 1)


class Transformer(CausalTransformer):
    """The `transformer` family on pixels (ImageGPT): one token per sub-pixel, an exact likelihood."""

    likelihood = "exact"  # of log_likelihood

    def __init__(self, cfg: TransformerConfig, image_shape: tuple[int, int, int], num_classes: int = 0):
        if cfg.autoencoder:
            raise ConfigError("model.autoencoder is set: build this model with genzoo.runs.build_model "
                              "(as `genzoo train` does), which loads the frozen VQ-VAE run")
        C, H, W = image_shape
        p = cfg.patch
        if H % p or W % p:
            raise ConfigError(f"model.patch={p} must divide the image size {H}x{W}")
        grid = (H, W, C) if p == 1 else (H // p, W // p, 1)  # rows, columns, channels of network positions
        super().__init__(cfg, image_shape, classes(cfg, num_classes), LEVELS, grid, 1 if p == 1 else p * p * C)

    def to_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, T) int64: 8-bit values, channels innermost; patch by patch with
        model.patch > 1 (raster within the patch)."""
        values = torch.round((images + 1) * 127.5).long().clamp(0, LEVELS - 1)
        B, C, H, W = values.shape
        p = self.cfg.patch
        values = values.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
        return values.flatten(1)  # (B, H * W * C)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, C, H, W) in [-1, 1]."""
        C, H, W = self.image_shape
        p = self.cfg.patch
        values = tokens.view(tokens.shape[0], H // p, W // p, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return values.reshape(tokens.shape[0], C, H, W).float() / 127.5 - 1

    @torch.no_grad()
    def log_likelihood(self, batch) -> torch.Tensor:
        """Exact bits/dim per image, (B,)."""
        return self.token_bits(batch)


class TokenPrior(CausalTransformer):
    """The `transformer` family as the prior of a finished VQ-VAE run (`model.autoencoder=RUN`): its token grids."""

    autoencoder_families = ("vqvae",)
    bits_name = "bits_per_token"

    def __init__(self, cfg: TransformerConfig, image_shape: tuple[int, int, int], num_classes: int = 0,
                 autoencoder: nn.Module | None = None):
        if autoencoder is None:
            raise ConfigError("a transformer prior needs a finished vqvae run: pass --set model.autoencoder=RUN_DIR")
        if cfg.patch != 1:
            raise ConfigError("model.patch applies to pixels; a VQ-VAE prior models one token per latent (patch=1)")
        h, w = autoencoder.latent_shape
        super().__init__(cfg, image_shape, classes(cfg, num_classes), autoencoder.codebook_size, (h, w, 1))
        self.autoencoder = autoencoder.eval().requires_grad_(False)  # frozen; a submodule so .to() moves it

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen first stage: never in training mode (no codebook updates)
        return self

    def parameters_for(self, phase: str):
        return [p for name, p in self.named_parameters() if not name.startswith("autoencoder.")]

    def to_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h * w) int64 VQ code indices."""
        with torch.no_grad():
            return self.autoencoder.encode_tokens(images).flatten(1)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h * w) -> (B, C, H, W) in [-1, 1], through the VQ-VAE's decoder."""
        h, w = self.autoencoder.latent_shape
        return self.autoencoder.decode_tokens(tokens.view(tokens.shape[0], h, w))

    def network_evaluations(self, **knobs) -> int:
        """Sequential network passes per sample: the prior's (one per token), + the decoder."""
        return super().network_evaluations(**knobs) + 1


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class TransformerConfig:
    d_model: Annotated[int, Range("[1, 8192]")] = 64
    n_layers: Annotated[int, Range("[1, 128]")] = 4
    n_heads: Annotated[int, Range("[1, 64]")] = 4
    mlp_ratio: Annotated[int, Range("[1, 64]")] = 4
    dropout: Annotated[float, Range("[0, 1)")] = 0.0
    class_cond: bool = False  # a start token per class
    class_every: bool = False  # class_cond: also add a class embedding to every position's input
    p_uncond: Fraction = 0.1  # class_cond: label dropout for classifier-free guidance
    above: bool = True  # add an embedding of the token one row up to each input (see the module docstring)
    patch: Annotated[int, Range("[1, 64]")] = 1  # pixels: one network position per p x p patch (local head)
    local_ratio: Annotated[int, Range("[1, 64]")] = 4  # patch > 1: the local head's MLP width, x d_model
    autoencoder: str = ""  # a finished vqvae run directory: model its token grids (TokenPrior, the VQ-VAE prior)


@dataclass
class SamplerConfig:
    temperature: Annotated[float, Range("[0, 100]")] = 1.0  # softmax(logits / temperature); 0 = greedy
    top_k: Annotated[int, Range("[0, 65536]")] = 0  # sample among the k most likely tokens only; 0 = all
    cfg_scale: Annotated[float, Range("[0, 100]")] = 1.0  # classifier-free guidance; 1 = conditional model as trained
    kv_cache: bool = True  # reuse the keys / values of earlier tokens (same samples, much faster)


PRESETS = {
    # seconds on CPU: for tests and smoke runs, not for quality
    "tiny": {"model": {"d_model": 16, "n_layers": 2, "n_heads": 2},
             "train": {"steps": 20, "batch_size": 16, "lr": 1e-2, "warmup_steps": 5, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 10, "n_grid": 4}},
    # real MNIST pixels (T = 784), class-conditional with the class at every position (more samples of the
    # requested digit than with the start token alone), in many small steps, which count more than their size
    # at this budget; over the 5-minute CPU target, as it is compute-bound (docs/autoregressive.md)
    "quick": {"model": {"d_model": 64, "n_layers": 4, "n_heads": 2, "class_cond": True, "class_every": True},
              "train": {"steps": 2240, "batch_size": 16, "lr": 3e-3, "warmup_steps": 30, "ema_decay": 0.99,
                        "log_every": 20, "sample_every": 0, "ckpt_every": 280, "n_grid": 100}},
    # a few CPU minutes (the comparison's `transformer` entry at its quick preset): one network position per 4x4
    # patch (T = 49) with a local head as wide as the network (it runs at all 784 sub-pixels: 4x as wide
    # trained 1.4x fewer steps), in steps of 8 images, since at this budget more steps beat larger ones
    # (benchmarks/results/transformer_patch_cpu.jsonl)
    "short": {"model": {"d_model": 64, "n_layers": 4, "n_heads": 2, "class_cond": True, "class_every": True,
                        "patch": 4, "local_ratio": 1},
              "train": {"steps": 3200, "batch_size": 8, "lr": 3e-3, "warmup_steps": 30, "ema_decay": 0.99,
                        "log_every": 20, "sample_every": 0, "ckpt_every": 400, "n_grid": 100}},
    # the VQ-VAE prior on MNIST, with model.autoencoder=RUN of a vqvae quick run (T = 7 x 7 = 49 tokens): a
    # short sequence, so a wider model trains in minutes to recognisable digits (docs/autoregressive.md)
    "prior": {"model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "class_cond": False},
              "train": {"steps": 1500, "batch_size": 32, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.995,
                        "log_every": 50, "sample_every": 0, "ckpt_every": 500, "n_grid": 64}},
    # one GPU: MNIST / Fashion-MNIST pixels (T = 784), or a VQ-VAE prior
    "standard": {"model": {"d_model": 256, "n_layers": 8, "n_heads": 8, "dropout": 0.1},
                 "train": {"steps": 40000, "batch_size": 64, "lr": 5e-4, "warmup_steps": 1000, "ema_decay": 0.999,
                           "weight_decay": 0.01, "sample_every": 5000, "ckpt_every": 2500}},
}


DESCRIPTION = "causal transformer over pixels (ImageGPT) or VQ-VAE tokens, KV cache"
Model, SecondStage, Config = Transformer, TokenPrior, TransformerConfig
