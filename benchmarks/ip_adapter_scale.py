"""IP-Adapter's lambda, chosen on a gallery the main benchmark does not report: image-prompt fidelity, FD and the
prompt's digit at each lambda, with the prompts taken from the test images after the first `--offset` of the
harness's fixed permutation (benchmarks/ip_adapter.py reports on the first n; docs/adapters.md).

    python benchmarks/ip_adapter_scale.py IP_RUN [--scales 1,1.25] [--n 1000] [--offset 1000]
        [--knobs sampler.name=dpm++2m sampler.steps=20 sampler.cfg_scale=4]

Prints one JSON line per lambda: the share of samples whose own prompt ranks in the top 5 (and first) of the n
gallery images by the zoo CLIP's image similarity, the median rank, FD and the prompt's digit (domain classifier).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlnet import test_images  # noqa: E402  (the harness's fixed permutation of the test split)


def main() -> None:
    from genzoo.config import apply_overrides
    from genzoo.evaluation import control as C
    from genzoo.evaluation.harness import evaluate_images, generate
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished ip-adapter run")
    p.add_argument("--scales", default="1,1.25", help="comma-separated lambdas (sampler.ip_scale)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--offset", type=int, default=1000, help="skip this many test images (the main benchmark's)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--knobs", nargs="+", default=["sampler.name=dpm++2m", "sampler.steps=20", "sampler.cfg_scale=4"])
    a = p.parse_args()
    run = open_run(a.run)
    apply_overrides(run.config, a.knobs)
    knobs, dataset = vars(run.config.sampler), run.config.data.dataset
    images, labels = test_images(dataset, a.offset + a.n)
    gallery, labels = images[a.offset:], labels[a.offset:]  # (n, C, H, W) in [-1, 1], (n,)
    for s in [float(x) for x in a.scales.split(",")]:
        t0 = time.time()
        x, _, _ = generate(run.model, a.n, knobs=knobs | {"ip_scale": s}, seed=0, batch_size=a.batch_size,
                           labels=labels, image_prompt=gallery)
        f = C.image_prompt_fidelity(run.model.base.text_encoder, x.float() / 127.5 - 1, gallery)
        e = evaluate_images(x, dataset=dataset, metrics=("fd", "acc"), labels=labels)
        print(json.dumps({"run": str(a.run), "ip_scale": s, "offset": a.offset, "n": a.n, "sampler": dict(knobs),
                          "top5": round(f["value"], 4), "top1": round(f["top1"], 4), "median_rank": f["median_rank"],
                          "fd": round(e["fd"]["value"], 2), "acc": round(e["label_accuracy"]["value"], 4),
                          "sample_s": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
