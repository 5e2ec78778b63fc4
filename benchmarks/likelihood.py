"""Test-set bits/dim of a trained run through the family's `log_likelihood` (a bound for the VAE).

    python benchmarks/likelihood.py RUN_DIR [--k 1 --k 64] [--n 10000]

Prints one JSON object: bits/dim (mean over the first N test images) for each k, with the protocol.
"""

from __future__ import annotations

import argparse
import json

from genzoo import datasets
from genzoo.evaluation.harness import test_bits_per_dim
from genzoo.runs import open_run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--k", type=int, action="append", help="importance samples (1 = ELBO); repeatable")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=500)
    a = p.parse_args()
    run = open_run(a.run_dir)
    d = run.config.data
    n = min(a.n, len(datasets.load_from_config(d, "test")))
    result = {"benchmark": "likelihood", "run": a.run_dir, "family": run.config.family, "step": run.step,
              "dataset": d.dataset, "split": "test", "n": n, "weights": "ema", "bits_per_dim": {}}
    for k in a.k or [1]:
        result["bits_per_dim"][f"k={k}"] = test_bits_per_dim(run.model, d, n, batch_size=a.batch_size, k=k)
    result["bound"] = "upper bound on bits/dim: ELBO (k=1), IWAE (k>1)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
