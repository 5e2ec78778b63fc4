"""Train a domain classifier (the FD-<extractor> feature network) deterministically.

    python -m genzoo.evaluation.train_classifier --dataset mnist [--out evaluation/weights]

Trains `EXTRACTORS[dataset]`'s architecture on the real TRAIN split (fixed seeds, fixed
thread count, `torch.use_deterministic_algorithms(True)`, AdamW with warmup + cosine
decay, random shifts of a few pixels drawn from a seeded generator), measures accuracy on
the real TEST split through the same `ClassifierExtractor` that evaluation uses, saves
`<name>.safetensors` and prints one JSON line: sha256, test accuracy, epochs, seconds.
Copy the sha256 and accuracy into `EXTRACTORS` in classifier.py when shipping new weights.
Bitwise-identical weights need the same torch version, CPU kind and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from genzoo.evaluation.classifier import (EXTRACTORS, WEIGHTS_DIR, ClassifierExtractor, build_network,
                                          file_sha256, to_float)


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    shift: int        # max random translation in pixels (each axis)
    warmup: float     # fraction of the steps with linear warmup


RECIPES = {
    "mnist": Recipe(epochs=5, batch_size=128, lr=2e-3, weight_decay=1e-4, shift=2, warmup=0.05),
    "fashion-mnist": Recipe(epochs=6, batch_size=128, lr=2e-3, weight_decay=1e-4, shift=0, warmup=0.05),
    "digits": Recipe(epochs=60, batch_size=50, lr=2e-3, weight_decay=1e-4, shift=1, warmup=0.05),
}


def random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each uint8 image by its own (dy, dx) in [-shift, shift], filling with black (0)."""
    if shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(images.shape[1])[None, :, None, None], rows, cols]


def train(dataset: str, out: Path, *, seed: int = 0, threads: int = 2, epochs: int | None = None,
          log=None) -> dict:
    """Train, save and test the classifier for `dataset`; returns the report that main() prints."""
    from genzoo.datasets import load

    info, recipe = EXTRACTORS[dataset], RECIPES[dataset]
    epochs = recipe.epochs if epochs is None else epochs
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)  # weight init and dropout
    generator = torch.Generator().manual_seed(seed + 1)  # shuffling and shifts

    train_data, test_data = load(dataset, "train"), load(dataset, "test")
    network = build_network(info)
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / recipe.batch_size)
    total, warmup = epochs * steps_per_epoch, max(1, round(recipe.warmup * epochs * steps_per_epoch))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start = time.perf_counter()
    network.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(train_data), generator=generator)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(perm), recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            x = to_float(random_shift(train_data.images[idx], recipe.shift, generator))
            y = train_data.labels[idx]
            logits = network(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / len(perm):.4f}, running train accuracy "
                f"{correct / len(perm):.4f}, {time.perf_counter() - start:.0f}s")
    seconds = time.perf_counter() - start

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    path = out / info.weights
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(path), metadata={"genzoo": json.dumps(
        {"name": info.name, "dataset": dataset, "seed": seed, "epochs": epochs, "threads": threads}, sort_keys=True)})
    sha = file_sha256(path)
    extractor = ClassifierExtractor(network, info, sha)
    probs = extractor.probs(test_data.images)
    accuracy = float((probs.argmax(1) == test_data.labels.numpy()).mean())
    return {"name": info.name, "dataset": dataset, "weights": str(path), "sha256": sha,
            "bytes": path.stat().st_size, "test_accuracy": round(accuracy, 4), "n_test": len(test_data),
            "epochs": epochs, "seconds": round(seconds, 1), "seed": seed, "threads": threads,
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genzoo.evaluation.train_classifier", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(EXTRACTORS))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"weights folder (default {WEIGHTS_DIR})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads; fixed for reproducible weights")
    parser.add_argument("--epochs", type=int, default=None, help="override the dataset's recipe")
    args = parser.parse_args(argv)
    report = train(args.dataset, args.out, seed=args.seed, threads=args.threads, epochs=args.epochs,
                   log=lambda line: sys.stderr.write(line + "\n"))
    sys.stdout.write(json.dumps(report) + "\n")  # sys.stdout, not print(): tests/test_layout.py allows print only in the CLI
    return 0


if __name__ == "__main__":
    sys.exit(main())
