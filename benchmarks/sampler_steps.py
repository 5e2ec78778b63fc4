"""Quality against sampling cost for every diffusion sampler on one trained model (the DDIM-table analogue).

    python benchmarks/sampler_steps.py runs/ddpm-mnist --n 1000 --steps 5,10,20,50 \
        --samplers ddim,ddpm,dpm++2m,heun --plot docs/ddpm-fd-vs-steps.png

For each (sampler, steps) it draws n samples from the EMA weights with the same seed, scores them with
the harness (FD with the dataset's classifier against the train split), and prints one JSON object with
FD, network evaluations per sample and sampling images/s. Rows are measured in one process, alternating
nothing: the timing column is indicative, the FD column is the result.
"""

from __future__ import annotations

import argparse
import json

import torch

from plots import save_lines


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", default="5,10,20,50")
    p.add_argument("--samplers", default="ddim,ddpm,dpm++2m,euler,heun")
    p.add_argument("--set", nargs="*", default=[], help="extra sampler.* overrides (e.g. sampler.cfg_scale=2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot")
    a = p.parse_args()

    from genzoo.config import apply_overrides
    from genzoo.evaluation.harness import evaluate_images, generate
    from genzoo.runs import open_run

    run = open_run(a.run)
    apply_overrides(run.config, a.set)
    rows = []
    for name in a.samplers.split(","):
        for steps in map(int, a.steps.split(",")):
            knobs = {**vars(run.config.sampler), "name": name, "steps": steps}
            images, labels, rate = generate(run.model, a.n, seed=a.seed, knobs=knobs)
            m = evaluate_images(images, dataset=run.config.data.dataset, metrics=("fd",), labels=labels,
                                data_cfg=run.config.data, seed=a.seed)
            rows.append({"sampler": name, "steps": steps, "nfe": run.model.network_evaluations(**knobs),
                         "fd": m["fd"]["value"], "sample_img_per_s": rate})
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "sampler_steps", "run": a.run, "step": run.step, "n": a.n,
              "metric": m["fd"]["protocol"]["metric"], "reference": m["fd"]["protocol"]["reference"],
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps(result))
    if a.plot:
        curves = [(name, [r["nfe"] for r in rows if r["sampler"] == name], [r["fd"] for r in rows if r["sampler"] == name])
                  for name in a.samplers.split(",")]
        save_lines(a.plot, curves, xlabel="network evaluations per sample", ylabel=result["metric"], logx=True,
                   title=f"{run.config.family} on {run.config.data.dataset}, step {run.step}, n={a.n}")


if __name__ == "__main__":
    main()
