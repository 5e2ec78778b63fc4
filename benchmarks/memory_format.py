"""Our `ddpm` U-Net in contiguous (NCHW) and channels_last (NHWC) memory, side by side: training and DDIM images/s.

    python benchmarks/memory_format.py --size quick --threads 2

The trainer puts models in channels_last on CUDA only; this measures whether CPU should do the same. Both copies
are built from the same seed and alternate over --repeats rounds (the order flips every round); the JSON has
medians and the ratio channels_last / contiguous (> 1: channels_last is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from peers import IMAGE, SIZES, build_ours

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def build(size: str, fmt, batch: int):
    """peers.py's model of ours in memory format `fmt`, from seed 0: (train_step(), sample(n, steps))."""
    torch.manual_seed(0)
    ours = build_ours(size, "cpu", batch, memory_format=fmt)
    return ours.train_step, ours.sample


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="quick")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    models = {name: build(a.size, fmt, a.batch) for name, fmt in FORMATS.items()}
    for train_step, _ in models.values():
        train_step()  # warm-up: AdamW state, oneDNN primitives
    runs = {name: {"train_img_s": [], "ddim_img_s": []} for name in models}
    for r in range(a.repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            train_step, sample = models[name]
            t0 = time.perf_counter()
            for _ in range(a.train_steps):
                train_step()
            runs[name]["train_img_s"].append(a.train_steps * a.batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            sample(a.sample_batch, a.ddim_steps)
            runs[name]["ddim_img_s"].append(a.sample_batch / (time.perf_counter() - t0))
    med = {name: {k: statistics.median(v) for k, v in d.items()} for name, d in runs.items()}
    ratio = {k: med["channels_last"][k] / med["contiguous"][k] for k in ("train_img_s", "ddim_img_s")}
    print(json.dumps({"args": vars(a), "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "median": med, "ratio_channels_last_over_contiguous": ratio}, indent=1))


if __name__ == "__main__":
    main()
