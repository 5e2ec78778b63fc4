"""LoRA: low-rank adaptation of a finished run (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models", eq. 3), and full fine-tuning beside it for comparison.

A frozen weight W (out x in, or a convolution's out x in x k x k) gets a trainable update of rank r:

    h = W x + (alpha / r) * B A x          A: r x in (random), B: out x r (zero)

B starts at zero, so the adapted model equals the base bit for bit at step 0, and only A and B train: for a
64 x 64 projection at r = 4 that is 512 numbers instead of 4096. The update is saved alone
(`adapter.safetensors`, with the base's identity, r, alpha and the targets; in float16 as LoRA files are usually
shared, `model.file_dtype=float32` keeps the training precision; training and its checkpoint stay in float32),
applied at sampling with a scale s
(h = W x + s (alpha / r) B A x; s = 0 is the base, several adapters add up with their own scales), or merged,
W <- W + s (alpha / r) B A, for sampling at the base's cost. For a convolution, A is a convolution with the
layer's kernel, stride and padding to r channels and B a 1 x 1 convolution back: B A is again one kernel.

    genzoo train lora --set model.base=RUN data.subset=thickness:thick data.limit=200 --out runs/thick
    genzoo sample RUN --lora runs/thick --lora runs/other:0.5 [--merge]

`model.method=full` trains every weight of the base's denoiser instead (the first stage and the text encoder stay
frozen): the baseline LoRA is measured against (benchmarks/lora.py). The run is a generative model like its
base (it samples with the base's sampler knobs); it is an adapter, not a family: `genzoo.registry.ADAPTERS`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.contract import Adapter, GenerativeModel
from genzoo.errors import ConfigError
from genzoo.rules import Range
from genzoo.train import checkpoint as ckpt
from genzoo.train.latents import state_sha256

FORMAT = "genzoo-lora-1"
FROZEN_PARTS = ("autoencoder", "text_encoder")  # a base's own frozen parts: never adapted, never fine-tuned
ATTENTION = ("qkv", "q", "kv", "proj", "cross_proj")  # the attention projections' names in unet, dit, transformer


class LowRank(nn.Module):
    """B A for one layer: A maps the layer's input to r channels (as the layer does: a linear map, or a
    convolution with its kernel, stride and padding), B maps them to its outputs, starting at zero."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, r: int):
        super().__init__()
        if isinstance(layer, nn.Linear):
            self.A, self.B = nn.Linear(layer.in_features, r, bias=False), nn.Linear(r, layer.out_features, bias=False)
        else:
            self.A = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                               bias=False)
            self.B = nn.Conv2d(r, layer.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))  # as nn.Linear's own init (and PEFT's)
        nn.init.zeros_(self.B.weight)

    def delta(self) -> torch.Tensor:
        """B A as a weight of the layer's shape: (out, in) or (out, in, k, k)."""
        B, A = self.B.weight.flatten(1), self.A.weight  # (out, r), (r, in[, k, k])
        return torch.einsum("or,r...->o...", B, A)


class LoRALayer(nn.Module):
    """A frozen layer plus its low-rank updates: layer(x) + sum_i s_i (alpha_i / r_i) B_i A_i x."""

    def __init__(self, layer: nn.Linear | nn.Conv2d):
        super().__init__()
        self.layer = layer
        self.adapters = nn.ModuleList()
        self.factors: list[float] = []  # s_i alpha_i / r_i of each adapter

    def add(self, r: int, alpha: float, scale: float = 1.0) -> LowRank:
        w = self.layer.weight
        self.adapters.append(LowRank(self.layer, r).to(w.device, w.dtype).requires_grad_(False))  # frozen until trained
        self.factors.append(scale * alpha / r)
        return self.adapters[-1]

    def weight(self) -> torch.Tensor:
        """W + sum_i f_i B_i A_i, in the layer's dtype: what `forward` computes with, and what merging writes."""
        w = self.layer.weight
        for ab, f in zip(self.adapters, self.factors):
            if f != 0:  # scale 0 adds nothing, not a zero
                w = w + f * ab.delta()
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer with the updated weight, formed on the fly: on these small layers a (out x r) (r x in k k)
        product costs less than running B A on the activations, and it is the merged layer's arithmetic, so
        merged and unmerged models agree bit for bit."""
        if not any(self.factors):
            return self.layer(x)  # the base, exactly
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, self.weight(), self.layer.bias)
        return self.layer._conv_forward(x, self.weight(), self.layer.bias)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The layer with every update added into its weight (sampling at the base's cost), as `forward` adds it."""
        self.layer.weight.copy_(self.weight())
        return self.layer


def targets_of(model: nn.Module, targets: str) -> list[str]:
    """Names of the layers an adapter updates: the attention projections ("attention"), or every linear map and
    ungrouped convolution ("all"); never inside the base's frozen first stage or text encoder."""
    names = []
    for name, m in model.named_modules():
        if any(part in FROZEN_PARTS for part in name.split(".")) or isinstance(m, LoRALayer):
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if targets == "all" or name.split(".")[-1] in ATTENTION:
                names.append(name)
    return names


def wrap_layers(model: nn.Module, names: list[str]) -> dict[str, LoRALayer]:
    """Replace each named layer by a LoRALayer around it (once); {name: its LoRALayer}."""
    out = {}
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        m = getattr(parent, leaf)
        if not isinstance(m, LoRALayer):
            m = LoRALayer(m)
            setattr(parent, leaf, m)
        out[name] = m
    return out


def merge(model: nn.Module) -> nn.Module:
    """Every LoRALayer of `model` replaced by its merged layer, in place."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALayer):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, m.merged())
    return model


# ----------------------------------------------------------------------------------------
# the adapter file: the updates alone, with what they were trained on


def load_adapter(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(weights, metadata) of an adapter file, or of a LoRA run directory's adapter file."""
    return ckpt.load_adapter(source, flag="--lora", family="lora", fmt=FORMAT)


def apply_adapter(model: nn.Module, source: str | Path, scale: float = 1.0) -> dict[str, str]:
    """Add the adapter in `source` to `model` (a finished run's model, frozen) at `scale`; its metadata. Stops
    with one line when the adapter was trained on another base."""
    weights, meta = load_adapter(source)
    sha = weights_sha256_of_base(model)
    if meta["base_sha256"] != sha:
        raise ConfigError(f"--lora {source} was trained on the {meta['base_family']} run {meta['base_run']} (weights "
                          f"sha256 {meta['base_sha256'][:12]}), not on this model ({sha[:12]}): sample that run")
    r, alpha = int(meta["rank"]), float(meta["alpha"])
    layers = wrap_layers(model, json.loads(meta["layers"]))
    for name, layer in layers.items():
        ab = layer.add(r, alpha, scale)
        with torch.no_grad():
            ab.A.weight.copy_(weights[f"{name}.A"])
            ab.B.weight.copy_(weights[f"{name}.B"])
    return meta


def weights_sha256_of_base(model: nn.Module) -> str:
    """The base's identity: sha256 of its weights, read through any LoRALayer already added (so a second adapter
    checks against the same base as the first)."""
    state = {k.replace(".layer.", "."): v for k, v in model.state_dict().items() if ".adapters." not in k}
    return state_sha256(state)


# ----------------------------------------------------------------------------------------
# the run: a finished model, frozen, plus its updates


class LoRA(Adapter):
    """A finished run's model (frozen) with low-rank updates (method lora) or all its denoiser's weights trainable
    (method full); everything else is the base's (`genzoo.contract.Adapter`)."""

    def __init__(self, cfg: LoRAConfig, image_shape: tuple[int, int, int], num_classes: int = 0, *,
                 base: GenerativeModel, base_family: str = ""):
        super().__init__(base, base_family)
        self.cfg = cfg
        if cfg.method == "lora":
            self.layer_names = targets_of(base, cfg.targets)
            if not self.layer_names:
                raise ConfigError(f"model.targets={cfg.targets}: the {base_family} model has no such layers; "
                                  f"use model.targets=all")
            for layer in wrap_layers(base, self.layer_names).values():
                layer.add(cfg.rank, cfg.alpha).requires_grad_(True)
        else:  # full fine-tuning: the denoiser, not the frozen parts
            for name, p in base.named_parameters():
                p.requires_grad_(not any(part in FROZEN_PARTS for part in name.split(".")))

    def adapter_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """(weights, metadata) of `adapter.safetensors`: the updates alone, named by the base's layers."""
        if self.cfg.method != "lora":
            return None
        weights, dtype = {}, getattr(torch, self.cfg.file_dtype)
        for name in self.layer_names:
            ab = self.base.get_submodule(name).adapters[0]
            weights[f"{name}.A"], weights[f"{name}.B"] = ab.A.weight.to(dtype), ab.B.weight.to(dtype)
        meta = {"format": FORMAT, "base_run": self.cfg.base, "base_family": self.base_family,
                "base_sha256": self.base_sha256, "rank": str(self.cfg.rank), "alpha": str(self.cfg.alpha),
                "targets": self.cfg.targets, "layers": json.dumps(self.layer_names), "dtype": self.cfg.file_dtype}
        return weights, meta


# ----------------------------------------------------------------------------------------
# configs and presets


@dataclass
class LoRAConfig:
    base: str = ""  # the finished run to adapt (ddpm, ldm, dit, flow or transformer); required
    method: Literal["lora", "full"] = "lora"  # full: fine-tune every weight of the denoiser (the baseline)
    rank: Annotated[int, Range("[1, 4096]")] = 4  # r
    alpha: Annotated[float, Range("(0, 100000]")] = 4.0  # the update is scaled by alpha / r
    targets: Literal["attention", "all"] = "attention"  # attention projections, or every linear map and conv
    file_dtype: Literal["float16", "float32"] = "float16"  # adapter.safetensors: half, as shared LoRA files are

    BASE_FAMILIES: ClassVar[tuple[str, ...]] = ("ddpm", "ldm", "dit", "flow", "transformer")  # what it adapts


@dataclass
class SamplerConfig:
    """Placeholder: a LoRA run samples with its base family's knobs (genzoo.registry puts them here)."""


PRESETS = {
    # seconds on CPU: for tests and smoke runs
    "tiny": {"train": {"steps": 10, "batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9,
                       "log_every": 5, "sample_every": 0, "ckpt_every": 5, "eval_every": 0}},
    # a few hundred images on 2 CPU cores: a few minutes. Every layer at rank 2: the quick models' layers are
    # 16-64 wide, and attention alone is 8 of the U-Net's 57 layers. LoRA takes a larger step size than full
    # fine-tuning (its B A starts at zero); a short EMA
    "quick": {"model": {"targets": "all", "rank": 2, "alpha": 2.0},
              "train": {"steps": 600, "batch_size": 32, "lr": 5e-3, "warmup_steps": 20, "ema_decay": 0.99,
                        "weight_decay": 0.0, "log_every": 50, "sample_every": 200, "ckpt_every": 200,
                        "eval_every": 0}},
    # one GPU
    "standard": {"model": {"targets": "all", "rank": 8, "alpha": 8.0},
                 "train": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.995,
                           "weight_decay": 0.0, "sample_every": 500, "ckpt_every": 500, "eval_every": 0}},
}


DESCRIPTION = "low-rank updates (or full fine-tuning) of a finished run's model on little data (an adapter)"
Model, Config = LoRA, LoRAConfig
