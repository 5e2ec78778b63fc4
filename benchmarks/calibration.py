"""What do FD / FID numbers mean? Score reference-like and deliberately damaged image sets against a
dataset's train split, so a reader can place a model's number between the floor and noise.

    python benchmarks/calibration.py --dataset mnist --metrics fd,kid,pr [--n 10000] [--markdown]

Sets (all from the TEST split unless noted): the test set itself (the floor), Gaussian blur
(sigma 1 px), additive Gaussian noise (std 0.1 of the range), a single class (label 0), and
uniform noise. Prints JSON (every value with its protocol), or a markdown table.
"""

from __future__ import annotations

import argparse
import json

import torch
from torchvision.transforms.v2 import functional as TF

from genzoo import datasets
from genzoo.evaluation.harness import evaluate_images, parse_metrics


def damaged_sets(dataset: str, n: int) -> dict[str, torch.Tensor]:
    test = datasets.load(dataset, "test")
    g = torch.Generator().manual_seed(0)
    x = test.images[torch.randperm(len(test), generator=g)[:n]]  # uint8 (n, C, H, W)
    xf = x.float()
    noisy = (xf + 25.5 * torch.randn(xf.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
    blurred = TF.gaussian_blur(xf, kernel_size=[5, 5], sigma=[1.0, 1.0]).round().clamp(0, 255).to(torch.uint8)
    one_class = test.images[test.labels == 0][:n]
    uniform = torch.randint(0, 256, x.shape, generator=g, dtype=torch.uint8)
    return {"test set (floor)": x, "blurred test (sigma 1)": blurred, "noisy test (std 0.1)": noisy,
            "single class (0)": one_class, "uniform noise": uniform}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--metrics", default="fd,kid,pr")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--n-ref", type=int, default=10000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    metrics = parse_metrics(a.metrics)
    rows = {}
    for name, images in damaged_sets(a.dataset, a.n).items():
        rows[name] = evaluate_images(images, dataset=a.dataset, metrics=metrics, n_ref=a.n_ref, device=a.device)
    if not a.markdown:
        print(json.dumps({"benchmark": "calibration", "dataset": a.dataset, "rows": rows}, indent=2))
        return
    keys = [k for k in next(iter(rows.values())) if k != "class_histogram"]
    print(f"| {a.dataset}: set vs train | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} (n={r[keys[0]]['protocol']['n_generated']}) | "
              + " | ".join(f"{r[k]['value']:.4g}" for k in keys) + " |")
    print("\n" + "; ".join(f"{k}: {r[k]['protocol']['metric']}" for k in keys) +
          f"; reference {a.dataset}/train n={r[keys[0]]['protocol']['n_reference']}")


if __name__ == "__main__":
    main()
