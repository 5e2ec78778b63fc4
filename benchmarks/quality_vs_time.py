"""Quality against wall-clock training time, from the in-loop FD a run logs (train.eval_every).

    genzoo train gan --dataset mnist --preset quick --out runs/gan --set train.eval_every=250
    python benchmarks/quality_vs_time.py runs/gan [runs/vae ...] [--plot fd_vs_time.png]

Prints JSON with (step, seconds, FD) per logged evaluation for each run, and draws them on one plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plots import save_lines

from genzoo.evaluation.runlog import read_metrics


def curve(run: Path) -> dict:
    rows = read_metrics(run)
    config = json.loads((run / "config.json").read_text())
    points = [{"step": r["step"], "seconds": r["elapsed_s"], "fd": r["fd"]} for r in rows if "fd" in r]
    extractor = next((r["fd_extractor"] for r in rows if "fd" in r), None)
    eval_n = next((r["eval_n"] for r in rows if "fd" in r), None)
    return {"run": str(run), "family": config["family"], "dataset": config["data"]["dataset"],
            "metric": f"FD-{extractor}" if extractor else None, "n_generated": eval_n, "weights": "ema",
            "points": points}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", help="write a PNG of FD against training seconds")
    a = p.parse_args()
    curves = [curve(r) for r in a.runs]
    print(json.dumps({"benchmark": "quality_vs_time", "curves": curves}, indent=2))
    if a.plot:
        save_lines(a.plot, [(f"{c['family']} ({Path(c['run']).name})", [q["seconds"] for q in c["points"]],
                             [q["fd"] for q in c["points"]]) for c in curves],
                   xlabel="training seconds", ylabel=curves[0]["metric"] or "FD")


if __name__ == "__main__":
    main()
