"""Reflow's pairs (Liu et al. 2023, "Flow straight and fast"): (noise, sample) couplings drawn from a trained
flow run, written as an npz that a second round trains on (model.pairs). docs/flow.md, Reflow.

    python benchmarks/reflow.py RUN_DIR --out PAIRS.npz [--n 10000] [--set sampler.name=heun sampler.steps=25]
    genzoo train flow --preset quick --set model.pairs=PAIRS.npz --out RUN_DIR-reflow
    python benchmarks/reflow.py RUN_DIR --out PAIRS.npz --train RUN_DIR-reflow     # both in one command
    genzoo report RUN_DIR RUN_DIR-reflow --sampler-steps 1,2,5,10 --out REPORT     # FD against NFE, both rounds

The npz holds eps and x0 (float32, (N, C, H, W)) and, for a class-conditional run, labels (N,) cycling 0..K-1.
With --train the second round trains into that directory with the first round's own config (same network,
preset, batch and budget: train.steps or train.minutes) and model.pairs set, from scratch. Prints one JSON object:
what was drawn, with which sampler, and the command of the second round (or its training summary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from genzoo.config import apply_overrides
from genzoo.errors import GenzooError
from genzoo.models.flow import RectifiedFlow, reflow_pairs
from genzoo.runs import open_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished flow run (its EMA weights draw the pairs)")
    p.add_argument("--out", required=True, help="the pairs file, FILE.npz")
    p.add_argument("--n", type=int, default=10000, help="pairs to draw (default 10000)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="sampler knobs of the ODE solve (default: sampler.name=heun sampler.steps=25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", metavar="OUT_DIR", help="then train the second round into OUT_DIR with the first "
                                                      "round's config and model.pairs=PAIRS")
    a = p.parse_args()
    try:
        run = open_run(a.run_dir, device=a.device)
        if type(run.model) is not RectifiedFlow:
            raise GenzooError(f"{a.run_dir} is a {run.config.family} run; reflow draws from a pixel flow run")
        overrides = ["sampler.name=heun", "sampler.steps=25", "sampler.cfg_scale=1.0", *a.set]
        apply_overrides(run.config, [s if s.startswith("sampler.") else f"sampler.{s}" for s in overrides])
        knobs = vars(run.config.sampler)
        t0 = time.perf_counter()
        pairs = reflow_pairs(run.model, a.n, generator=torch.Generator(a.device).manual_seed(a.seed),
                             batch_size=a.batch_size, **knobs)
        tmp = a.out + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, **{k: v.numpy() for k, v in pairs.items()})
        os.replace(tmp, a.out)
        seconds = round(time.perf_counter() - t0, 1)
        second = second_round(a.run_dir, a.out, a.train) if a.train else None
    except GenzooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = {"benchmark": "reflow_pairs", "run": a.run_dir, "step": run.step, "n": a.n, "out": a.out,
           "sampler": dict(knobs), "nfe_per_pair": run.model.network_evaluations(**knobs), "seconds": seconds}
    if second is None:
        out["next"] = (f"genzoo train flow --preset quick --dataset {run.config.data.dataset} --set "
                       f"model.denoiser={run.config.model.denoiser} model.pairs={a.out} --out {a.run_dir.rstrip('/')}-reflow")
    else:
        out["second_round"] = second
        out["next"] = f"genzoo report {a.run_dir} {a.train} --sampler-steps 1,2,5,10 --out {a.train}-report"
    print(json.dumps(out, indent=2))


def second_round(first: str, pairs: str, out_dir: str) -> dict:
    """Train reflow's second round into out_dir: the first round's saved config with model.pairs, from scratch."""
    from pathlib import Path

    from genzoo.registry import load_config_json
    from genzoo.train.checkpoint import CONFIG
    from genzoo.train.trainer import train

    cfg = load_config_json((Path(first) / CONFIG).read_text())
    cfg.model.pairs = str(Path(pairs).resolve())
    summary = train(cfg, out_dir, resume=(Path(out_dir) / "checkpoint.pt").exists(), progress=True)
    return {k: summary[k] for k in ("step", "stop", "train_s", "images_seen") if k in summary} | {"run": out_dir}


if __name__ == "__main__":
    main()
