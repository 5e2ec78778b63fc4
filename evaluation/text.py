"""How well a text encoder (the zoo's CLIP, `genzoo.models.clip`) ties images to words, on labelled images; and
how well a text-conditioned generator draws what its prompts ask for (`adherence`).

    scores = clip_scores(model, images, labels, "mnist")   # what `genzoo eval CLIP_RUN` reports

- zero-shot accuracy: each image's class is the closest class prompt, the mean embedding of the caption
  templates' label-only prompts ("a 7", "the number seven", "a seven"); no classifier is trained.
- recall@1 and @5: for each test caption (seed 0; the empty caption names no image), is its own image among
  the 1 or 5 images closest to it? Captions such as "a 7" fit many images, so these stay low by design.
- attribute accuracy: each image's two first attributes (digits: thickness and slant) read as the best of
  "something {a} and {b}" over the nine bin pairs (the other attribute marginalised by logsumexp), against
  the bins `genzoo.datasets.attributes` measures on the image: the functions that wrote the captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genzoo.datasets import attributes, captions
from genzoo.errors import ConfigError


@torch.no_grad()
def clip_scores(model, images: torch.Tensor, labels: torch.Tensor, dataset: str, batch_size: int = 500) -> dict:
    """The three scores of `model` on uint8 images (N, C, H, W) and their labels (N,)."""
    device = model.tau.device
    z_img = torch.cat([model.embed_images(images[i:i + batch_size].to(device).float() / 127.5 - 1)
                       for i in range(0, len(images), batch_size)])  # (N, E)
    return {"zero_shot_accuracy": zero_shot(model, z_img, labels.to(device), dataset),
            **retrieval(model, z_img, captions.for_images(dataset, images, labels, seed=0), batch_size),
            **attribute_accuracy(model, z_img, images, dataset), "n": len(images)}


def zero_shot(model, z_img: torch.Tensor, labels: torch.Tensor, dataset: str) -> float:
    """Share of images whose closest class prompt is their label."""
    names = captions.DIGITS if dataset == "mnist" else captions.CLOTHES
    prompts = [[f"a {n}", f"the number {n}", f"a {k}"] if dataset == "mnist" else [f"a {n}", n]
               for k, n in enumerate(names)]
    classes = F.normalize(torch.stack([model.embed_prompts(p).mean(0) for p in prompts]), dim=-1)  # (K, E)
    return ((z_img @ classes.T).argmax(1) == labels).float().mean().item()


def retrieval(model, z_img: torch.Tensor, caps: list[str], batch_size: int = 500) -> dict[str, float]:
    """Text-to-image recall@1 and @5: caption i's own image is image i."""
    own = torch.tensor([i for i, c in enumerate(caps) if c], device=z_img.device)  # the non-empty captions
    texts = [caps[i] for i in own.tolist()]
    z_txt = torch.cat([model.embed_prompts(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])
    top5 = (z_txt @ z_img.T).topk(5, dim=1).indices  # (N', 5): the closest images to each caption
    return {f"recall@{k}": (top5[:, :k] == own[:, None]).any(1).float().mean().item() for k in (1, 5)}


def attribute_accuracy(model, z_img: torch.Tensor, images: torch.Tensor, dataset: str) -> dict[str, float]:
    """The two first attributes of the dataset read from prompts, against the bins measured on the images."""
    a, b = list(attributes.NAMES[dataset])[:2]
    measured = attributes.measure(dataset, images)
    prompts = [f"something {captions.SYNONYMS[a][i][0]} and {captions.SYNONYMS[b][j][0]}"
               for i in range(3) for j in range(3)]
    scores = (z_img @ model.embed_prompts(prompts).T).view(-1, 3, 3).cpu()  # (N, bins of a, bins of b)
    return {f"{a}_accuracy": (scores.logsumexp(2).argmax(1) == measured[a]).float().mean().item(),
            f"{b}_accuracy": (scores.logsumexp(1).argmax(1) == measured[b]).float().mean().item()}


# ----------------------------------------------------------------------------------------
# text adherence of a text-conditioned generator


@dataclass
class Prompts:
    """Evaluation prompts that each name a class and a bin of the dataset's two first attributes."""

    texts: list[str]
    labels: torch.Tensor  # (n,) the requested class
    bins: dict[str, torch.Tensor]  # attribute -> (n,) the requested bin, 0..2


PROMPT_SETS = ("heldout", "uniform", "label")  # the evaluation prompts of a text-conditioned run (`evaluation_prompts`)


def evaluation_prompts(dataset: str, n: int, which: str = "heldout", data_cfg=None) -> Prompts:
    """The n prompts a text-conditioned run is scored on: `heldout_prompts` (the default), `adherence_prompts`
    or `label_prompts`."""
    if which == "heldout":
        return heldout_prompts(dataset, n, data_cfg)
    if which == "uniform":
        return adherence_prompts(dataset, n)
    if which == "label":
        return label_prompts(dataset, n, data_cfg)
    raise ConfigError(f"unknown prompt set {which!r}; choose from: {', '.join(PROMPT_SETS)}")


def heldout_images(dataset: str, n: int, data_cfg=None) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out images and their classes: the classes cycle as the class-conditional runs' labels do (sample i
    asks for class i mod K), and sample i takes the (i div K)-th test image of its class (cycled past the end of
    the class). A text run and a class run are then scored on the same mix of classes; the first n test images
    would not do it (on MNIST, 116 twos and 85 zeros among the first 1000)."""
    from genzoo import datasets
    from genzoo.config import DataConfig

    test = datasets.load_from_config(data_cfg or DataConfig(dataset=dataset), "test")
    K = int(test.labels.max()) + 1
    i = torch.arange(n)
    of_class = [torch.nonzero(test.labels == k).flatten() for k in range(K)]  # test indices of each class, in order
    idx = torch.stack([of_class[k][j % len(of_class[k])] for k, j in zip((i % K).tolist(), (i // K).tolist())])
    return test.images[idx], test.labels[idx]


def heldout_prompts(dataset: str, n: int, data_cfg=None) -> Prompts:
    """The captions of held-out images (`heldout_images`: the classes cycling): the captions' first template with
    the image's own class and the bins `genzoo.datasets.attributes` measures on it ("a thick, right-leaning
    seven"). Within each class the prompts then follow the data's joint distribution of attributes, as
    text-to-image FD on COCO samples one image per validation caption; `adherence_prompts` asks for every
    combination equally often, rare ones included (on MNIST test, a right-leaning 3 or 9 is 6-7% of its class)."""
    images, labels = heldout_images(dataset, n, data_cfg)
    a, b = list(attributes.NAMES[dataset])[:2]
    measured = attributes.measure(dataset, images)
    return prompts_for(dataset, labels, measured[a], measured[b])


def label_prompts(dataset: str, n: int, data_cfg=None) -> Prompts:
    """The class alone, as the captions' label-only template words it ("the number seven", "a sandal"), for the
    classes of the same held-out images as `heldout_prompts`: the text model asked what a class-conditional
    model is given, so that the two compare on one task (no attribute is requested: no bin is scored)."""
    _, labels = heldout_images(dataset, n, data_cfg)
    template, names = ("the number {label}", captions.DIGITS) if dataset == "mnist" else ("a {label}", captions.CLOTHES)
    return Prompts([template.format(label=names[y]) for y in labels.tolist()], labels, {})


def adherence_prompts(dataset: str, n: int) -> Prompts:
    """n prompts of the captions' first template with each bin's first word ("a thick, right-leaning seven"),
    cycling through the classes, then the first attribute's bins, then the second's: every combination of
    class and bins equally often (n = 1000 on MNIST: each of the 90 about 11 times)."""
    K = len(captions.DIGITS if dataset == "mnist" else captions.CLOTHES)
    i = torch.arange(n)
    return prompts_for(dataset, i % K, (i // K) % 3, (i // (3 * K)) % 3)


def grid_prompts(dataset: str, n: int) -> Prompts:
    """n prompts for a grid's rows: the classes in order, the bins of the two attributes turning with them, so
    that ten rows show every class and every pair of bins ("a thin, left-leaning zero", "a regular,
    left-leaning one", ...)."""
    K = len(captions.DIGITS if dataset == "mnist" else captions.CLOTHES)
    i = torch.arange(n)
    return prompts_for(dataset, i % K, i % 3, (i // 3) % 3)


def prompts_for(dataset: str, labels: torch.Tensor, bin_a: torch.Tensor, bin_b: torch.Tensor) -> Prompts:
    """The prompts of the captions' first template for these classes and bins of the two first attributes."""
    a, b = list(attributes.NAMES[dataset])[:2]
    template = captions.TEMPLATES[dataset][0][1]
    names = captions.DIGITS if dataset == "mnist" else captions.CLOTHES
    texts = [template.format(label=names[y], numeral=y, **{a: captions.SYNONYMS[a][u][0], b: captions.SYNONYMS[b][v][0]})
             for y, u, v in zip(labels.tolist(), bin_a.tolist(), bin_b.tolist())]
    return Prompts(texts, labels, {a: bin_a, b: bin_b})


@torch.no_grad()
def adherence(clip, images: torch.Tensor, prompts: Prompts, dataset: str, batch_size: int = 500) -> dict[str, float]:
    """What the samples (uint8 (n, C, H, W), sample i drawn from prompt i) show of their prompts: each requested
    attribute bin as measured by `genzoo.datasets.attributes` (the functions that wrote the training captions;
    chance 1/3), and the CLIP score, 100 x the mean cosine of image and prompt embeddings under `clip` (the zoo's
    own CLIP: not comparable with published CLIP scores). The requested class is the harness's `acc`."""
    measured = attributes.measure(dataset, images)
    out = {f"{name}_accuracy": (measured[name] == want).float().mean().item() for name, want in prompts.bins.items()}
    device = clip.tau.device
    cos = torch.cat([(clip.embed_images(images[i:i + batch_size].to(device).float() / 127.5 - 1)
                      * clip.embed_prompts(prompts.texts[i:i + batch_size])).sum(1)
                     for i in range(0, len(images), batch_size)])
    out["clip_score"] = 100 * cos.mean().item()
    return out
