"""Sampling images/s of the autoregressive families with and without their cache, side by side.

    python benchmarks/kv_cache.py --family transformer pixelcnn --preset quick --n 8 --repeats 2
    python benchmarks/kv_cache.py --run runs/prior-mnist            # a trained run (e.g. a VQ-VAE prior)

transformer: `kv_cache=True` runs one new token per step against stored keys / values; `False`
recomputes the whole prefix for every token. pixelcnn: `cache=True` computes each row of the vertical
stack once and only the current row of the horizontal stack per pixel; `False` runs the full network
for every sub-pixel. The variants alternate over --repeats rounds (these machines are noisy), and
each round also checks that both give the same samples for the same seed. Speed does not depend on
the weights, so without --run a freshly initialised model of the preset is timed. Prints one JSON
object with images/s per variant (median over rounds) and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from genzoo.evaluation.harness import dataset_shape
from genzoo.registry import FAMILIES, resolve_config
from genzoo.runs import open_run

CACHE_KNOB = {"transformer": "kv_cache", "pixelcnn": "cache"}


def fresh_model(family: str, preset: str, dataset: str, device: str):
    cfg = resolve_config(family, dataset=dataset, preset=preset)
    torch.manual_seed(0)
    shape = dataset_shape(dataset, cfg.data)
    model = FAMILIES[family].model(cfg.model, image_shape=shape, num_classes=10)
    return model.to(device).eval(), cfg


def time_sampling(model, n: int, knobs: dict, device: str) -> tuple[float, torch.Tensor]:
    labels = torch.arange(n, device=device) % model.num_classes if model.num_classes else None
    gen = torch.Generator(device).manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    x = model.sample(n, labels=labels, generator=gen, **knobs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), x


def bench(model, family: str, sampler, n: int, repeats: int, device: str) -> dict:
    knob = CACHE_KNOB[family]
    rates = {"cached": [], "uncached": []}
    identical = True
    for _ in range(repeats):
        samples = {}
        for name, on in (("cached", True), ("uncached", False)):
            rate, samples[name] = time_sampling(model, n, {**vars(sampler), knob: on}, device)
            rates[name].append(rate)
        identical &= torch.equal(samples["cached"], samples["uncached"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"family": family, "knob": knob, "img_per_s": med, "rounds": rates,
            "speedup": med["cached"] / med["uncached"], "identical_samples": identical,
            "sequence_steps": model.network_evaluations(), "image_shape": list(model.image_shape),
            "parameters": sum(p.numel() for p in model.parameters()), "sampler": vars(sampler)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", nargs="+", default=["transformer"], choices=sorted(CACHE_KNOB))
    p.add_argument("--run", help="time a trained run instead (its family and sampler settings)")
    p.add_argument("--preset", default="quick")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--n", type=int, default=8, help="images per sample() call")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    results = []
    if a.run:
        run = open_run(a.run, device=a.device)
        results.append(bench(run.model, run.config.family, run.config.sampler, a.n, a.repeats, a.device))
    else:
        for family in a.family:
            model, cfg = fresh_model(family, a.preset, a.dataset, a.device)
            results.append(bench(model, family, cfg.sampler, a.n, a.repeats, a.device))
    print(json.dumps({
        "benchmark": "kv_cache", "run": a.run, "preset": None if a.run else a.preset, "n": a.n, "repeats": a.repeats,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]], "results": results}, indent=2))


if __name__ == "__main__":
    main()
