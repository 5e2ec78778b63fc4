"""The evaluation's sampling batch on CPU, side by side: images/s of one finished run at several batch sizes.

    python benchmarks/eval_batch.py RUN --set cfg_scale=2 name=dpm++2m steps=20 --n 200 --batches 500,100,50

Draws the same n samples (labels cycling through the classes) from RUN's EMA weights at each batch size, the
sizes alternating over --repeats rounds, and prints one JSON line per size with the median images/s and its
ratio to the first size (> 1: faster). `genzoo compare` picks each entry's CPU batch (`Stage.eval_batch`) from
these lines: benchmarks/results/eval_batch_cpu.jsonl. With guidance the network sees twice the batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from genzoo.config import apply_overrides
from genzoo.evaluation.harness import generate
from genzoo.runs import open_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="sampler knobs, without 'sampler.'")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batches", default="500,100,50")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = open_run(args.run, device="cpu")
    apply_overrides(run.config, [f"sampler.{s}" for s in args.set])
    knobs = vars(run.config.sampler)
    batches = [int(b) for b in args.batches.split(",")]
    rates: dict[int, list[float]] = {b: [] for b in batches}
    for r in range(args.repeats):
        for b in batches if r % 2 == 0 else batches[::-1]:
            t0 = time.perf_counter()
            generate(run.model, args.n, seed=0, batch_size=b, knobs=knobs)
            rates[b].append(args.n / (time.perf_counter() - t0))
    base = statistics.median(rates[batches[0]])
    for b in batches:
        rate = statistics.median(rates[b])
        print(json.dumps({"run": args.run, "family": run.config.family, "sampler": args.set, "n": args.n,
                          "batch": b, "img_per_s": round(rate, 2), "ratio": round(rate / base, 3),
                          "threads": args.threads, "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
    main()
