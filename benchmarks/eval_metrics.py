"""The set metrics' cost at the comparison's protocol, side by side: KID and precision/recall as defined against
genzoo's (same values), per evaluation of n generated images against n_ref reference features.

    python benchmarks/eval_metrics.py --n 1000 --n-ref 10000 --repeats 3

The features are real: the domain classifier's (LeNet) features of the MNIST train split (the cached reference
of `genzoo eval` / `genzoo compare`) and, as the "generated" set, of the first n test images. Each round times

- `kid_definition`: KID with every subset's three kernel matrices from its own draws (the textbook loop);
- `kid`: `metrics.kid`, which computes the generated set's terms once when a subset is all of it (the protocol's
  case, n = subset size);
- `pr_cold`: precision/recall with the reference's k-NN radii computed (the first evaluation of a process);
- `pr`: `metrics.precision_recall` once the reference's radii are remembered (every later evaluation);

alternating within each round, and prints one JSON line per timing (median seconds) with its ratio to the
definition (> 1: faster) and whether the values are equal (to 1e-10 relative).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from genzoo import datasets
from genzoo.evaluation import metrics as M
from genzoo.evaluation.harness import domain_extractor, reference_features


def kid_definition(real, fake, subsets=100, subset_size=1000, seed=0):
    m, d = min(subset_size, len(real), len(fake)), real.shape[1]
    rng, values = np.random.default_rng(seed), []
    for _ in range(subsets):
        x, y = real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-ref", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    extractor = domain_extractor("mnist")
    real = reference_features(extractor, "mnist", "train", a.n_ref)["features"].astype(np.float64)
    test = datasets.load("mnist", "test")
    x, _ = test.batch(torch.arange(a.n))
    fake = extractor.features(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)).astype(np.float64)

    def pr_cold():
        M._RADII.clear()
        return M.precision_recall(real, fake)

    runs = {"kid_definition": lambda: kid_definition(real, fake), "kid": lambda: M.kid(real, fake),
            "pr_cold": pr_cold, "pr": lambda: M.precision_recall(real, fake)}
    times, values = {k: [] for k in runs}, {}
    for _ in range(a.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = {"kid": "kid_definition", "pr": "pr_cold"}
    for name in runs:
        ref = base.get(name, name)
        s, s_ref = statistics.median(times[name]), statistics.median(times[ref])
        print(json.dumps({"metric": name, "n": a.n, "n_ref": a.n_ref, "median_s": round(s, 3),
                          "vs": ref, "speedup": round(s_ref / s, 2),
                          "same_value": bool(np.allclose(values[name], values[ref], rtol=1e-10, atol=0)),
                          "value": values[name], "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
