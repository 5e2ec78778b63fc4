"""Guidance against requested-class accuracy and FD, for every entry of a finished comparison.

    python benchmarks/guidance.py reports/mnist --n 1000 --out benchmarks/results/guidance_mnist_cpu.jsonl
    python benchmarks/guidance.py --table benchmarks/results/guidance_mnist_cpu.jsonl   # docs/compare.md's table

Each family has one knob that trades diversity for fidelity: classifier-free guidance (`sampler.cfg_scale`)
for the diffusion, flow and autoregressive families and the VQ-VAE's prior, the latent temperature for the
VAE, the truncation of z for the GAN. For every entry of the report, the last stage's run (EMA weights) is
sampled with the entry's protocol sampler and each value of its knob (same seed, labels cycling through the
classes) and scored as the comparison scores it: FD in the dataset classifier's space and the share of
samples it reads as the requested class. One JSON line per (entry, value); the recommended guidance of
`genzoo.compare.ENTRIES` is read from this table (docs/compare.md says how).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KNOBS = {  # family of the generating stage -> (sampler knob, values; the first is the unguided model)
    "vae": ("temperature", (1.0, 0.8, 0.6)),
    "gan": ("truncation", (1.0, 0.8, 0.6)),
    "pixelcnn": ("cfg_scale", (1.0, 2.0, 3.0)),
    "transformer": ("cfg_scale", (1.0, 2.0, 3.0)),
    "ddpm": ("cfg_scale", (1.0, 2.0, 3.0, 4.0)),
    "ldm": ("cfg_scale", (1.0, 2.0, 3.0, 4.0)),
    "dit": ("cfg_scale", (1.0, 2.0, 3.0, 4.0)),
    "flow": ("cfg_scale", (1.0, 2.0, 3.0, 4.0)),
}


def table(path: str) -> str:
    """The markdown table of a file of this script's JSON lines: one row per entry, its knob's values in order
    of strength (a sampler other than the entry's first row's is named)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    out = ["| entry | knob | value: FD-lenet ↓ / requested class ↑ (n = 500) |", "|---|---|---|"]
    for entry in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == entry]
        sign = 1 if mine[0]["knob"] == "sampler.cfg_scale" else -1  # guidance grows with cfg_scale, not temperature
        base = dict(x.split("=") for x in mine[0]["sampler"])
        cells = []
        for r in sorted(mine, key=lambda r: sign * r["value"]):
            sampler = dict(x.split("=") for x in r["sampler"])
            note = "" if sampler == base else " (" + ", ".join(f"{k}={v}" for k, v in sampler.items()
                                                               if base.get(k) != v) + ")"
            cells.append(f"{r['value']:g}{note}: {r['fd']:.0f} / {100 * r['acc']:.0f}%")
        out.append(f"| {entry} | `{mine[0]['knob']}` | {', '.join(cells)} |")
    return "\n".join(out)


def main():
    if sys.argv[1:2] == ["--table"]:
        print(table(sys.argv[2]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("report", help="a `genzoo compare` report directory (its runs/ are used)")
    p.add_argument("--entries", help="comma-separated entries (default: every entry of the report)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--values", help="override every knob's values, e.g. 1,1.5,2")
    p.add_argument("--set", nargs="*", default=[], help="sampler items after the entry's own, e.g. steps=10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--out", help="also append the JSON lines to this file")
    a = p.parse_args()

    import torch

    from genzoo.compare import select_entries
    from genzoo.evaluation.harness import evaluate_run

    torch.manual_seed(a.seed)
    names = a.entries.split(",") if a.entries else None
    for name, stages in select_entries(names):
        last = stages[-1]
        run = Path(a.report) / "runs" / name / last.family
        if not (run / "checkpoint.pt").exists():
            continue
        knob, values = KNOBS[last.family]
        values = tuple(float(v) for v in a.values.split(",")) if a.values else values
        for value in values:
            t0 = time.perf_counter()
            res = evaluate_run(run, n=a.n, metrics=("fd", "acc"), seed=a.seed, batch_size=a.batch_size,
                               sampler_overrides=[*last.sampler, *a.set, f"{knob}={value:g}"])
            m = res["metrics"]
            row = {"entry": name, "family": last.family, "knob": f"sampler.{knob}", "value": value,
                   "sampler": [*last.sampler, *a.set], "n": a.n, "step": res["step"],
                   "fd": m["fd"]["value"], "acc": m["label_accuracy"]["value"], "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
