"""The evaluation harness: every family is scored the same way, from `sample()` and `log_likelihood()`.

    evaluate_images(images, dataset="mnist", metrics=("fd", "kid", "pr"))   a set of samples vs a dataset
    evaluate_images(images, reference=other_images, metrics=("fid",))       two sets of images
    evaluate_run("runs/vae-mnist", n=5000)                                  sample a run, then score it

Every number comes with its protocol: metric, extractor and weights sha256, resize, n generated,
n reference and split, seed, sampler, EMA or raw weights, and whether it is comparable to the
literature. Reference features are cached per (dataset, split, extractor, resize, n) as .npz.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from genzoo.datasets import cache_dir, selection_key
from genzoo.errors import ConfigError
from genzoo.evaluation import metrics as M
from genzoo.evaluation.runlog import training_cost

# acc: requested-class accuracy (labelled samples); bpd_ode: the probability-flow ODE estimate of a model that offers
# it beside its declared likelihood (ddpm, dit: contract `ode_likelihood`)
METRICS = ("fid", "fd", "kid", "pr", "is", "acc", "bpd", "bpd_ode")
REFERENCE_SEED = 0  # the reference subset is the first n of this fixed permutation


def parse_metrics(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip())
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from: {', '.join(METRICS)}")
    return names


# ----------------------------------------------------------------------------------------
# feature extractors and cached reference features


def domain_extractor(dataset: str | None, device="cpu"):
    """The project's classifier for `dataset` (FD-<name>), or None when the dataset has none."""
    from genzoo.evaluation.classifier import EXTRACTORS, load_classifier

    return load_classifier(dataset, device=device) if dataset in EXTRACTORS else None


def inception_extractor(weights: str | None = None, download: bool = False, device="cpu"):
    from genzoo.evaluation.inception import load_inception

    return load_inception(weights, download=download, device=device)


def dataset_shape(dataset: str, data_cfg=None) -> tuple[int, int, int]:
    """(C, H, W) of `dataset` as a run loads it (its data.image_size / data.channels), without loading it."""
    from genzoo.datasets import DATASETS

    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose from: {', '.join(DATASETS)}")
    c, h, w = DATASETS[dataset].shape
    if data_cfg is not None and data_cfg.image_size:
        h = w = data_cfg.image_size
    if data_cfg is not None and data_cfg.channels:
        c = data_cfg.channels
    return c, h, w


def reference_images(dataset: str, split: str, n: int, data_cfg=None) -> torch.Tensor:
    """The first `n` images of a fixed permutation of `dataset`'s split, uint8 (n, C, H, W)."""
    from genzoo import datasets

    data = datasets.load(dataset, split) if data_cfg is None else datasets.load_from_config(data_cfg, split,
                                                                                            limited=False)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(REFERENCE_SEED))
    return data.images[perm[:min(n, len(data))]]


def reference_features(extractor, dataset: str, split: str, n: int, data_cfg=None,
                       progress: bool = False) -> dict[str, np.ndarray]:
    """{"features", "mu", "sigma"} of the reference set, cached as .npz per (dataset, split, extractor, resize, n)."""
    shape = "" if data_cfg is None else (f"-s{data_cfg.image_size or 0}c{data_cfg.channels or 0}"
                                         f"{selection_key(data_cfg).split('-limit')[0]}")  # never limited
    key = f"{dataset}{shape}-{split}-{extractor.name}-{extractor.sha256[:8]}-{extractor.resize.split()[0]}-n{n}"
    path = cache_dir("reference") / f"{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in ("features", "mu", "sigma")}
    images = reference_images(dataset, split, n, data_cfg)
    feats = extractor.features(images, progress=progress)
    mu, sigma = M.feature_stats(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=feats.astype(np.float32), mu=mu, sigma=sigma)
    os.replace(tmp, path)
    return {"features": feats.astype(np.float32), "mu": mu, "sigma": sigma}


# ----------------------------------------------------------------------------------------
# scoring a set of images


def _check_images(images: torch.Tensor, expected: tuple[int, ...] | None, what: str) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError(f"{what} must be uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    if expected is not None and tuple(images.shape[1:]) != tuple(expected):
        raise ConfigError(f"{what} have shape {tuple(images.shape[1:])} but the reference has {tuple(expected)}: "
                          f"generate at the dataset's size or pass the matching --set data.image_size")
    return images


def evaluate_images(images: torch.Tensor, *, dataset: str | None = None, reference: torch.Tensor | None = None,
                    metrics=("fd", "kid", "pr", "is"), labels: torch.Tensor | None = None, n_ref: int = 10000,
                    ref_split: str = "train", data_cfg=None, fid_weights: str | None = None,
                    download: bool = False, seed: int = 0, device="cpu", progress: bool = False,
                    protocol: dict | None = None) -> dict:
    """Score uint8 images against a dataset split (cached reference) or against `reference` images."""
    metrics = parse_metrics(metrics)
    if dataset is None and reference is None:
        raise ConfigError("evaluate against a --dataset or a --reference set of images")
    from genzoo.evaluation.classifier import EXTRACTORS

    wants = set(metrics)
    if {"fd", "is", "acc"} & wants and dataset not in EXTRACTORS:
        raise ConfigError(f"fd / is / acc need the project's classifier for the dataset; it exists for "
                          f"{', '.join(EXTRACTORS)} (not {dataset!r}); use --metrics fid,kid,pr instead")
    if "acc" in wants and labels is None:
        raise ConfigError("acc (requested-class accuracy) needs the requested labels: samples of a "
                          "class-conditional model, or a --samples file with `labels`")
    needs_domain = dataset in EXTRACTORS and bool({"fd", "is", "acc", "kid", "pr"} & wants)
    domain = domain_extractor(dataset, device) if needs_domain else None
    if reference is not None:
        expected = tuple(_check_images(reference, None, "reference images").shape[1:])
    else:
        expected = dataset_shape(dataset, data_cfg)
    images = _check_images(images, expected, "samples")
    base = {"n_generated": len(images), "seed": seed, **(protocol or {}),
            "reference": "given images" if reference is not None else f"{dataset}/{ref_split}"}

    def ref_feats(extractor):
        if reference is not None:
            f = extractor.features(reference, progress=progress)
            return {"features": f, **dict(zip(("mu", "sigma"), M.feature_stats(f)))}
        return reference_features(extractor, dataset, ref_split, n_ref, data_cfg, progress)

    def proto(extractor, metric, comparable=False):
        return {"metric": metric, "extractor": extractor.name, "weights_sha256": extractor.sha256,
                "resize": extractor.resize, **base, "comparable_to_literature": comparable}

    out: dict[str, dict] = {}
    spaces = {}
    if "fid" in metrics or ({"kid", "pr"} & set(metrics) and domain is None):
        spaces["fid"] = inception_extractor(fid_weights, download, device)
    if domain is not None and ({"fd", "is"} | {"kid", "pr"}) & set(metrics):
        spaces["fd"] = domain
    feats = {k: (ex.features(images, progress=progress), ref_feats(ex)) for k, ex in spaces.items()}
    base["n_reference"] = len(next(iter(feats.values()))[1]["features"]) if feats else 0

    if "fid" in metrics:
        f, r = feats["fid"]
        comparable = (dataset == "cifar10" and ref_split == "train" and len(images) >= 50000
                      and base["n_reference"] >= 50000)
        out["fid"] = {"value": M.frechet_distance(*M.feature_stats(f), r["mu"], r["sigma"]),
                      "protocol": proto(spaces["fid"], "FID", comparable)}
    if "fd" in metrics:
        f, r = feats["fd"]
        out["fd"] = {"value": M.frechet_distance(*M.feature_stats(f), r["mu"], r["sigma"]),
                     "protocol": proto(domain, f"FD-{domain.name}")}
    space = "fd" if "fd" in feats else "fid"
    if "kid" in metrics:
        f, r = feats[space]
        mean, std = M.kid(r["features"], f, seed=seed)
        out["kid"] = {"value": mean, "std": std, "protocol": proto(spaces[space], f"KID-{spaces[space].name}")}
    if "pr" in metrics:
        f, r = feats[space]
        p, rc = M.precision_recall(r["features"], f, k=3)
        out["precision"] = {"value": p, "protocol": proto(spaces[space], f"precision-k3-{spaces[space].name}")}
        out["recall"] = {"value": rc, "protocol": proto(spaces[space], f"recall-k3-{spaces[space].name}")}
    probs = domain.probs(images) if {"is", "acc"} & wants else None  # (N, K)
    if "is" in metrics:
        out["class_score"] = {"value": M.class_score(probs), "protocol": proto(domain, f"class-score-{domain.name}")}
        hist = np.bincount(probs.argmax(1), minlength=probs.shape[1])
        out["class_histogram"] = {"value": hist.tolist(), "protocol": proto(domain, "predicted-class-counts")}
    if labels is not None and {"is", "acc"} & wants:
        acc, per_class = M.requested_class_accuracy(probs, labels.numpy(), probs.shape[1])
        out["label_accuracy"] = {"value": acc, "per_class": per_class,
                                 "protocol": proto(domain, "accuracy-of-requested-labels")}
    return out


# ----------------------------------------------------------------------------------------
# scoring a training run


@torch.no_grad()
def generate(model, n: int, *, seed: int = 0, batch_size: int = 256, device="cpu", knobs=None,
             progress: bool = False, text: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, control: torch.Tensor | None = None,
             image_prompt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """n uint8 samples (labels cycle through the classes if conditional, unless given: (n,); `text`: (n, context)
    caption tokens of a text-conditioned model, one per sample, with `labels` the classes the prompts name, which
    classifier guidance reads; `control`: (n, c, H, W) control images of a controlnet run, one per sample;
    `image_prompt`: (n, C, H, W) images in [-1, 1] of an ip-adapter, one per sample) and the sampling images/s."""
    from tqdm.auto import tqdm

    from genzoo.evaluation.grid import to_uint8

    K = model.num_classes
    if labels is None:
        labels = torch.arange(n) % K if K else None
    gen = torch.Generator(device).manual_seed(seed)
    chunks, t0 = [], time.perf_counter()
    for i in tqdm(range(0, n, batch_size), disable=not progress, desc="sampling", unit="batch"):
        y = None if labels is None else labels[i:i + batch_size].to(device)
        prompts = {} if text is None else {"text": text[i:i + batch_size].to(device)}
        if control is not None:
            prompts["control"] = control[i:i + batch_size].to(device)
        if image_prompt is not None:
            prompts["image_prompt"] = image_prompt[i:i + batch_size].to(device)
        chunks.append(to_uint8(model.sample(min(batch_size, n - i), labels=y, generator=gen, **prompts,
                                            **(knobs or {}))))
    return torch.cat(chunks), labels, n / (time.perf_counter() - t0)


def test_bits_per_dim(model, data_cfg, n: int, batch_size: int = 500, device="cpu", **knobs) -> float:
    """Mean bits/dim of the first n test images through `model.log_likelihood(batch, **knobs)` (e.g. k for IWAE)."""
    from genzoo import datasets
    from genzoo.contract import Batch

    test = datasets.load_from_config(data_cfg, "test")
    n = min(n, len(test))
    torch.manual_seed(0)
    total = 0.0
    for i in range(0, n, batch_size):
        x, y = test.batch(torch.arange(i, min(i + batch_size, n)))
        total += float(model.log_likelihood(Batch(x.to(device), y.to(device)), **knobs).sum())
    return total / n


def evaluate_run(run_dir: str | Path, *, n: int = 5000, metrics=("fd", "kid", "pr", "is", "bpd"), seed: int = 0,
                 n_ref: int = 10000, ref_split: str = "train", ema: bool = True, best: bool = False,
                 sampler_overrides=(), n_bpd: int | None = None,
                 batch_size: int = 256, device="cpu", fid_weights: str | None = None, download: bool = False,
                 progress: bool = False, prompt_set: str = "heldout", on_samples=None) -> dict:
    """Sample `n` images from a run (EMA weights by default), score them, and record cost and protocol; bits/dim
    on the first `n_bpd` test images (default n). A text-conditioned run samples from `prompt_set`
    (`evaluation.text.evaluation_prompts`: the captions of held-out test images, or every combination alike).
    `on_samples(images, labels)`, if given, receives the generated uint8 images (n, C, H, W) and their labels
    (e.g. to keep the first ones as a grid without sampling them again)."""
    from genzoo.config import apply_overrides
    from genzoo.evaluation import text
    from genzoo.runs import open_run

    metrics = parse_metrics(metrics)
    run = open_run(run_dir, ema=ema, device=device, best=best)
    apply_overrides(run.config, [s if s.startswith("sampler.") else f"sampler.{s}" for s in sampler_overrides])
    knobs = vars(run.config.sampler)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clip = getattr(run.model, "text_encoder", None)  # a text-conditioned model samples from evaluation prompts
    image_metrics = tuple(m for m in metrics if m not in ("bpd", "bpd_ode") and (m != "acc" or run.model.num_classes or clip))
    prompts = (text.evaluation_prompts(run.config.data.dataset, n, prompt_set, run.config.data)
               if clip is not None and image_metrics else None)
    tokens = None if prompts is None else clip.tokenizer.encode_batch(prompts.texts)
    images, labels, sample_rate = (generate(run.model, n, seed=seed, batch_size=batch_size, device=device,
                                            knobs=knobs, progress=progress, text=tokens,
                                            labels=None if prompts is None else prompts.labels)  # the named classes
                                   if image_metrics else (None, None, None))
    if on_samples is not None and images is not None:
        on_samples(images, labels)
    weights = ("ema" if ema else "raw") + (" best.pt" if best else "")
    protocol = {"family": run.config.family, "step": run.step, "weights": weights, "sampler": dict(knobs),
                **({"prompt_set": prompt_set} if prompts is not None else {})}
    out = {"run": str(run_dir), "family": run.config.family, "dataset": run.config.data.dataset, "step": run.step,
           "metrics": evaluate_images(images, dataset=run.config.data.dataset, metrics=image_metrics,
                                      labels=labels, n_ref=n_ref, ref_split=ref_split, data_cfg=run.config.data,
                                      fid_weights=fid_weights, download=download, seed=seed, device=device,
                                      progress=progress, protocol=protocol) if image_metrics else {}}
    if prompts is not None:
        for name, value in text.adherence(clip, images, prompts, run.config.data.dataset).items():
            out["metrics"][name] = {"value": value, "protocol": {
                "metric": name if name != "clip_score" else "CLIP score (the zoo's own CLIP, 100 x mean cosine)",
                "prompts": f"{n} of evaluation.text.evaluation_prompts, set {prompt_set!r} ({prompts.texts[0]!r}, ...)",
                **protocol,
                "comparable_to_literature": False}}
    # the declared likelihood, and the ODE estimate a model offers beside it: (metric, label, log_likelihood knobs)
    for name, kind, estimator in (("bpd", run.model.likelihood, {}),
                                  ("bpd_ode", getattr(run.model, "ode_likelihood", None), {"estimator": "ode"})):
        if name in metrics and kind is not None:
            bpd = test_bits_per_dim(run.model, run.config.data, n_bpd or n, device=device, **estimator)
            out["metrics"][name] = {"value": bpd, "protocol": {
                "metric": f"bits/dim ({kind})", "reference": f"{run.config.data.dataset}/test",
                "n_reference": n_bpd or n, **protocol, "comparable_to_literature": False}}
    nfe = run.model.network_evaluations(**knobs)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" and torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["cost"] = {"parameters": sum(p.numel() for p in run.model.parameters()), "sample_img_per_s": sample_rate,
                   "network_evaluations_per_sample": nfe, "peak_memory_mb": peak,
                   "peak_memory_kind": "cuda allocated" if device != "cpu" else "process max RSS",
                   **training_cost(run.path)}
    return out


@torch.no_grad()
def evaluate_component(run_dir: str | Path, *, n: int = 5000, ema: bool = True, device="cpu") -> dict:
    """A component's scores (`scores` below) on the first n test images of its dataset."""
    from genzoo import datasets
    from genzoo.evaluation import text
    from genzoo.runs import open_run

    # component -> its scores (model, images, labels, dataset) -> dict
    scores = {"clip": text.clip_scores, "noisy-classifier": noisy_classifier_scores}
    run = open_run(run_dir, ema=ema, device=device)
    test = datasets.load_from_config(run.config.data, "test")
    n = min(n, len(test))
    metrics = scores[run.config.family](run.model, test.images[:n], test.labels[:n], run.config.data.dataset)
    return {"run": str(run_dir), "component": run.config.family, "dataset": run.config.data.dataset,
            "step": run.step, "weights": "ema" if ema else "raw", "metrics": metrics,
            "protocol": f"first n={n} images of {run.config.data.dataset}/test; seed 0 (captions, noise)"}


def evaluate_reconstruction(run_dir: str | Path, *, n: int = 2000, metrics=("fd",), n_ref: int = 10000,
                            ref_split: str = "train", batch_size: int = 256, device="cpu",
                            fid_weights: str | None = None, download: bool = False, progress: bool = False) -> dict:
    """An autoencoder run's reconstructions of the first n test images: MSE, PSNR and FD against the dataset.

    A latent model decodes its samples with this autoencoder, so these numbers bound what it can reach.
    """
    from genzoo import datasets
    from genzoo.contract import Batch
    from genzoo.evaluation.grid import to_uint8
    from genzoo.runs import open_run

    run = open_run(run_dir, device=device)
    if not run.model.reconstructs:
        raise ConfigError(f"{run_dir} ({run.config.family}) has no reconstruct(): it is not an autoencoder")
    data = run.config.data
    test = datasets.load_from_config(data, "test")
    n = min(n, len(test))
    originals, recons = [], []
    for i in range(0, n, batch_size):
        x, y = test.batch(torch.arange(i, min(i + batch_size, n)))
        x_hat = run.model.reconstruct(Batch(x.to(device), y.to(device)))  # (B, C, H, W) in [-1, 1]
        originals.append(to_uint8(x))
        recons.append(to_uint8(x_hat.cpu()))
    x, x_hat = torch.cat(originals).float() / 255, torch.cat(recons).float() / 255  # (n, C, H, W) in [0, 1]
    mse = float(((x - x_hat) ** 2).mean())
    protocol = {"family": run.config.family, "step": run.step, "weights": "ema", "what": f"reconstructions of "
                f"the first {n} {data.dataset}/test images"}
    out = evaluate_images(torch.cat(recons), dataset=data.dataset, metrics=metrics, n_ref=n_ref, ref_split=ref_split,
                          data_cfg=data, fid_weights=fid_weights, download=download, device=device,
                          progress=progress, protocol=protocol) if metrics else {}
    out["mse"] = {"value": mse, "protocol": {**protocol, "metric": "MSE on [0, 1] pixels"}}
    out["psnr"] = {"value": float(10 * np.log10(1.0 / max(mse, 1e-12))), "protocol": {**protocol, "metric": "PSNR dB"}}
    return {"run": str(run_dir), "family": run.config.family, "metrics": out}


class InLoopFD:
    """FD-<classifier> of n EMA samples against the cached train reference: the cheap metric the trainer logs."""

    @staticmethod
    def unavailable(data_cfg) -> str | None:
        """Why the in-loop FD cannot run for this data config, or None when it can."""
        from genzoo.evaluation.classifier import EXTRACTORS

        info = EXTRACTORS.get(data_cfg.dataset)
        if info is None:
            return f"no domain classifier for {data_cfg.dataset!r} (there is one for {', '.join(EXTRACTORS)})"
        shape = dataset_shape(data_cfg.dataset, data_cfg)
        if shape != info.input_shape:
            return f"the classifier takes {info.input_shape} images, this run makes {shape}"
        return None

    def __init__(self, data_cfg, device="cpu", n_ref: int = 10000):
        why = self.unavailable(data_cfg)
        if why:
            raise ConfigError(f"in-loop FD (train.eval_every) is not available: {why}")
        self.extractor = domain_extractor(data_cfg.dataset, device)
        self.device, self.data_cfg, self.prompts = device, data_cfg, {}
        self.ref = reference_features(self.extractor, data_cfg.dataset, "train", n_ref, data_cfg)

    def __call__(self, model, n: int, *, seed: int = 0, knobs=None) -> float:
        """A text-conditioned model draws from the held-out prompts, as `evaluate_run` scores it."""
        from genzoo.evaluation import text

        clip = getattr(model, "text_encoder", None)
        if clip is not None and n not in self.prompts:
            self.prompts[n] = text.evaluation_prompts(self.data_cfg.dataset, n, "heldout", self.data_cfg)
        prompts = self.prompts.get(n) if clip is not None else None
        images, _, _ = generate(model, n, seed=seed, device=self.device, knobs=knobs,
                                text=None if prompts is None else clip.tokenizer.encode_batch(prompts.texts),
                                labels=None if prompts is None else prompts.labels)
        return M.frechet_distance(*M.feature_stats(self.extractor.features(images)), self.ref["mu"], self.ref["sigma"])


@torch.no_grad()
def noisy_classifier_scores(model, images: torch.Tensor, labels: torch.Tensor, dataset: str,
                            batch_size: int = 500) -> dict:
    """A noisy classifier's test accuracy at five noise levels t = 0, T/4, T/2, 3T/4, T-1 (noise seed 0)."""
    device = next(model.parameters()).device
    T = model.cfg.T
    out, g = {}, torch.Generator().manual_seed(0)
    for t in (0, T // 4, T // 2, 3 * T // 4, T - 1):
        right = 0
        for i in range(0, len(images), batch_size):
            x0 = images[i:i + batch_size].float().div(127.5).sub(1).to(device)  # uint8 -> [-1, 1]
            tt = torch.full((len(x0),), t, device=device)
            x_t = model.process.q_sample(x0, tt, torch.randn(x0.shape, generator=g).to(device))
            right += int((model(x_t, tt).argmax(1).cpu() == labels[i:i + batch_size]).sum())
        out[f"accuracy_t{t}"] = right / len(images)
    return out

