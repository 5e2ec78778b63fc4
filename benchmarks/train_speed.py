"""Training throughput of one family through the real trainer, for several override variants side by side.

    python benchmarks/train_speed.py vae --dataset mnist --preset quick --steps 200 \
        --variant base= --variant bf16=train.amp=bf16 --variant compiled=train.amp=bf16,train.compile=true

Variants alternate over --repeats rounds (these machines are noisy); prints one JSON object with
images/s per variant (median over rounds, steady state: the first logged interval is dropped) and
ratios to the first variant.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile

import torch

from genzoo.evaluation.runlog import read_metrics, train_images_per_s
from genzoo.registry import resolve_config
from genzoo.train.trainer import train


def run_once(family, dataset, preset, steps, overrides) -> float:
    with tempfile.TemporaryDirectory() as d:
        cfg = resolve_config(family, dataset=dataset, preset=preset,
                             overrides=[f"train.steps={steps}", f"train.log_every={max(1, steps // 5)}",
                                        "train.sample_every=0", f"train.ckpt_every={10 * steps}", *overrides])
        train(cfg, d, progress=False)
        return train_images_per_s(read_metrics(d))  # steady state: the warm-up / compile interval is left out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("family")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VAL,KEY=VAL")
    a = p.parse_args()
    variants = {}
    for v in a.variant or ["base="]:
        name, _, rest = v.partition("=")
        variants[name] = [s for s in rest.split(",") if s]
    rates = {name: [] for name in variants}
    for _ in range(a.repeats):
        for name, overrides in variants.items():
            rates[name].append(run_once(a.family, a.dataset, a.preset, a.steps, overrides))
    med = {name: statistics.median(r) for name, r in rates.items()}
    first = next(iter(med))
    print(json.dumps({
        "benchmark": "train_speed", "family": a.family, "dataset": a.dataset, "preset": a.preset,
        "steps": a.steps, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "img_per_s": med, "runs": rates, "ratio_to_" + first: {n: m / med[first] for n, m in med.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
