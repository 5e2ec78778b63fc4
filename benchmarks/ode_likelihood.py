"""Test-set bits/dim of a flow or ddpm run from the probability-flow ODE (Hutchinson's trace estimator), and for
a ddpm run its variational bound beside it, on the same images. docs/flow.md, Likelihood.

    python benchmarks/ode_likelihood.py RUN_DIR [--n 1000] [--steps 20] [--probes 1] [--device cpu]

Prints one JSON object: the mean bits/dim over the first N test images, labelled as an estimate with its ODE
steps and probe vectors (8-bit bits/dim of the uniformly dequantised images, comparable to the bounds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from genzoo.errors import GenzooError
from genzoo.evaluation.harness import test_bits_per_dim
from genzoo.models.ddpm import DDPM
from genzoo.models.flow import RectifiedFlow
from genzoo.runs import open_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished flow or ddpm run (pixels; EMA weights)")
    p.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--steps", type=int, default=20, help="Heun steps of the ODE (default 20)")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probe vectors per image (default 1)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    try:
        run = open_run(a.run_dir, device=a.device)
        model, data = run.model, run.config.data
        if type(model) not in (RectifiedFlow, DDPM):
            raise GenzooError(f"{a.run_dir} is a {run.config.family} run; the ODE estimate is for flow and ddpm")
        knobs = {"steps": a.steps, "probes": a.probes, "generator": torch.Generator(a.device).manual_seed(0)}
        if isinstance(model, DDPM):
            knobs["estimator"] = "ode"
        t0 = time.perf_counter()
        ode = test_bits_per_dim(model, data, a.n, batch_size=a.batch_size, device=a.device, **knobs)
        seconds = time.perf_counter() - t0
        vlb = (test_bits_per_dim(model, data, a.n, batch_size=a.batch_size, device=a.device)
               if isinstance(model, DDPM) else None)
    except GenzooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    result = {"benchmark": "ode_likelihood", "run": a.run_dir, "family": run.config.family, "step": run.step,
              "dataset": data.dataset, "split": "test", "n": a.n, "weights": "ema",
              "bits_per_dim": {f"ode estimate ({a.steps} Heun steps, {a.probes} Hutchinson probe(s), "
                               "uniform dequantisation)": ode},
              "ode_seconds": round(seconds, 1)}
    if vlb is not None:
        result["bits_per_dim"][model.likelihood] = vlb
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
